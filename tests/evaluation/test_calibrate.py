"""α from data (`eval --alpha auto`): the right α is known by construction (the dev answers are what the
proxy writes at that α), it is stored with the expert and becomes decode's default; a one-line warning
when no α beats the base alone. Also the junk-rate metric and the per-question-type table."""

import json
import shutil

import pytest
from cli_runner import run_cli
from engine_helpers import proxy_setup
from test_eval import PROMPTS, batched_texts, eval_args, expect_error, load_models, read_jsonl, write_jsonl

from proxytool.decoding.setup import resolve_roles
from proxytool.evaluation import calibrate
from proxytool.evaluation.evaluate import evaluate, parse_alpha_option
from proxytool.evaluation.metrics import junk_in
from proxytool.evaluation.report import markdown
from proxytool.evaluation.tasks import load_task
from proxytool.models.checkpoint import ALPHA_FILE

GEN = dict(max_new_tokens=5, stop=["\n"])
DEV = ["Who leads the national poll?", "A sample of 1,200 adults", "The answer is", "Hello! How can I help"]


@pytest.fixture
def own_expert(tiny_models, tmp_path):
    """The tiny models with an expert folder of this test's own (alpha.json is written into it)."""
    expert = tmp_path / "expert"
    shutil.copytree(tiny_models["expert"], expert)
    return {**tiny_models, "expert": expert}


def qa_file(path, prompts, answers):
    return write_jsonl(
        path, [{"id": f"q{i}", "question": p, "answer": a} for i, (p, a) in enumerate(zip(prompts, answers))]
    )


def test_the_alpha_the_dev_answers_were_written_with_is_chosen_stored_and_used_by_default(own_expert, tmp_path):
    t = own_expert
    right = batched_texts(load_models(t, alpha=2.0), DEV, 4, **GEN)  # the dev answers: the proxy at alpha 2
    other = batched_texts(load_models(t, alpha=0.5), DEV, 4, **GEN)
    assert right != other, "the construction needs alpha 0.5 and 2 to answer differently"
    dev = qa_file(tmp_path / "dev.jsonl", DEV, [a if a.strip() else "zzz" for a in right])
    data = qa_file(tmp_path / "qa.jsonl", PROMPTS, ["x"] * len(PROMPTS))
    out = tmp_path / "run"
    code, stdout, err = run_cli(
        *eval_args(t, data, out, "--alpha", "auto:0.5,2", "--dev-task", dev, "--max-new-tokens", "5")
    )
    assert code == 0, err
    assert "alpha 2 chosen on dev (4 questions;" in err and "warning" not in err
    report = json.loads((out / "report.json").read_text())
    assert report["alphas"] == [2.0] and list(report["systems"]) == ["base", "expert", "proxy"]
    stored = json.loads((t["expert"] / ALPHA_FILE).read_text())
    assert stored["alpha"] == 2.0 and stored["beats_base"] is True and stored["task"] == "dev"
    assert stored["base"]["source"] == str(t["base"]) and stored["scores"]["proxy@2"] == 1.0
    assert report["calibration"]["stored"] == str(t["expert"] / ALPHA_FILE)
    assert (out / "dev" / "report.json").is_file() and "Alpha 2 was chosen on dev" in (out / "report.md").read_text()

    # decode, chat and serve resolve their roles here: without --alpha the stored alpha is the default
    resolved = resolve_roles(proxy_setup(t["base"], experts=[str(t["expert"])], anti_experts=[str(t["anti"])]))
    assert [a for a, _, _ in resolved.pairs] == [2.0] and "alpha 2 for" in resolved.notes[0]
    given = resolve_roles(proxy_setup(t["base"], experts=[str(t["expert"])], anti_experts=[str(t["anti"])], alphas=[1]))
    assert [a for a, _, _ in given.pairs] == [1.0] and not given.notes
    other_base = resolve_roles(proxy_setup(t["anti"], experts=[str(t["expert"])], anti_experts=[str(t["anti"])]))
    assert [a for a, _, _ in other_base.pairs] == [1.0]  # chosen with another base: not used

    out2 = tmp_path / "decoded.jsonl"
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": "p", "prompt": DEV[0]}])
    code, _, err = run_cli(
        "decode", "--base", t["base"], "--expert", t["expert"], "--anti-expert", t["anti"], "--prompts", prompts,
        "--output", out2, "--max-new-tokens", "5", "--stop", "\n", "--device", "cpu", "--threads", "1",
    )  # fmt: skip
    assert code == 0, err
    assert "alpha 2 for" in err
    assert read_jsonl(out2)[0]["completion"] == right[0]


