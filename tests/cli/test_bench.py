"""The benchmark runs end to end on tiny models (figures are not asserted; tokens are)."""

import json

from cli_runner import run_cli
from tiny import save_adapter


def test_bench_reports_every_mode_the_ratios_and_equal_tokens(tiny_models, tmp_path):
    adapter = save_adapter(tmp_path / "adapter", tiny_models["anti"], seed=1)
    out = tmp_path / "bench.json"
    code, stdout, err = run_cli(
        "bench",
        "--base",
        tiny_models["base"],
        "--expert",
        adapter,
        "--alpha",
        "0.5",
        "--batch-sizes",
        "1,2",
        "--modes",
        "base,proxy,reference",
        "--new-tokens",
        "4",
        "--prompt-tokens",
        "8",
        "--repeats",
        "1",
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "--quantize-base",
        "none",
        "--share-weights",
        "--overlap",
        "on",
        "--threads",
        "1",
        "--output",
        out,
    )
    assert code == 0, err
    report = json.loads(out.read_text())
    assert {(r["mode"], r["batch"]) for r in report["results"]} == {
        (m, b) for m in ("base", "proxy", "reference") for b in (1, 2)
    }
    assert all(r["tokens_per_s"] > 0 and r["peak_rss_gb"] > 0 for r in report["results"])
    assert {"proxy_vs_base", "proxy_vs_reference"} <= set(report["ratios"][0])
    assert "proxy/base" in stdout and "proxy/reference" in stdout
    # the paper's loop (three separate models, the adapter merged) and proxytool choose the same tokens
    for row in report["agreement"]:
        assert row["proxy_vs_reference"] == [row["batch"], row["batch"]]
    assert all(len(r["tokens"]) == r["batch"] and len(r["tokens"][0]) == 4 for r in report["results"])
    assert report["machine"]["cores"] >= 1


def test_bench_rejects_bad_modes(tiny_models):
    code, _, err = run_cli(
        "bench",
        "--base",
        tiny_models["base"],
        "--expert",
        tiny_models["expert"],
        "--anti-expert",
        tiny_models["anti"],
        "--modes",
        "fast",
    )
    assert code == 2 and "--modes" in err


def test_bench_keeps_the_cases_it_measured_when_a_later_one_fails(tiny_models, tmp_path, monkeypatch):
    from proxytool.decoding import speed
    from proxytool.errors import ProxyToolError

    def child(config, mode, batch, loader):
        if mode == "proxy":
            raise ProxyToolError("benchmark of proxy at batch 1 failed: CUDA out of memory")
        return {"mode": mode, "batch": batch, "tokens_per_s": 10.0, "tokens": [[1, 2]]}

    monkeypatch.setattr(speed, "_run_child", child)
    out = tmp_path / "bench.json"
    code, _, err = run_cli(
        "bench", "--base", tiny_models["base"], "--expert", tiny_models["expert"], "--anti-expert",
        tiny_models["anti"], "--modes", "base,proxy", "--batch-sizes", "1", "--output", out,
    )  # fmt: skip
    assert code != 0 and "CUDA out of memory" in err
    assert [r["mode"] for r in json.loads(out.read_text())["results"]] == ["base"]


def test_bench_rounds_alternate_the_modes_and_merge_by_mean_time(tiny_models, tmp_path, monkeypatch):
    """--rounds: A B, B A, A B per batch size, each mode's runs merged by the mean decode time, so a
    machine that slows down over the run slows both modes alike."""
    from proxytool.decoding import speed

    order = []

    def child(config, mode, batch, loader):
        order.append(mode)
        slower = len(order)  # the machine slows down run by run
        decode = (2.0 if mode == "base" else 1.0) * slower
        return {"mode": mode, "batch": batch, "new_tokens": 5, "ttft_s": 0.5, "total_s": 0.5 + decode,
                "tokens_per_s": 4 / decode, "ms_per_step": 1000 * decode / 4, "peak_rss_gb": slower,
                "cuda_max_allocated_gb": None, "prompt_tokens": 42, "tokens": [[1, 2]]}  # fmt: skip

    monkeypatch.setattr(speed, "_run_child", child)
    out = tmp_path / "bench.json"
    code, _, err = run_cli(
        "bench", "--base", tiny_models["base"], "--expert", tiny_models["expert"], "--anti-expert",
        tiny_models["anti"], "--modes", "base,proxy", "--batch-sizes", "1", "--rounds", "2", "--output", out,
    )  # fmt: skip
    assert code == 0, err
    assert order == ["base", "proxy", "proxy", "base"]
    base, proxy = json.loads(out.read_text())["results"]
    assert base["rounds_ms_per_step"] == [500.0, 2000.0] and proxy["rounds_ms_per_step"] == [500.0, 750.0]
    assert base["ms_per_step"] == 1250.0 and proxy["ms_per_step"] == 625.0  # 2x apart, as every run was
    assert proxy["tokens_per_s"] / base["tokens_per_s"] == 2.0 and base["peak_rss_gb"] == 4
    assert base["rounds_same_tokens"] and proxy["rounds_same_tokens"]
    code, _, err = run_cli("bench", "--base", tiny_models["base"], "--expert", tiny_models["expert"], "--rounds", "0")
    assert code == 2 and "--rounds" in err
