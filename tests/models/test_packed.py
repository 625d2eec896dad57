"""--pack-weights: linear layers laid out for the CPU (oneDNN-reordered, or stored transposed) compute what
nn.Linear computes and decode the same tokens; auto lays them out as timed fastest, once per machine."""

import pytest
import torch
from cli_runner import run_cli
from engine_helpers import ids, random_prompts, setup
from reference import load
from tiny import save_adapter

from proxytool.models import packed as layouts
from proxytool.models.packed import (
    AUTO_MIN_WEIGHTS,
    BlockedLinear,
    PackedLinear,
    TransposedLinear,
    pack_as_asked,
    pack_linears,
    packs_by_default,
)


def _packed_layers(model, kind=PackedLinear) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("kind", [PackedLinear, TransposedLinear, BlockedLinear])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 48), (3, 7, 48), (2, 0, 48)])
def test_laid_out_linear_computes_the_linear(kind, bias, shape):
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 96, bias=bias)
    x = torch.randn(*shape)
    with torch.inference_mode():
        expected, got = linear(x), kind(linear)(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_adapter_layers_stay_plain_and_the_model_computes_the_same(tiny_models, tmp_path):
    from peft import PeftModel

    adapter = save_adapter(tmp_path / "adapter", tiny_models["anti"], seed=5)
    plain = PeftModel.from_pretrained(load(tiny_models["anti"]), adapter).eval()
    packed = PeftModel.from_pretrained(load(tiny_models["anti"]), adapter).eval()
    count = pack_linears(packed)
    lora_layers = [m for m in packed.modules() if hasattr(m, "lora_A")]
    assert lora_layers and count > len(lora_layers)  # every base_layer, plus the output layer
    for layer in lora_layers:
        assert isinstance(layer.base_layer, PackedLinear)
        assert all(type(m) is torch.nn.Linear for m in layer.lora_A.values())
    tokens = torch.tensor([[5, 17, 3, 40, 2], [9, 9, 1, 33, 12]])
    with torch.inference_mode():
        for adapters in (["default", "__base__"], ["__base__", "default"]):  # PEFT's mixed-adapter batch
            expected = plain(input_ids=tokens, adapter_names=adapters).logits
            torch.testing.assert_close(packed(input_ids=tokens, adapter_names=adapters).logits, expected)


@pytest.mark.parametrize(
    "layout, kind", [("on", PackedLinear), ("transposed", TransposedLinear), ("blocked", BlockedLinear)]
)
def test_laid_out_models_decode_the_tokens_torch_kernels_decode(tiny_models, tmp_path, layout, kind):
    adapter = save_adapter(tmp_path / "adapter", tiny_models["anti"], seed=5)
    prompts = random_prompts(12, seed=4)
    packed = setup(tiny_models, experts=[str(adapter)], pack_weights=layout)
    plain = setup(tiny_models, experts=[str(adapter)], pack_weights="off")
    assert all(_packed_layers(s.model, kind) for s in packed.sources)
    assert not any(_packed_layers(s.model) for s in plain.sources)
    assert ids(packed, prompts, n=16) == ids(plain, prompts, n=16)
    merged = setup(tiny_models, experts=[str(adapter)], share_weights=False)  # inference only, one graph each
    assert not any(p.requires_grad for s in merged.sources for p in s.model.parameters())


def test_auto_packs_only_layers_large_enough_to_gain(tiny_models):
    rows = AUTO_MIN_WEIGHTS // 1024  # a layer of exactly AUTO_MIN_WEIGHTS weights, one a row short of it
    model = torch.nn.Sequential(torch.nn.Linear(1024, rows), torch.nn.Linear(1024, rows - 1), torch.nn.Linear(8, 8))
    assert pack_linears(model, min_weights=AUTO_MIN_WEIGHTS) == 1
    assert [type(m).__name__ for m in model] == ["PackedLinear", "Linear", "Linear"]
    tiny = setup(tiny_models)  # the default, auto: fp32 on the CPU, but every layer of the tiny model is small
    assert not _packed_layers(tiny.base.source.model)


def _timings(fastest: str, rows=("1", "2", "8")) -> dict:
    """Made-up timings {layout: {rows: ms}} where ``fastest`` wins at 1 and 2 rows and loses a little at 8."""
    ms = {layout: {"1": 10.0, "2": 20.0, "8": 40.0} for layout in layouts.LAYOUTS}
    ms[fastest] = {"1": 5.0, "2": 10.0, "8": 44.0}
    return {layout: {n: per_rows[n] for n in rows} for layout, per_rows in ms.items()}


@pytest.mark.parametrize("fastest", layouts.UNSIZED_LAYOUTS)
def test_auto_applies_the_layout_timed_fastest_and_times_once(tmp_path, monkeypatch, fastest):
    monkeypatch.setenv("PROXYTOOL_HOME", str(tmp_path))
    calls = []
    monkeypatch.setattr(
        layouts, "time_layouts", lambda same_shape, rows: calls.append((len(same_shape), rows)) or _timings(fastest)
    )
    kinds = {"on": PackedLinear, "blocked": BlockedLinear, "transposed": TransposedLinear, "off": torch.nn.Linear}
    for _ in range(2):  # the second model of the same shapes reads the cache
        model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 1024), torch.nn.Linear(8, 8))
        assert pack_as_asked(model, "auto", compiled=False) == fastest
        assert [type(m) for m in model] == [kinds[fastest]] * 2 + [torch.nn.Linear]
    assert calls == [(2, (1, 2, 8))]  # one timing, of the one large shape, over both its layers
    assert "threads | torch " in (tmp_path / "cache" / "linear_layouts.json").read_text()


