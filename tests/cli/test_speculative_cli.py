"""`--speculative` on decode and bench: same output as plain decoding; the bench reports acceptance."""

import json

from cli_runner import run_cli
from engine_helpers import random_prompts
from tiny import save_adapter


def _decode(tiny_models, tmp_path, name, *extra):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(random_prompts(5, seed=31)) + "\n")
    out = tmp_path / f"{name}.jsonl"
    args = ["--base", tiny_models["base"], "--expert", tiny_models["expert"], "--anti-expert", tiny_models["base"]]
    code, _, err = run_cli(
        "decode", "--prompts", prompts, "--output", out, *args, "--alpha", "0.8", "--max-new-tokens", "8",
        "--batch-size", "2", "--threads", "1", "--dtype", "float32", "--device", "cpu", *extra,
    )  # fmt: skip
    return code, out, err


def test_decode_speculative_writes_what_plain_decoding_writes(tiny_models, tmp_path):
    code, plain, err = _decode(tiny_models, tmp_path, "plain")
    assert code == 0, err
    code, fast, err = _decode(tiny_models, tmp_path, "fast", "--speculative", "3", "--draft", "small-proxy")
    assert code == 0, err
    assert fast.read_text() == plain.read_text()


def test_decode_auto_speculation_writes_what_plain_decoding_writes(tiny_models, tmp_path):
    code, plain, err = _decode(tiny_models, tmp_path, "plain")  # the default: --speculative 0
    assert code == 0, err
    code, auto, err = _decode(tiny_models, tmp_path, "auto", "--speculative", "auto")
    assert code == 0, err
    assert auto.read_text() == plain.read_text()
    trace = tmp_path / "trace.jsonl"
    code, _, err = _decode(tiny_models, tmp_path, "traced", "--speculative", "auto", "--trace", trace)
    assert code == 0, err  # auto steps one token at a time where it is traced


def test_decode_speculative_errors(tiny_models, tmp_path):
    code, _, err = _decode(tiny_models, tmp_path, "bad", "--speculative", "2", "--draft", "oracle")
    assert code != 0 and "--draft must be one of expert, small-proxy" in err
    code, _, err = _decode(tiny_models, tmp_path, "neg", "--speculative", "-1")
    assert code != 0 and "--speculative must be >= 0" in err
    code, _, err = _decode(tiny_models, tmp_path, "word", "--speculative", "fast")
    assert code == 2 and "--speculative must be auto or a whole number >= 0 (got 'fast')" in err


def test_bench_speculative_mode_reports_acceptance(tiny_models, tmp_path):
    """One child process (the speculative mode alone) keeps this quick; the ratios are checked below."""
    adapter = save_adapter(tmp_path / "adapter", tiny_models["anti"], seed=1)
    out = tmp_path / "bench.json"
    code, stdout, err = run_cli(
        "bench", "--base", tiny_models["base"], "--expert", adapter, "--batch-sizes", "1", "--modes",
        "speculative", "--speculative", "3", "--draft", "expert", "--new-tokens", "6", "--prompt-tokens", "8",
        "--repeats", "1", "--dtype", "float32", "--device", "cpu", "--threads", "1", "--output", out,
    )  # fmt: skip
    assert code == 0, err
    [spec] = json.loads(out.read_text())["results"]
    assert spec["speculative"] == 3 and spec["rounds"] >= 1 and 0 <= spec["accepted_per_round"] <= 3
    assert "speculative k=3 (expert drafts) kept" in stdout


def test_bench_ratios_compare_speculative_with_proxy_and_base():
    from proxytool.decoding.speed import ratios

    speeds = {"base": 4.0, "proxy": 2.0, "speculative": 3.0}
    results = [{"mode": m, "batch": 1, "tokens_per_s": v} for m, v in speeds.items()]
    [row] = ratios(results)
    assert row["speculative_vs_proxy"] == 1.5 and row["speculative_vs_base"] == 0.75


def test_bench_rejects_a_speculative_mode_without_drafts(tiny_models):
    code, _, err = run_cli(
        "bench", "--base", tiny_models["base"], "--expert", tiny_models["expert"], "--anti-expert",
        tiny_models["anti"], "--modes", "speculative", "--speculative", "0",
    )  # fmt: skip
    assert code != 0 and "--speculative must be >= 1" in err