def test_a_warning_when_no_alpha_beats_the_base_alone(own_expert, tmp_path):
    t = own_expert
    base_answers = batched_texts(load_models(t, pair=False), DEV, 4, **GEN)
    proxy = {a: batched_texts(load_models(t, alpha=a), DEV, 4, **GEN) for a in (1.0, 3.0)}
    assert all(texts != base_answers for texts in proxy.values())
    dev = qa_file(tmp_path / "dev.jsonl", DEV, [a if a.strip() else "zzz" for a in base_answers])
    data = qa_file(tmp_path / "qa.jsonl", PROMPTS, ["x"] * len(PROMPTS))
    code, _, err = run_cli(*eval_args(t, data, tmp_path / "run", "--alpha", "auto:1,3", "--dev-task", dev))
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: no alpha beats the base alone")]
    assert len(warnings) == 1 and "steering does not help this task" in warnings[0]
    assert json.loads((t["expert"] / ALPHA_FILE).read_text())["beats_base"] is False


def test_alpha_option_and_dev_task_errors(tiny_models, tmp_path):
    assert parse_alpha_option("auto") == (list(calibrate.AUTO_GRID), True)
    assert parse_alpha_option("auto:0.5,2") == ([0.5, 2.0], True)
    assert parse_alpha_option("0.5,1") == ([0.5, 1.0], False)
    data = qa_file(tmp_path / "qa.jsonl", PROMPTS, ["x"] * len(PROMPTS))
    expect_error(*eval_args(tiny_models, data, tmp_path / "a", "--alpha", "auto"), contains="pass --dev-task")
    expect_error(*eval_args(tiny_models, data, tmp_path / "b", "--alpha", "auto:"), contains="grid after the colon")
    expect_error(*eval_args(tiny_models, data, tmp_path / "c", "--dev-task", data), contains="needs --alpha auto")
    expect_error(
        *eval_args(tiny_models, data, tmp_path / "d", "--alpha", "auto", "--dev-task", data), contains="shares 4"
    )


def test_choose_alpha_prefers_score_then_junk_then_alpha_near_one(tmp_path):
    task = load_task(qa_file(tmp_path / "qa.jsonl", ["a", "b"], ["yes", "yes"]))

    def answers(*texts):
        return lambda task, examples: list(texts)

    systems = {
        "base": answers("no", "no"),
        "proxy@0.5": answers("yes", "no"),
        "proxy@2": answers("yes", "no 5%ucha"),
        "proxy@3": answers("yes", "no"),
    }
    report = evaluate(task, systems)
    for name, alpha in (("proxy@0.5", 0.5), ("proxy@2", 2.0), ("proxy@3", 3.0)):
        report.results[name].alpha = alpha
    choice = calibrate.choose_alpha(report)
    assert (choice.alpha, choice.beats_base) == (0.5, True)  # a tie at 50%: 2 has junk, 0.5 is nearer 1 than 3
    assert calibrate.warning(choice, "dev") is None


@pytest.mark.parametrize(
    "text,junk",
    [
        (" 45% to 49%ucha", True),
        (" Floridaucha poll", True),
        (" 1275uchaics", True),
        (" Trump%", True),
        (" 45%", False),
        (" Harris +3", False),
        (" October 16 to October 18, 2024", False),
        (" Redfield & Wilton Strategies", False),
        (" Nebraska CD-2, 1st district, the 1990s", False),
        (" Floridians", False),
        (" 1275 \ufffd", True),
        (" 48% ответ", True),
    ],
)
def test_junk_after_an_answer(text, junk):
    assert junk_in(text, "Question: Who ran the Florida poll of likely voters?\nAnswer:", "45%") is junk


def test_report_shows_junk_rates_and_accuracy_per_question_type(tmp_path):
    records = [
        {"id": "1", "question": "q1", "answer": "48%", "kind": "share", "fact": "share_harris", "split": "trained"},
        {"id": "2", "question": "q2", "answer": "Harris +3", "kind": "margin", "fact": "margin", "split": "trained"},
        {"id": "3", "question": "q3", "answer": "Marist", "kind": "pollster", "fact": "pollster", "split": "unseen"},
    ]
    task = load_task(write_jsonl(tmp_path / "polls.jsonl", records))
    report = evaluate(
        task,
        {
            "base": lambda task, ex: ["50%", "48%", "Gallup"],  # the margin answered with a share: wrong
            "expert": lambda task, ex: ["48%", "Harris +3", "Marist"],
            "proxy": lambda task, ex: ["48%ucha", "Harris +3", "Marist"],
        },
    )
    assert report.results["proxy"].junk_rate == pytest.approx(1 / 3) and report.results["base"].junk_rate == 0
    assert report.breakdown("fact")["margin"] == {"base": 0.0, "expert": 1.0, "proxy": 1.0}
    assert report.to_json()["by_fact"]["junk_rate"]["share_harris"]["proxy"] == 1.0
    assert report.to_json()["systems"]["proxy"]["junk_rate"] == pytest.approx(1 / 3)
    md = markdown(report)
    assert "| system | alpha | n | score (%) | junk (%) | gap closed | seconds |" in md
    assert "By question type (fact) (score %, gap closed %, junk %):" in md
    assert "| margin | 1 | 0.0 | 100.0 | 100.0 | 100 | 0.0 | 0.0 | 0.0 |" in md