def test_each_shape_gets_the_layout_timed_fastest_for_it(tmp_path, monkeypatch):
    """One model's weights of different shapes may each run fastest in another layout (measured: a Qwen
    0.5B's [4864, 896] transposed, [896, 4864] torch's own, one row, one thread on an AMD EPYC)."""
    monkeypatch.setenv("PROXYTOOL_HOME", str(tmp_path))
    fastest = {(1024, 512): "blocked", (512, 1024): "transposed", (1024, 1024): "off"}
    monkeypatch.setattr(
        layouts,
        "time_layouts",
        lambda same_shape, rows: _timings(fastest[_shape(same_shape[0])], [str(n) for n in rows]),
    )
    model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.Linear(1024, 512), torch.nn.Linear(1024, 1024))
    assert pack_as_asked(model, "auto", compiled=False, rows=2) == "blocked+transposed"
    assert [type(m) for m in model] == [BlockedLinear, TransposedLinear, torch.nn.Linear]
    cached = (tmp_path / "cache" / "linear_layouts.json").read_text()
    assert all(f"{out}x{inp}" in cached for out, inp in fastest)


def _shape(layer) -> tuple[int, int]:
    return layer.out_features, layer.in_features


def test_layout_timing_is_redone_when_the_cache_is_unreadable_or_the_shapes_differ(tmp_path, monkeypatch):
    monkeypatch.setenv("PROXYTOOL_HOME", str(tmp_path))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "linear_layouts.json").write_text("{not json")
    monkeypatch.setattr(layouts, "time_layouts", lambda same_shape, rows: _timings("transposed"))
    assert layouts.measured_layouts([torch.nn.Linear(1024, 1024)]) == {(1024, 1024): "transposed"}
    monkeypatch.setattr(layouts, "time_layouts", lambda same_shape, rows: _timings("on"))
    assert layouts.measured_layouts([torch.nn.Linear(1024, 1024)]) == {(1024, 1024): "transposed"}  # cached
    assert layouts.measured_layouts([torch.nn.Linear(1024, 2048)]) == {(2048, 1024): "on"}  # another shape: timed


def test_a_known_batch_gets_the_layout_fastest_at_its_rows_timed_once(tmp_path, monkeypatch):
    """decode and eval know their batch: auto picks the layout fastest at that many rows, timing only the
    row counts the cache lacks (here ``transposed`` wins at 1-2 rows, loses at 8)."""
    monkeypatch.setenv("PROXYTOOL_HOME", str(tmp_path))
    calls = []

    def timed(same_shape, rows):
        calls.append(rows)
        return _timings("transposed", [str(n) for n in rows])

    monkeypatch.setattr(layouts, "time_layouts", timed)
    large = [torch.nn.Linear(1024, 1024)]
    assert layouts.measured_layouts(large, rows=8) != {(1024, 1024): "transposed"}
    assert layouts.measured_layouts(large, rows=2) == {(1024, 1024): "transposed"}
    assert layouts.measured_layouts(large) == {(1024, 1024): "transposed"}  # no batch known: mean over 1, 2, 8
    assert layouts.measured_layouts(large, rows=8) != {(1024, 1024): "transposed"}
    assert calls == [(8,), (2,), (1,)]  # each row count timed once, then read from the cache


def _rows_asked(monkeypatch) -> list:
    asked = []
    monkeypatch.setattr(layouts, "AUTO_MIN_WEIGHTS", 1)  # the tiny model's layers count as large
    monkeypatch.setattr(
        layouts, "measured_layouts", lambda layers, rows=None: asked.append(rows) or {_shape(m): "off" for m in layers}
    )
    return asked


def test_layouts_are_timed_at_the_batch_times_each_models_row_groups(tiny_models, tmp_path, monkeypatch):
    """A LoRA pair shares one model: its anti-expert's and expert's rows run together, 2 per prompt."""
    asked = _rows_asked(monkeypatch)
    adapter = save_adapter(tmp_path / "adapter", tiny_models["anti"], seed=5)
    setup(tiny_models, experts=[str(adapter)], expected_batch=3)
    assert sorted(asked) == [3, 6]  # the base: 3 rows; the shared pair: 6
    asked.clear()
    setup(tiny_models, experts=[str(adapter)])  # serve and the Python API: the batch is not known
    assert asked == [None, None]


