"""`proxytool decode` end to end: every flag, input forms, resume after kill -9, errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runner import run_cli
from engine_helpers import random_prompts
from tiny import build_tokenizer, save_model


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_jsonl(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def proxy_args(t):
    return ["--base", t["base"], "--expert", t["expert"], "--anti-expert", t["anti"], "--threads", "1"]


def test_decode_jsonl_with_every_flag(tiny_models, tmp_path):
    prompts = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "prompt": "Who leads the poll?"},
            {"id": "b", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]},
            {"prompt": "A sample of adults"},
        ],
    )
    out = tmp_path / "out.jsonl"
    code, _, err = run_cli(
        "decode",
        "--prompts",
        prompts,
        "--output",
        out,
        *proxy_args(tiny_models),
        "--alpha",
        "0.7",
        "--max-new-tokens",
        "6",
        "--temperature",
        "0.8",
        "--top-p",
        "0.9",
        "--top-k",
        "40",
        "--seed",
        "3",
        "--batch-size",
        "2",
        "--stop",
        "zzz",
        "--stop",
        "qqq",
        "--dtype",
        "float32",
        "--device",
        "cpu",
        "--quantize-base",
        "none",
        "--base-format",
        "raw",
        "--expert-format",
        "chat",
        "--anti-expert-format",
        "raw",
        "--no-share-weights",
        "--overlap",
        "on",
    )
    assert code == 0, err
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["a", "b", "3"]
    for row in rows:
        assert set(row) >= {"id", "prompt", "completion", "token_ids", "finish_reason"}
        assert row["finish_reason"] in {"stop", "length"} and 1 <= len(row["token_ids"]) <= 6
    assert rows[1]["prompt"][0]["role"] == "system"
    assert not Path(str(out) + ".part").exists()


def test_text_file_and_stdin_and_base_alone(tiny_models, tmp_path):
    text = tmp_path / "p.txt"
    text.write_text("Who leads the poll?\n\nHello there\n")
    out_file, out_stdin = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert (
        run_cli(
            "decode", "--prompts", text, "--output", out_file, "--base", tiny_models["base"], "--max-new-tokens", "5"
        )[0]
        == 0
    )
    assert (
        run_cli(
            "decode",
            "--prompts",
            "-",
            "--output",
            out_stdin,
            "--base",
            tiny_models["base"],
            "--max-new-tokens",
            "5",
            stdin=text.read_text(),
        )[0]
        == 0
    )
    rows = read_jsonl(out_file)
    assert [r["id"] for r in rows] == ["1", "3"]
    assert out_file.read_bytes() == out_stdin.read_bytes()


def test_resume_after_kill_9_gives_the_uninterrupted_bytes(tiny_models, tmp_path):
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [{"id": f"q{i}", "prompt": p} for i, p in enumerate(random_prompts(40, seed=11))]
    )
    args = [
        "--prompts",
        prompts,
        *proxy_args(tiny_models),
        "--max-new-tokens",
        "24",
        "--temperature",
        "0.7",
        "--seed",
        "5",
        "--batch-size",
        "2",
    ]
    whole = tmp_path / "whole.jsonl"
    assert run_cli("decode", "--output", whole, *args)[0] == 0

    resumed = tmp_path / "resumed.jsonl"
    part = Path(str(resumed) + ".part")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxytool", "decode", "--output", str(resumed), *map(str, args)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and (not part.exists() or part.read_text().count("\n") < 4):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert part.exists() and not resumed.exists()
    with open(part, "a") as f:  # as if killed in the middle of a write
        f.write('{"id": "q9", "prompt": "torn')
    code, _, err = run_cli("decode", "--output", resumed, *args)
    assert code == 0, err
    assert resumed.read_bytes() == whole.read_bytes()
    assert "already done" in err


def test_rerun_of_a_finished_output_changes_nothing(tiny_models, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Hello"}, {"prompt": "Who leads?"}])
    out = tmp_path / "out.jsonl"
    args = ["decode", "--prompts", prompts, "--output", out, "--base", tiny_models["base"], "--max-new-tokens", "4"]
    assert run_cli(*args)[0] == 0
    first = out.read_bytes()
    code, _, err = run_cli(*args)
    assert code == 0 and out.read_bytes() == first and "0 decoded now" in err


@pytest.fixture
def prompts_file(tmp_path):
    return write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Hello"}])


def expect_error(tmp_path, *args, contains: str, stdin=None):
    code, out, err = run_cli(*args, stdin=stdin)
    assert code == 2, (out, err)
    assert contains in err, err
    assert "Traceback" not in err and err.count("\n") <= 2, err
    assert not list(tmp_path.glob("out.jsonl*"))
    return err


@pytest.mark.parametrize(
    "extra, contains",
    [
        (["--temperature", "-1"], "--temperature"),
        (["--top-p", "0"], "--top-p"),
        (["--top-k", "-3"], "--top-k"),
        (["--batch-size", "0"], "--batch-size"),
        (["--dtype", "float8"], "--dtype"),
        (["--quantize-base", "3bit"], "--quantize"),
        (["--base-format", "fancy"], "--base-format"),
        (["--threads", "0"], "--threads"),
        (["--alpha", "1", "--alpha", "2"], "--alpha"),
    ],
)
def test_bad_flag_values(tiny_models, tmp_path, prompts_file, extra, contains):
    expect_error(
        tmp_path,
        "decode",
        "--prompts",
        prompts_file,
        "--output",
        tmp_path / "out.jsonl",
        "--base",
        tiny_models["base"],
        "--expert",
        tiny_models["expert"],
        "--anti-expert",
        tiny_models["anti"],
        *extra,
        contains=contains,
    )


def test_unknown_model_suggests_close_names(tmp_path, prompts_file):
    err = expect_error(
        tmp_path,
        "decode",
        "--prompts",
        prompts_file,
        "--output",
        tmp_path / "out.jsonl",
        "--base",
        "gpt2-larg",
        contains="unknown model 'gpt2-larg'",
    )
    assert "gpt2-large" in err


def test_hub_id_offline_is_a_clear_error(tmp_path, prompts_file, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expect_error(
        tmp_path,
        "decode",
        "--prompts",
        prompts_file,
        "--output",
        tmp_path / "out.jsonl",
        "--base",
        "nobody-here/no-such-model",
        contains="cannot load model 'nobody-here/no-such-model'",
    )


def test_expert_without_recorded_base_needs_an_anti_expert(tiny_models, tmp_path, prompts_file):
    expect_error(
        tmp_path,
        "decode",
        "--prompts",
        prompts_file,
        "--output",
        tmp_path / "out.jsonl",
        "--base",
        tiny_models["base"],
        "--expert",
        tiny_models["expert"],
        contains="--anti-expert",
    )


def test_incompatible_tokenizers_fail_before_loading_weights(tiny_models, tmp_path, prompts_file):
    other = save_model(tmp_path / "other", seed=1)
    build_tokenizer(vocab_size=300).save_pretrained(other)
    (other / "model.safetensors").write_bytes(b"not weights")  # proves the weights are never read
    expect_error(
        tmp_path,
        "decode",
        "--prompts",
        prompts_file,
        "--output",
        tmp_path / "out.jsonl",
        "--base",
        tiny_models["base"],
        "--expert",
        other,
        "--anti-expert",
        tiny_models["anti"],
        contains="the experts and anti-experts must share one tokenizer",  # only the base may differ (cross-tokenizer)
    )


@pytest.mark.parametrize(
    "content, contains",
    [
        ('{"prompt": "ok"}\n{"prompt": "broken"\n', "p.jsonl:2: invalid JSON"),
        ('{"prompt": 3}\n', "p.jsonl:1: field 'prompt' must be a string"),
        ('{"text": "x"}\n', "p.jsonl:1: field 'prompt' is missing"),
        ('{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n', "p.jsonl:2: field 'id' duplicates"),
        ("\n", "no prompts"),
    ],
)
def test_malformed_prompts_name_file_and_line(tiny_models, tmp_path, content, contains):
    bad = tmp_path / "p.jsonl"
    bad.write_text(content)
    expect_error(
        tmp_path,
        "decode",
        "--prompts",
        bad,
        "--output",
        tmp_path / "out.jsonl",
        "--base",
        tiny_models["base"],
        contains=contains,
    )


def test_missing_prompts_and_unwritable_output(tiny_models, tmp_path, prompts_file):
    expect_error(
        tmp_path,
        "decode",
        "--prompts",
        tmp_path / "nope.jsonl",
        "--output",
        tmp_path / "out.jsonl",
        "--base",
        tiny_models["base"],
        contains="not found",
    )
    expect_error(
        tmp_path,
        "decode",
        "--prompts",
        prompts_file,
        "--output",
        tmp_path / "no" / "dir" / "out.jsonl",
        "--base",
        tiny_models["base"],
        contains="does not exist",
    )


def test_debug_shows_the_traceback(tmp_path, prompts_file):
    with pytest.raises(Exception, match="unknown model"):
        run_cli("--debug", "decode", "--prompts", prompts_file, "--output", tmp_path / "o.jsonl", "--base", "zzz")
