"""`proxytool eval` on tiny models: report files, gap closed, engine equivalence, choice scoring, errors."""

import json
from pathlib import Path

import pytest
import torch
from cli_runner import run_cli
from engine_helpers import proxy_setup
from reference import load

from proxytool.decoding.generate import complete
from proxytool.decoding.setup import load_proxy_models
from proxytool.evaluation.evaluate import (
    choice_logprobs,
    derived_systems,
    evaluate,
    with_alpha,
)
from proxytool.evaluation.metrics import gap_closed, normalize_text
from proxytool.evaluation.tasks import load_task

PROMPTS = ["Who leads the poll?", "How many apples does Janet have?", "A sample of adults", "The margin of error"]
REPORT_KEYS = {
    "task",
    "metric",
    "target",
    "systems",
    "gap_closed",
    "sweep",
    "models",
    "alphas",
    "settings",
    "task_info",
    "command",
    "started_at",
    "versions",
}


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def read_jsonl(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def load_models(t, *, base=None, alpha=1.0, pair=True):
    kwargs = dict(experts=[str(t["expert"])], anti_experts=[str(t["anti"])], alphas=[alpha]) if pair else {}
    return load_proxy_models(proxy_setup(base or t["base"], **kwargs))


def batched_texts(models, prompts, batch_size, **kwargs):
    return [
        c.text
        for i in range(0, len(prompts), batch_size)
        for c in complete(models, prompts[i : i + batch_size], **kwargs)
    ]


def eval_args(t, task, out, *extra):
    return [
        "eval",
        "--task",
        task,
        "--base",
        t["base"],
        "--expert",
        t["expert"],
        "--anti-expert",
        t["anti"],
        "--output",
        out,
        "--threads",
        "1",
        "--device",
        "cpu",
        *extra,
    ]


def check_gap_formula(report):
    base, target = report["systems"]["base"]["score"], report["systems"][report["target"]]["score"]
    for name, gap in report["gap_closed"].items():
        assert gap == gap_closed(base, report["systems"][name]["score"], target)


def test_generate_task_end_to_end(tiny_models, tmp_path):
    t, gen = tiny_models, dict(max_new_tokens=5, stop=["\n"])
    expert_alone = batched_texts(load_models(t, base=t["expert"], pair=False), PROMPTS[:3], 2, **gen)
    # The expert's own answers are the references, so expert (and direct = the same weights) score 1.
    answers = [c if normalize_text(c) else "zzz" for c in expert_alone] + ["zzz"]
    data = write_jsonl(
        tmp_path / "qa.jsonl",
        [{"id": f"q{i}", "question": p, "answer": a} for i, (p, a) in enumerate(zip(PROMPTS, answers))],
    )
    out = tmp_path / "run"
    code, stdout, err = run_cli(
        *eval_args(
            t,
            data,
            out,
            "--direct",
            t["expert"],
            "--alpha",
            "0,1",
            "--limit",
            "3",
            "--max-new-tokens",
            "5",
            "--batch-size",
            "2",
            "--dtype",
            "float32",
            "--quantize-base",
            "none",
            "--base-format",
            "raw",
            "--expert-format",
            "raw",
            "--anti-expert-format",
            "raw",
            "--no-share-weights",
            "--overlap",
            "on",
        )
    )
    assert code == 0, err
    assert "gap closed" in stdout and "target = direct" in stdout
    report = json.loads((out / "report.json").read_text())
    assert set(report) >= REPORT_KEYS
    assert list(report["systems"]) == ["base", "expert", "proxy@0", "proxy@1", "direct"]
    assert report["target"] == "direct" and report["alphas"] == [0.0, 1.0]
    assert all(s["n"] == 3 and s["seconds"] >= 0 for s in report["systems"].values())
    check_gap_formula(report)
    expected = sum(a != "zzz" for a in answers[:3]) / 3
    assert expected > 0 and report["systems"]["expert"]["score"] == report["systems"]["direct"]["score"] == expected

    outputs = {name: read_jsonl(out / "outputs" / f"{name}.jsonl") for name in report["systems"]}
    for name, rows in outputs.items():
        assert [r["id"] for r in rows] == ["q0", "q1", "q2"]
        assert all(set(r) >= {"id", "prompt", "completion", "answer", "score"} for r in rows)
        assert report["systems"][name]["score"] == pytest.approx(sum(r["score"] for r in rows) / 3)
    texts = {name: [r["completion"] for r in rows] for name, rows in outputs.items()}
    assert texts["proxy@1"] == batched_texts(load_models(t), PROMPTS[:3], 2, **gen)
    assert texts["proxy@0"] == texts["base"] and outputs["proxy@0"] == outputs["base"]
    assert texts["expert"] == texts["direct"] == expert_alone
    assert (out / "alpha_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert (
        "| system | alpha | n | score (%) | junk (%) | gap closed | seconds |" in md and "proxytool eval --task" in md
    )


def test_choice_task_sweep_without_direct(tiny_models, tmp_path):
    data = write_jsonl(
        tmp_path / "mc.jsonl",
        [
            {
                "id": "m1",
                "question": "Q: Who leads the poll?\nA:",
                "choices": ["Harris", "Trump", "Neither"],
                "correct": 0,
            },
            {"id": "m2", "question": "Q: How many apples?\nA:", "choices": ["8", "5 apples"], "correct": [1]},
            {"id": "m3", "question": "Q: Margin?\nA:", "choices": ["three points", "two", "Wisconsin"], "correct": 2},
        ],
    )
    out = tmp_path / "run"
    code, stdout, err = run_cli(*eval_args(tiny_models, data, out, "--alpha", "0,1.5", "--batch-size", "2"))
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["target"] == "expert" and report["task_info"]["kind"] == "choice"
    assert "no --direct" in stdout and "no --direct" in (out / "report.md").read_text()
    check_gap_formula(report)
    base, zero = (read_jsonl(out / "outputs" / f"{n}.jsonl") for n in ("base", "proxy@0"))
    assert zero == base and len(base[0]["choice_scores"]) == 3
    assert (out / "alpha_sweep.png").stat().st_size > 0


def brute_force(models, weights, prompt, continuation, tokenizer):
    """sum_t log_softmax(Σ w·logits)[token_t] from one uncached forward of each model on prompt + continuation."""
    ids = tokenizer(prompt)["input_ids"]
    cont = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = [m(torch.tensor([ids + cont])).logits[0, len(ids) - 1 : -1] for m in models]
    width = min([x.shape[-1] for x in logits] + [len(tokenizer)])
    scores = sum(w * x[:, :width] for w, x in zip(weights, logits))
    return torch.log_softmax(scores, -1).gather(-1, torch.tensor(cont).unsqueeze(-1)).sum().item()


def test_choice_scorer_equals_brute_force_log_likelihood(tiny_models):
    t = tiny_models
    proxy = load_models(t, alpha=1.5)
    prompts, conts = (
        ["Q: Who leads?\nA:", "A sample of 1,200 adults was"],
        [[" Harris", " Trump leads by two"], [" interviewed", " 42"]],
    )
    raw = {k: load(t[k]) for k in ("base", "expert", "anti")}
    tok = proxy.tokenizer
    systems = {
        "proxy": (proxy, [raw["base"], raw["expert"], raw["anti"]], [1.0, 1.5, -1.5]),
        "base": (derived_systems(proxy)["base"], [raw["base"]], [1.0]),
        "expert": (derived_systems(proxy)["expert"], [raw["expert"]], [1.0]),
    }
    for name, (models, refs, weights) in systems.items():
        got = choice_logprobs(models, prompts, conts)
        want = [[brute_force(refs, weights, p, c, tok) for c in cs] for p, cs in zip(prompts, conts)]
        assert got == [pytest.approx(w, abs=1e-4) for w in want], name
    assert choice_logprobs(with_alpha(proxy, 0.0), prompts, conts) == choice_logprobs(
        derived_systems(proxy)["base"], prompts, conts
    )


def test_gap_closed_and_target_with_plain_function_systems(tmp_path):
    task = load_task(
        write_jsonl(tmp_path / "qa.jsonl", [{"question": f"q{i}", "answer": a} for i, a in enumerate("wxyz")])
    )

    def right_first(k):  # answers the first k questions correctly
        return lambda task, examples: [e.answer if int(e.id) <= k else "wrong" for e in examples]

    report = evaluate(task, {"base": right_first(1), "expert": right_first(3), "proxy": right_first(2)}, batch_size=3)
    assert [r.score for r in report.results.values()] == [0.25, 0.75, 0.5]
    assert report.target == "expert" and report.gap_closed() == {"proxy": 0.5}
    report.results.update(evaluate(task, {"direct": right_first(4)}).results)
    assert report.target == "direct" and report.gap_closed()["proxy"] == pytest.approx(1 / 3)
    assert report.to_json()["gap_closed"] == report.gap_closed()


def test_builtin_task_with_data_dir_and_few_shot(tiny_models, tmp_path):
    gsm = tmp_path / "evalsets" / "gsm8k"
    gsm.mkdir(parents=True)
    rows = [
        {"question": "Janet has 3 apples and buys 5 more. How many?", "answer": "3+5=<<3+5=8>>8\n#### 8"},
        {"question": "What is 2 times 21?", "answer": "2*21=42\n#### 42"},
    ]
    write_jsonl(gsm / "train.jsonl", rows)
    write_jsonl(gsm / "test.jsonl", rows[::-1])
    out = tmp_path / "run"
    code, _, err = run_cli(
        *eval_args(
            tiny_models,
            "gsm8k",
            out,
            "--data-dir",
            tmp_path / "evalsets",
            "--few-shot",
            "1",
            "--limit",
            "1",
            "--max-new-tokens",
            "3",
        )
    )
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "gsm8k" and report["metric"] == "accuracy (final number)"
    assert list(report["systems"]) == ["base", "expert", "proxy"] and not (out / "alpha_sweep.png").exists()
    prompt = read_jsonl(out / "outputs" / "proxy.jsonl")[0]["prompt"]
    assert prompt.startswith("Question: Janet") and prompt.endswith("Question: What is 2 times 21?\nAnswer:")


def expect_error(*args, contains):
    code, out, err = run_cli(*args)
    assert code == 2, (out, err)
    assert contains in err, err
    assert "Traceback" not in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "alpha, contains",
    [
        ("0.5,x", "--alpha: 'x' is not a finite number"),
        ("", "--alpha: empty"),
        ("1,0.5,1", "--alpha: 1 is repeated"),
        ("nan", "--alpha: 'nan'"),
    ],
)
def test_bad_alpha_lists(tiny_models, tmp_path, alpha, contains):
    expect_error(*eval_args(tiny_models, "gsm8k", tmp_path / "run", "--alpha", alpha), contains=contains)
    assert not (tmp_path / "run").exists()