def test_decode_asks_for_the_layout_of_its_batch_size(tiny_models, tmp_path, monkeypatch):
    asked = _rows_asked(monkeypatch)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hello"}\n{"prompt": "two"}\n')
    args = ["--base", tiny_models["base"], "--prompts", prompts, "--max-new-tokens", "2", "--device", "cpu"]
    code, _, err = run_cli("decode", *args, "--output", tmp_path / "out.jsonl", "--batch-size", "4")
    assert code == 0, err
    assert asked == [4]


def test_layout_timings_are_real_per_layout_and_row_count(monkeypatch):
    """The timer runs each layout (each one computing the layers) over the shape's layers, up to
    COLD_BYTES of them (here two of the three), per layer call."""
    same_shape = [torch.nn.Linear(64, 32) for _ in range(3)]
    called = []
    for layer in same_shape:
        layer.register_forward_hook(lambda module, args, out: called.append(module))
    monkeypatch.setattr(layouts, "COLD_BYTES", 2 * 32 * 64 * 4)
    ms = layouts.time_layouts(same_shape, rows=(1, 4))
    assert set(ms) == set(layouts.LAYOUTS) and all(set(v) == {"1", "4"} and min(v.values()) > 0 for v in ms.values())
    assert {id(m) for m in called} == {id(m) for m in same_shape[:2]}  # "off" runs the layers themselves


def test_auto_leaves_other_dtypes_and_compiled_models_to_torch():
    cpu = torch.device("cpu")
    assert packs_by_default(cpu, torch.float32, compiled=False)
    assert not packs_by_default(cpu, torch.bfloat16, compiled=False)
    assert not packs_by_default(cpu, torch.float32, compiled=True)
    assert not packs_by_default(torch.device("meta"), torch.float32, compiled=False)


def test_bad_pack_weights_flags_fail_in_one_line_before_loading(tiny_models, tmp_path):
    out = tmp_path / "out.jsonl"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hello"}\n')
    common = ["decode", "--base", tiny_models["base"], "--prompts", prompts, "--output", out, "--device", "cpu"]
    code, _, err = run_cli(*common, "--pack-weights", "maybe")
    assert code == 2 and "--pack-weights must be one of auto, on, blocked, transposed, off" in err
    code, _, err = run_cli(*common, "--pack-weights", "on", "--compile", "on")
    assert code == 2 and "--pack-weights on and --compile on exclude each other" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_bench_compares_against_torch_kernels(tiny_models, tmp_path):
    """bench's reference loop and base-alone floor run as a user's own code would: unpacked."""
    from engine_helpers import proxy_setup

    from proxytool.decoding.speed import BenchConfig, _BaseAlone, _Proxy, _Reference

    adapter = save_adapter(tmp_path / "adapter", tiny_models["anti"], seed=5)
    config = BenchConfig(setup=proxy_setup(tiny_models["base"], experts=[str(adapter)], pack_weights="on"))
    assert not any(_packed_layers(m) for m in _Reference(config).models)
    assert not _packed_layers(_BaseAlone(config).model)
    assert all(_packed_layers(s.model) for s in _Proxy(config).models.sources)


def test_a_layout_this_cpu_cannot_run_is_a_one_line_error():
    from proxytool.errors import ProxyToolError

    model = torch.nn.Sequential(torch.nn.Linear(16, 16)).to(torch.bfloat16)
    try:
        with torch.inference_mode():
            BlockedLinear(model[0])(torch.randn(2, 16, dtype=torch.bfloat16))
    except RuntimeError:  # this CPU lacks oneDNN's bf16 kernels: loading says so in one line
        with pytest.raises(ProxyToolError, match="^--pack-weights blocked: "):
            pack_as_asked(model, "blocked", compiled=False)
    else:  # a CPU with them lays the weights out
        assert pack_as_asked(model, "blocked", compiled=False) == "blocked"


def test_blocked_is_chosen_only_for_a_known_batch_and_laid_out_for_its_rows(tmp_path, monkeypatch):
    """``blocked`` is laid out for one row count: the mean rule (no batch known) never picks it, even
    timed fastest; a known batch gets it blocked for that batch's rows."""
    monkeypatch.setenv("PROXYTOOL_HOME", str(tmp_path))
    monkeypatch.setattr(layouts, "time_layouts", lambda same_shape, rows: _timings("blocked", [str(n) for n in rows]))
    assert layouts.measured_layouts([torch.nn.Linear(1024, 1024)]) != {(1024, 1024): "blocked"}
    model = torch.nn.Sequential(torch.nn.Linear(1024, 1024))
    assert pack_as_asked(model, "auto", compiled=False, rows=2) == "blocked"
    assert isinstance(model[0], BlockedLinear) and model[0].rows == 2
