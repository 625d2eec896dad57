"""Merging: same logits as adapter-on-base, metadata carried over, atomic and idempotent."""

import json

import pytest
import torch
import typer
from tiny import CORPUS
from typer.testing import CliRunner

from proxytool.cli import train as train_cli
from proxytool.errors import ProxyToolError
from proxytool.models.checkpoint import read_metadata
from proxytool.models.loading import load_model
from proxytool.models.registry import resolve
from proxytool.training.config import TrainConfig
from proxytool.training.merge import merge
from proxytool.training.train import train


@pytest.fixture(scope="module")
def adapter(tiny_models, tmp_path_factory):
    """A tiny adapter trained hard enough that it visibly changes the logits."""
    root = tmp_path_factory.mktemp("merge")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in CORPUS))
    config = TrainConfig(
        model=str(tiny_models["base"]),
        data=str(data),
        output=str(root / "expert"),
        max_steps=3,
        lr=3e-2,
        lora_dropout=0.0,
        threads=1,
        save_steps=100,
    )
    return train(config).output


def logits(spec_name, ids):
    with torch.no_grad():
        return load_model(resolve(str(spec_name))).eval()(input_ids=ids).logits


def test_merged_logits_equal_adapter_on_base(adapter, tiny_models, tmp_path):
    result = merge(adapter, tmp_path / "merged")
    assert not result.skipped and result.dtype == "float32"
    ids = torch.tensor([[5, 17, 42, 99, 7, 64, 13, 200]])
    expected = logits(adapter, ids)
    assert (expected - logits(tiny_models["base"], ids)).abs().max() > 1e-2  # the adapter matters
    torch.testing.assert_close(logits(result.output, ids), expected, atol=1e-4, rtol=0)


def test_merged_folder_keeps_its_origin(adapter, tiny_models, tmp_path):
    output = merge(adapter, tmp_path / "merged").output
    assert sorted(p.name for p in output.glob("*.safetensors")) == ["model.safetensors"]
    assert (output / "tokenizer.json").is_file() and (output / "chat_template.jinja").is_file()
    meta, trained = read_metadata(output), read_metadata(adapter)
    assert meta["kind"] == "merged" and meta["base"] == trained["base"]
    assert meta["prompt_format"] == trained["prompt_format"]
    assert meta["merge"]["adapter_hash"] and meta["merge"]["dtype"] == "float32"
    spec = resolve(str(output))
    assert spec.kind == "hf" and spec.base.source == str(tiny_models["base"].resolve())  # implies its anti-expert
    assert not list(tmp_path.glob(".*.tmp"))  # the temp folder was renamed into place


def test_merge_is_idempotent(adapter, tmp_path):
    output = merge(adapter, tmp_path / "merged").output
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in output.iterdir()}
    again = merge(adapter, output)
    assert again.skipped
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in output.iterdir()} == before
    other = merge(adapter, tmp_path / "again")
    assert (other.output / "model.safetensors").read_bytes() == (output / "model.safetensors").read_bytes()


def test_changed_dtype_replaces_the_merge(adapter, tmp_path):
    output = merge(adapter, tmp_path / "merged").output
    result = merge(adapter, output, dtype="bfloat16")
    assert not result.skipped and read_metadata(output)["merge"]["dtype"] == "bfloat16"
    assert json.loads((output / "config.json").read_text())["dtype"] == "bfloat16"


def test_merge_errors(adapter, tiny_models, tmp_path):
    with pytest.raises(ProxyToolError, match="not a LoRA adapter"):
        merge(tiny_models["base"])
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    with pytest.raises(ProxyToolError, match="is not a merged proxytool checkpoint"):
        merge(adapter, occupied)
    with pytest.raises(ProxyToolError, match="--dtype must be one of"):
        merge(adapter, tmp_path / "x", dtype="int3")


def test_merge_cli_default_output(adapter):
    app = typer.Typer()
    train_cli.register(app)
    result = CliRunner().invoke(app, ["merge", str(adapter), "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert "written" in result.output
    assert (adapter.parent / "expert-merged" / "model.safetensors").is_file()
    assert "already up to date" in CliRunner().invoke(app, ["merge", str(adapter)]).output
