"""bitsandbytes NF4 / int8 base on CPU (current bitsandbytes runs there; slow, so only a tiny model)."""

import json

import pytest
from cli_runner import run_cli
from tiny import save_model

bnb = pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.bnb


@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_quantized_base_decodes_and_steers(tiny_models, tmp_path, mode):
    base = save_model(tmp_path / "b128", seed=1, hidden=128)  # bnb's CPU kernels need 64-aligned widths
    prompts = tmp_path / "p.txt"
    prompts.write_text("Who leads the poll?\nHello there\n")
    out = tmp_path / "out.jsonl"
    code, _, err = run_cli(
        "decode",
        "--prompts",
        prompts,
        "--output",
        out,
        "--base",
        base,
        "--expert",
        tiny_models["expert"],
        "--anti-expert",
        tiny_models["anti"],
        "--quantize-base",
        mode,
        "--max-new-tokens",
        "4",
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(len(r["token_ids"]) == 4 for r in rows)


def test_quantized_base_loads_through_bitsandbytes(tmp_path):
    from proxytool.models.loading import QuantArgs, load_model
    from proxytool.models.registry import resolve

    model = load_model(resolve(str(save_model(tmp_path / "b", hidden=128))), device="cpu", quant=QuantArgs("4bit"))
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())
