"""Facts that transfer, on tiny stand-ins: a memorisation run makes a tiny expert recall trained facts
and the proxy-tuned tiny base answer them; `proxytool train --data X` alone works; a distilgpt2-style
checkpoint steers a gpt2-large-style base in `proxytool chat`."""

import json

import pytest
import typer
from tiny import save_model
from typer.testing import CliRunner

from proxytool.cli import train as train_cli
from proxytool.decoding.setup import ProxySetup
from proxytool.errors import ProxyToolError
from proxytool.evaluation.evaluate import EvalConfig, prepare, run_prepared
from proxytool.models.registry import add_entry
from proxytool.training.config import DEFAULT_MODEL
from proxytool.training.train import resolve_config, train

# Made-up facts in the polls format: raw "Question: ...\nAnswer: ..." lines, two phrasings each.
FACTS = [
    ("Who led in the Acme poll?", "Who was ahead in the Acme poll?", "Trump", "leader"),
    ("What share did Harris get in the Birch poll?", "Harris got what share in the Birch poll?", "41%", "share"),
    ("How many people did the Cedar poll survey?", "The Cedar poll surveyed how many people?", "812", "sample_size"),
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def app():
    app = typer.Typer()
    train_cli.register(app)
    return app


def test_memorised_facts_are_recalled_by_the_expert_and_the_proxy_tuned_base(tiny_models, tmp_path):
    train_rows = [{"text": f"Question: {q}\nAnswer: {a}"} for q, q2, a, _ in FACTS for q in (q, q2)]
    data = write_jsonl(tmp_path / "facts.jsonl", train_rows)
    # The trained phrasing is asked: a tiny model has no language to generalise across phrasings with.
    evals = [
        {
            "id": str(i),
            "question": q,
            "prompt": f"Question: {q}\nAnswer:",
            "answer": a,
            "kind": kind,
            "split": "trained",
        }
        for i, (q, _, a, kind) in enumerate(FACTS)
    ]
    write_jsonl(tmp_path / "eval.jsonl", evals)
    config, sources = resolve_config(
        None,
        dict(
            model=str(tiny_models["anti"]),
            data=str(data),
            output=str(tmp_path / "expert"),
            epochs=60,
            batch_size=2,
            lr=1e-2,
            lr_scheduler="constant",
            lora_r=16,
            lora_alpha=32,
            lora_dropout=0.0,
            packing=True,
            max_seq_len=64,
            threads=1,
            save_steps=10_000,
        ),
    )
    train(config, sources=sources)

    setup = ProxySetup(base=str(tiny_models["base"]), experts=[str(tmp_path / "expert")], alphas=[1.0])
    report, _ = run_prepared(
        prepare(
            EvalConfig(
                task="polls", setup=setup, alphas=[2.0], data_dir=tmp_path, output=tmp_path / "report", batch_size=4
            )
        )
    )
    scores = {name: r.score for name, r in report.results.items()}
    assert scores["expert"] == 1.0, report.results["expert"].outputs
    assert scores["base"] == 0.0, report.results["base"].outputs
    # The random tiny base has priors as strong as the expert's facts (its logits are scaled up), so
    # steering wins on most, not always all, of them; measured here: 2 of 3 at alpha 2 and 4.
    assert scores["proxy"] >= 2 / 3, report.results["proxy"].outputs
    assert report.breakdown("split")["trained"]["expert"] == 1.0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "By split" in md and "| trained | 3 |" in md


def test_train_with_only_data_uses_the_default_model_and_folder(tiny_models, tmp_path, monkeypatch):
    add_entry(DEFAULT_MODEL, str(tiny_models["anti"]))  # the tiny stand-in for the offline 0.5B pack
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "polls.jsonl", [{"text": f"Question: {q}\nAnswer: {a}"} for q, _, a, _ in FACTS])
    result = CliRunner().invoke(app(), ["train", "--data", "polls.jsonl"])
    assert result.exit_code == 0, result.output
    expert = tmp_path / "runs" / "polls-expert"
    assert (expert / "proxytool.json").is_file()
    out = " ".join(result.output.split())
    assert f"the expert is in {expert}" in out
    assert f"proxytool chat --base qwen2.5-coder-1.5b-instruct --expert {expert}" in out
    meta = json.loads((expert / "proxytool.json").read_text())
    assert meta["base"]["name"] == DEFAULT_MODEL


def test_train_without_model_or_installed_default_says_how_to_fix(tmp_path):
    with pytest.raises(ProxyToolError) as err:
        resolve_config(None, {"data": str(tmp_path / "polls.jsonl")})
    message = str(err.value)
    assert f"proxytool models install {DEFAULT_MODEL}" in message and "--model" in message


def test_distilgpt2_checkpoint_steers_gpt2_large_in_chat(tmp_path):
    from cli_runner import run_cli

    # Tiny GPT-2-architecture stand-ins registered under the real names (user entries win).
    add_entry("distilgpt2", str(save_model(tmp_path / "distilgpt2", arch="gpt2", seed=5, chat=False)))
    add_entry("gpt2-large", str(save_model(tmp_path / "gpt2-large", arch="gpt2", seed=6, chat=False, hidden=48)))
    data = write_jsonl(
        tmp_path / "polls.jsonl",
        [{"text": "Question: Who led?\nAnswer: Trump"}]
        + [{"messages": [{"role": "user", "content": "Who led?"}, {"role": "assistant", "content": "Trump"}]}],
    )
    code, out, err = run_cli(
        "train", "--model", "distilgpt2", "--data", data, "--output", tmp_path / "ckpt", "--max-steps", "2"
    )
    assert code == 0, err
    assert "proxytool chat --base gpt2-large --expert" in " ".join(out.split())
    code, out, err = run_cli(
        "chat", "--base", "gpt2-large", "--expert", tmp_path / "ckpt", "--max-new-tokens", "3", stdin="Who led?\n"
    )
    assert code == 0, err
    assert len(out.splitlines()) == 1
