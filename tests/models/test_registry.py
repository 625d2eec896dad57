"""Name resolution, user entries, checkpoints that record their base, concurrent writes."""

import json
import subprocess
import sys

import pytest
from cli_runner import run_cli

from proxytool.errors import ProxyToolError
from proxytool.models.checkpoint import write_metadata
from proxytool.models.registry import (
    add_entry,
    registry_file,
    remove_entry,
    resolve,
    user_entries,
)


def test_builtin_aliases_and_hub_ids():
    chat = resolve("llama-2-13b-chat")
    assert chat.source == "meta-llama/Llama-2-13b-chat-hf" and chat.prompt_format == "chat"
    assert chat.base.source == "meta-llama/Llama-2-13b-hf" and chat.base.prompt_format == "raw"
    assert resolve("distilgpt2").source == "distilbert/distilgpt2"
    assert resolve("qwen2.5-1.5b-instruct").source == "Qwen/Qwen2.5-1.5B-Instruct"
    assert resolve("smollm2-135m").source == "HuggingFaceTB/SmolLM2-135M"
    hub = resolve("someone/some-model")
    assert hub.kind == "hf" and hub.source == "someone/some-model"


def test_unknown_names_suggest_close_ones():
    with pytest.raises(ProxyToolError, match="did you mean gpt2-large"):
        resolve("gpt2-lrge")


def test_local_folders_adapters_and_gguf(tiny_models, tmp_path):
    assert resolve(str(tiny_models["base"])).kind == "hf"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve(str(gguf)).kind == "gguf"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_models["anti"])}))
    spec = resolve(str(adapter))
    assert spec.kind == "adapter" and spec.base.source == str(tiny_models["anti"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProxyToolError, match="no config.json"):
        resolve(str(tmp_path / "empty"))
    assert resolve(str(tmp_path)).kind == "gguf"  # a folder holding one GGUF file


def test_checkpoint_metadata_records_the_base(tiny_models, tmp_path):
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    write_metadata(
        merged,
        {
            "format": 1,
            "kind": "merged",
            "prompt_format": "chat",
            "base": {"name": "anti", "source": str(tiny_models["anti"])},
        },
    )
    spec = resolve(str(merged))
    assert spec.kind == "hf" and spec.prompt_format == "chat"
    assert spec.base.source == str(tiny_models["anti"])
    (merged / "proxytool.json").write_text('{"base": 3}')
    with pytest.raises(ProxyToolError, match="base.source"):
        resolve(str(merged))


def test_user_entries_add_show_remove(tiny_models, proxytool_home):
    add_entry("my-base", str(tiny_models["base"]), prompt_format="chat", description="tiny")
    assert registry_file().parent == proxytool_home
    spec = resolve("my-base")
    assert spec.source == str(tiny_models["base"]) and spec.prompt_format == "chat"
    remove_entry("my-base")
    assert "my-base" not in user_entries()
    with pytest.raises(ProxyToolError, match="no user model named 'gpt2'.*built-in"):
        remove_entry("gpt2")
    with pytest.raises(ProxyToolError, match="prompt_format"):
        add_entry("bad", "x/y", prompt_format="fancy")


def test_models_cli(tiny_models):
    assert (
        run_cli(
            "models",
            "add",
            "tb",
            tiny_models["base"],
            "--prompt-format",
            "raw",
            "--base",
            tiny_models["anti"],
            "--dtype",
            "float32",
            "--quantization",
            "none",
            "--revision",
            "main",
            "--description",
            "tiny base",
        )[0]
        == 0
    )
    code, out, _ = run_cli("models", "list", "--user")
    assert code == 0 and "tb" in out
    code, out, _ = run_cli("models", "show", "tb")
    shown = json.loads(out)
    assert shown["base"]["source"] == str(tiny_models["anti"]) and shown["dtype"] == "float32"
    assert "gpt2-large" in run_cli("models", "list")[1]
    assert run_cli("models", "remove", "tb")[0] == 0
    code, _, err = run_cli("models", "show", "tb")
    assert code == 2 and "unknown model 'tb'" in err


def test_broken_registry_file_is_a_clear_error(proxytool_home):
    proxytool_home.mkdir(parents=True)
    (proxytool_home / "models.toml").write_text('[models.x]\nsource = "a/b"\ncolour = "red"\n')
    with pytest.raises(ProxyToolError, match="unknown key 'colour'"):
        resolve("x")
    (proxytool_home / "models.toml").write_text("[models\n")
    with pytest.raises(ProxyToolError, match="invalid TOML"):
        resolve("x")


def test_concurrent_writers_lose_no_entry(proxytool_home):
    code = (
        "import sys; from proxytool.models.registry import add_entry\n"
        "for i in range(15): add_entry(f'{sys.argv[1]}-{i}', f'org/{sys.argv[1]}-{i}')"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, name]) for name in ("a", "b", "c")]
    assert all(p.wait() == 0 for p in procs)
    assert len(user_entries()) == 45