def test_unknown_task_malformed_data_and_bad_flags(tiny_models, tmp_path):
    t, out = tiny_models, tmp_path / "run"
    expect_error(*eval_args(t, "gsm9k", out), contains="unknown task 'gsm9k'")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q1", "answer": "a"}\n{"question": "q2"}\n')
    expect_error(*eval_args(t, bad, out), contains="bad.jsonl:2: field 'answer': missing")
    good = write_jsonl(tmp_path / "qa.jsonl", [{"question": "q", "answer": "a"}])
    expect_error(*eval_args(t, good, out, "--batch-size", "0"), contains="--batch-size")
    expect_error(*eval_args(t, good, out, "--limit", "-1"), contains="limit")
    expect_error(
        "eval", "--task", good, "--base", t["base"], "--expert", t["expert"], "--output", out, contains="--anti-expert"
    )
    expect_error(*eval_args(t, good, out, "--direct", "no-such-model-xyz"), contains="unknown model")
    assert not out.exists()
    (tmp_path / "file").write_text("")
    expect_error(*eval_args(t, good, tmp_path / "file"), contains="cannot create the folder")


def test_help_lists_the_options():
    code, out, _ = run_cli("eval", "--help")
    assert code == 0
    for flag in (
        "--task",
        "--direct",
        "--alpha",
        "--limit",
        "--output",
        "--data-dir",
        "--few-shot",
        "--max-new-tokens",
        "--batch-size",
        "--quantize-base",
        "--share-weights",
        "--threads",
    ):
        assert flag in out
