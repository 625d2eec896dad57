"""Evaluation tasks and scorers: no models involved. Fixtures mimic the real evalset files."""

import csv
import gzip
import json
import math
import time

import pytest

from proxytool.errors import ProxyToolError
from proxytool.evaluation import metrics
from proxytool.evaluation.metrics import (
    choice_accuracy,
    exact_match,
    extract_code,
    first_number,
    gap_closed,
    gsm8k_final_number,
    gsm8k_score,
    leader_match,
    normalize_text,
    numeric_match,
    pass_at_k,
    polls_score,
    run_humaneval,
    run_humaneval_detailed,
)
from proxytool.evaluation.tasks import TASK_NAMES, Example, load_task

# --------------------------------------------------------------------------- text scorers


def test_normalize_text():
    assert normalize_text("  The  Harris-Walz ticket! ") == "harris walz ticket"
    assert normalize_text("HARRIS.") == "harris"


@pytest.mark.parametrize(
    "pred, ref, expected",
    [
        ("Harris", "harris", 1.0),
        ("  harris. ", "Harris", 1.0),
        ("Harris, by 3 points", "Harris", 1.0),
        ("The answer is Harris.", "Harris", 1.0),
        ("Trump", "Harris", 0.0),
        ("Trump, not Harris", "Harris", 0.0),
        ("Harrison", "Harris", 0.0),
        ("", "Harris", 0.0),
        ("anything", "", 0.0),
        ("New York City", "new york", 1.0),
    ],
)
def test_exact_match(pred, ref, expected):
    assert exact_match(pred, ref) == expected


@pytest.mark.parametrize(
    "pred, ref, expected",
    [
        ("Harris", "Harris", 1.0),
        ("Harris, by 3 points", "Harris", 1.0),
        ("Kamala Harris was ahead of Donald Trump.", "Harris", 1.0),
        ("Trump", "Harris", 0.0),
        ("Trump led Harris by 2.", "Harris", 0.0),
        ("Trump was ahead of Harris", "Trump", 1.0),
        ("Harrison", "Harris", 0.0),
        ("It was a tie.", "tie", 1.0),
        ("They were tied at 47.", "tie", 1.0),
        ("Harris", "tie", 0.0),
        ("tie", "Harris", 0.0),
        ("Neither", "Harris", 0.0),
        ("Harris", "Kamala Harris", 1.0),
    ],
)
def test_leader_match_uses_the_first_candidate_named(pred, ref, expected):
    assert leader_match(pred, ref) == expected


def test_leader_match_with_explicit_candidates():
    assert leader_match("Biden leads Trump", "Biden", ["Biden", "Trump"]) == 1.0
    assert leader_match("Trump leads Biden", "Biden", ["Biden", "Trump"]) == 0.0


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1,200", 1200.0),
        ("about 1,200 likely voters", 1200.0),
        ("-3.5", -3.5),
        ("48%", 48.0),
        ("$18 a day", 18.0),
        ("16-3-4 = 9", 16.0),
        ("\u22122 points", -2.0),  # Unicode minus sign
        ("+3", 3.0),
        ("12,345.67", 12345.67),
        ("1,2345", 1.0),  # not a thousands grouping
        ("v1.5 then 7", 7.0),
        (".5", 0.5),
        ("no digits here", None),
        ("", None),
    ],
)
def test_first_number(text, expected):
    assert first_number(text) == expected


def test_numeric_match():
    assert numeric_match("47.5", "47.50", abs_tol=0.05) == 1.0
    assert numeric_match("47.55%", "47.5", abs_tol=0.05) == 1.0
    assert numeric_match("47.6", "47.5", abs_tol=0.05) == 0.0
    assert numeric_match("1,200", "1200") == 1.0
    assert numeric_match("1201", 1200) == 0.0
    assert numeric_match("-3.5", -3.5) == 1.0
    assert numeric_match("3.5", "-3.5") == 0.0
    assert numeric_match("110", 100, rel_tol=0.1) == 1.0
    assert numeric_match("no idea", "5") == 0.0
    assert numeric_match("5", "none") == 0.0


def test_polls_score_by_kind():
    assert polls_score("Harris, by 3 points", "Harris", "leader") == 1.0
    assert polls_score("Trump", "Harris", "leader") == 0.0
    assert polls_score("tie", "tie", "leader") == 1.0
    assert polls_score("47.50%", "47.5", "share") == 1.0
    assert polls_score("48", "47.5", "share") == 0.0
    assert polls_score("1,004 registered voters", "1004", "sample_size") == 1.0
    assert polls_score("1,005", "1004", "sample_size") == 0.0
    assert polls_score("3 points", "3", "margin") == 1.0
    assert polls_score("-3", "3", "margin") == 1.0  # a margin is |Harris - Trump|
    assert polls_score("0", "0", "margin") == 1.0
    assert polls_score("Harris +3", "Harris +3", "margin") == 1.0
    assert polls_score("Trump +3", "Harris +3", "margin") == 0.0
    assert polls_score("Paris", "paris", None) == 1.0
    # by value, whatever the wording
    assert polls_score("47.3 percent", "47.3%", "share") == 1.0
    assert polls_score(" 47.3%", "47.3%", "share") == 1.0
    assert polls_score("Kamala Harris", "Harris", "leader") == 1.0
    assert polls_score("Donald Trump led", "Harris", "leader") == 0.0
    assert polls_score("2 points", "2 points", "margin") == 1.0
    assert polls_score("It was tied", "0 points (a tie)", "margin") == 1.0
    assert polls_score("1 point", "0 points (a tie)", "margin") == 0.0
    assert polls_score("Oct 1-3, 2024", "October 1 to October 3, 2024", "dates") == 1.0
    assert polls_score("September 28 to October 2", "Sep 28-Oct 2, 2024", "dates") == 1.0
    assert polls_score("2024-10-01 to 2024-10-03", "October 1 to October 3, 2024", "dates") == 1.0
    assert polls_score("October 1, 2024", "October 1 to October 3, 2024", "dates") == 0.0
    assert polls_score("October 5, 2024", "October 5, 2024", "dates") == 1.0
    assert polls_score("October 1 to October 3, 2020", "October 1 to October 3, 2024", "dates") == 0.0
    assert polls_score("Oct 1-3", "October 1 to October 3, 2024", "dates") == 1.0
    assert polls_score("likely voters (LV)", "likely voters", "population") == 1.0
    assert polls_score("LV", "likely voters", "population") == 1.0
    assert polls_score("registered voters", "likely voters", "population") == 0.0
    assert polls_score("all adults", "adults", "population") == 1.0
    assert polls_score("Marist College", "Marist College", "pollster") == 1.0
    assert polls_score("Marist", "Marist College", "pollster") == 1.0
    assert polls_score("the Marist College poll", "Marist College", "pollster") == 1.0
    assert polls_score("Redfield and Wilton", "Redfield & Wilton Strategies", "pollster") == 1.0
    assert polls_score("College", "Marist College", "pollster") == 0.0
    assert polls_score("Emerson College", "Marist College", "pollster") == 0.0
    assert polls_score("Pennsylvania", "Pennsylvania", "place") == 1.0
    assert polls_score("It was in Pennsylvania.", "Pennsylvania", "place") == 1.0
    assert polls_score("nationwide", "national", "place") == 1.0
    assert polls_score("The United States", "national", "place") == 1.0
    assert polls_score("Ohio", "Pennsylvania", "place") == 0.0
    assert polls_score("42.0", "42", None) == 1.0


# --------------------------------------------------------------------------- GSM8K


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She makes 9 * 2 = $<<9*2=18>>18.\n#### 18", 18.0),
        ("So he made 200,000-130,000=$70,000\n#### 70,000", 70000.0),
        ("The loss is 10 dollars.\n#### -10", -10.0),
        ("16 - 3 - 4 = 9 eggs, 9 * 2 = 18. The answer is 18.\n\nQuestion: 5 apples", 18.0),
        ("The answer is $1,250.", 1250.0),
        ("First 5, then 7, finally 12 apples", 12.0),
        ("I do not know", None),
    ],
)
def test_gsm8k_final_number(text, expected):
    assert gsm8k_final_number(text) == expected


def test_gsm8k_score():
    reference = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n#### 18"
    assert gsm8k_score("9 * 2 = 18. The answer is 18.", reference) == 1.0
    assert gsm8k_score("The answer is 18.0", "18") == 1.0
    assert gsm8k_score("The answer is 9.", reference) == 0.0
    assert gsm8k_score("", reference) == 0.0


# --------------------------------------------------------------------------- aggregates


def test_choice_accuracy():
    assert choice_accuracy([-1.0, -2.0, -3.0], [0]) == 1.0
    assert choice_accuracy([-3.0, -2.0, -1.0], [0]) == 0.0
    assert choice_accuracy([-1.0, -1.0, -5.0], [0]) == 0.5  # a tie earns its expected accuracy
    assert choice_accuracy([0.0, 0.0, 0.0, 0.0], [0]) == 0.25
    assert choice_accuracy([-1.0, -1.0], [0, 1]) == 1.0
    assert choice_accuracy([float("nan"), -9.0], [1]) == 1.0
    with pytest.raises(ValueError):
        choice_accuracy([], [0])


def test_pass_at_k_known_values():
    assert pass_at_k(1, 1, 1) == 1.0
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(2, 1, 1) == pytest.approx(0.5)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))
    assert pass_at_k(200, 13, 10) == pytest.approx(1 - math.comb(187, 10) / math.comb(200, 10))
    assert pass_at_k(5, 3, 3) == 1.0  # n - c < k: every draw of k contains a pass
    for bad in [(5, 6, 1), (5, 1, 0), (5, 1, 6), (5, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_gap_closed():
    assert gap_closed(0.2, 0.5, 0.8) == pytest.approx(0.5)
    assert gap_closed(0.2, 0.8, 0.8) == pytest.approx(1.0)
    assert gap_closed(0.2, 0.1, 0.8) == pytest.approx(-1 / 6)
    assert gap_closed(0.5, 0.7, 0.5) is None


# --------------------------------------------------------------------------- HumanEval runner

HE_PROMPT = 'def add(a: int, b: int) -> int:\n    """Return a + b.\n    >>> add(2, 3)\n    5\n    """\n'
HE_TEST = (
    "\n\nMETADATA = {\n    'author': 'jt',\n    'dataset': 'test'\n}\n\n\ndef check(candidate):\n"
    "    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n\n"
)


def test_humaneval_passes_a_correct_solution_and_fails_a_wrong_one():
    assert run_humaneval(HE_PROMPT, "    return a + b\n", HE_TEST, "add") is True
    assert run_humaneval(HE_PROMPT, "    return a - b\n", HE_TEST, "add") is False
    assert run_humaneval(HE_PROMPT, "    return a +\n", HE_TEST, "add") is False  # syntax error


def test_humaneval_times_out_an_infinite_loop():
    start = time.monotonic()
    ok, reason = run_humaneval_detailed(HE_PROMPT, "    while True:\n        pass\n", HE_TEST, "add", timeout=1.0)
    assert (ok, reason) == (False, "timed out")
    assert time.monotonic() - start < 10


def test_humaneval_blocks_network_sockets():
    # Creating a socket needs no network: failing here proves the guard, not a missing network.
    for code in [
        "    import socket\n    socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n    return a + b\n",
        "    import socket\n    socket.create_connection(('127.0.0.1', 9))\n    return a + b\n",
        "    import _socket\n    _socket.socket()\n    return a + b\n",
    ]:
        ok, reason = run_humaneval_detailed(HE_PROMPT, code, HE_TEST, "add")
        assert not ok and "disabled" in reason, reason
    # Importing socket is fine.
    assert run_humaneval(HE_PROMPT, "    import socket\n    return a + b\n", HE_TEST, "add")


def test_humaneval_needs_the_program_to_finish():
    assert run_humaneval(HE_PROMPT, "    return a + b\nimport sys\nsys.exit(0)\n", HE_TEST, "add") is False
    shell = "    return a + b\nimport os\nos.system('true')\n"
    assert run_humaneval(HE_PROMPT, shell, HE_TEST, "add") is False


def test_humaneval_limits_memory():
    ok, reason = run_humaneval_detailed(
        HE_PROMPT, "    x = bytearray(4 * 1024 ** 3)\n    return a + b\n", HE_TEST, "add"
    )
    assert not ok and "MemoryError" in reason, reason


def test_extract_code_from_markdown():
    fenced = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    assert run_humaneval(HE_PROMPT, extract_code(fenced), HE_TEST, "add")
    assert extract_code("    return a + b\n") == "    return a + b\n"


# --------------------------------------------------------------------------- fixtures (real formats)

GSM8K_TRAIN = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
        "in May. How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
        "altogether in April and May.\n#### 72",
    },
    {
        "question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
        "How much did she earn?",
        "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
        "$<<0.2*50=10>>10.\n#### 10",
    },
]
GSM8K_TEST = [
    {
        "question": "Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast. How much?",
        "answer": "Janet sells 16 - 3 = <<16-3=13>>13 duck eggs a day.\n#### 13",
    },
    {
        "question": "A house costs $80,000. How much profit?",
        "answer": "He made 200,000-130,000=$<<200000-130000=70000>>70,000\n#### 70,000",
    },
    {"question": "A robe takes 2 bolts. How many?", "answer": "It takes 2+1=<<2+1=3>>3\n#### 3"},
]
HUMANEVAL = [
    {
        "task_id": "HumanEval/0",
        "prompt": HE_PROMPT,
        "entry_point": "add",
        "canonical_solution": "    return a + b\n",
        "test": HE_TEST,
    },
    {
        "task_id": "HumanEval/1",
        "prompt": 'def neg(x: int) -> int:\n    """Return -x."""\n',
        "entry_point": "neg",
        "canonical_solution": "    return -x\n",
        "test": "\n\ndef check(candidate):\n    assert candidate(2) == -2\n\n",
    },
]
MC_TASK = [
    {
        "question": "What happens to you if you eat watermelon seeds?",
        "mc0_targets": {
            "The watermelon seeds pass through your digestive system": 1,
            "You grow watermelons in your stomach": 0,
        },
        "mc1_targets": {
            "The watermelon seeds pass through your digestive system": 1,
            "You grow watermelons in your stomach": 0,
            "You get sick": 0,
        },
        "mc2_targets": {
            "Nothing happens": 1,
            "The watermelon seeds pass through your digestive system": 1,
            "You grow watermelons in your stomach": 0,
            "You get sick": 0,
        },
    },
    {
        "question": "Where did fortune cookies originate?",
        "mc0_targets": {
            "The precise origin of fortune cookies is unclear": 1,
            "Fortune cookies originated in Japan": 0,
        },
        "mc2_targets": {
            "The precise origin of fortune cookies is unclear": 1,
            "Fortune cookies originated in China": 0,
        },
    },  # no mc1_targets: derived from the CSV
]
CSV_HEADER = [
    "Type",
    "Category",
    "Question",
    "Best Answer",
    "Best Incorrect Answer",
    "Correct Answers",
    "Incorrect Answers",
    "Source",
]
CSV_ROWS = [
    [
        "Adversarial",
        "Misconceptions",
        "What happens to you if you eat watermelon seeds?",
        "The watermelon seeds pass through your digestive system",
        "You grow watermelons in your stomach",
        "Nothing happens; The watermelon seeds pass through your digestive system",
        "You grow watermelons in your stomach; You get sick",
        "https://wonderopolis.org/",
    ],
    [
        "Adversarial",
        "Misconceptions",
        "Where did fortune cookies originate?",
        "The precise origin of fortune cookies is unclear",
        "Fortune cookies originated in China",
        "Fortune cookies originated in San Francisco; The precise origin of fortune cookies is unclear",
        "Fortune cookies originated in China; Fortune cookies originated in Japan",
        "https://en.wikipedia.org/wiki/List_of_common_misconceptions",
    ],
]
POLLS_RECALL = [
    {
        "id": "101-leader",
        "question": "In the Emerson poll of Pennsylvania, who was ahead: Harris or Trump? "
        "Answer with the last name, or 'tie'.",
        "answer": "Harris",
        "kind": "leader",
        "poll_id": 1,
        "question_id": 101,
    },
    {
        "id": "101-share-harris",
        "question": "In the Emerson poll of Pennsylvania, what percentage did Kamala "
        "Harris receive? Answer with a number.",
        "answer": "48.5",
        "kind": "share",
        "poll_id": 1,
        "question_id": 101,
    },
    {
        "id": "101-sample_size",
        "question": "What was the sample size of the Emerson poll of Pennsylvania? Answer with a number.",
        "answer": "1000",
        "kind": "sample_size",
        "poll_id": 1,
        "question_id": 101,
    },
    {
        "id": "101-margin",
        "question": "In the Emerson poll of Pennsylvania, by how many percentage points did "
        "the leader lead? Answer with a number (0 for a tie).",
        "answer": "1.5",
        "kind": "margin",
        "poll_id": 1,
        "question_id": 101,
    },
]


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def evalsets(tmp_path, monkeypatch):
    root = tmp_path / "evalsets"
    write_jsonl(root / "gsm8k" / "train.jsonl", GSM8K_TRAIN)
    write_jsonl(root / "gsm8k" / "test.jsonl", GSM8K_TEST)
    (root / "humaneval").mkdir(parents=True)
    with gzip.open(root / "humaneval" / "HumanEval.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in HUMANEVAL)
    (root / "truthfulqa").mkdir(parents=True)
    (root / "truthfulqa" / "mc_task.json").write_text(json.dumps(MC_TASK), encoding="utf-8")
    with open(root / "truthfulqa" / "TruthfulQA.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        writer.writerows(CSV_ROWS)
    monkeypatch.setenv("PROXYTOOL_EVALSETS", str(root))
    return root


# --------------------------------------------------------------------------- load_task


def test_gsm8k_task_with_default_two_shot_prefix(evalsets):
    task = load_task("gsm8k")
    assert (task.name, task.kind, task.max_new_tokens) == ("gsm8k", "generate", 256)
    assert "\n\nQuestion:" in task.stop
    assert [ex.answer for ex in task.examples] == ["13", "70000", "3"]
    prompt = task.examples[0].prompt
    assert prompt.startswith("Question: Natalia sold clips")
    assert "<<" not in prompt and "####" not in prompt
    assert "The answer is 72.\n\nQuestion: Weng earns" in prompt
    assert prompt.endswith(
        "The answer is 10.\n\nQuestion: Janet\u2019s ducks lay 16 eggs per day. "
        "She eats three for breakfast. How much?\nAnswer:"
    )
    assert task.score(task.examples[1], " 200,000 - 130,000 = 70,000. The answer is 70,000.") == 1.0
    assert task.score(task.examples[1], " The answer is 7.") == 0.0


def test_gsm8k_few_shot_options(evalsets):
    zero = load_task("gsm8k", few_shot=0, limit=1)
    assert zero.examples[0].prompt == (
        "Question: Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast. How much?\nAnswer:"
    )
    one = load_task("gsm8k", few_shot=1)
    assert one.examples[0].prompt.count("Question:") == 2
    with pytest.raises(ProxyToolError, match="few_shot=3"):
        load_task("gsm8k", few_shot=3)


def test_truthfulqa_mc1_task(evalsets):
    task = load_task("truthfulqa-mc")
    assert (task.kind, task.max_new_tokens) == ("choice", 0)
    first, second = task.examples
    assert first.prompt == "Q: What happens to you if you eat watermelon seeds?\nA:"
    assert first.choices == [
        "The watermelon seeds pass through your digestive system",
        "You grow watermelons in your stomach",
        "You get sick",
    ]
    assert first.correct == [0] and first.answer == first.choices[0]
    assert first.meta["category"] == "Misconceptions"
    assert task.continuations(first)[1] == " You grow watermelons in your stomach"
    assert task.score_choices(first, [-1.0, -2.0, -3.0]) == 1.0
    # The second entry has no mc1_targets: best answer + incorrect answers from the CSV.
    assert second.choices == [
        "The precise origin of fortune cookies is unclear",
        "Fortune cookies originated in China",
        "Fortune cookies originated in Japan",
    ]
    assert second.correct == [0]
    with pytest.raises(ValueError):
        task.score(first, "anything")


def test_truthfulqa_falls_back_to_the_csv(evalsets):
    (evalsets / "truthfulqa" / "mc_task.json").unlink()
    task = load_task("truthfulqa-mc", limit=1)
    assert task.examples[0].choices == [
        "The watermelon seeds pass through your digestive system",
        "You grow watermelons in your stomach",
        "You get sick",
    ]


def test_truthfulqa_rejects_two_correct_mc1_choices(evalsets):
    bad = [dict(MC_TASK[0], mc1_targets={"a": 1, "b": 1, "c": 0})]
    (evalsets / "truthfulqa" / "mc_task.json").write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(ProxyToolError, match=r"entry 0: field 'mc1_targets'"):
        load_task("truthfulqa-mc")


def test_humaneval_task(evalsets):
    task = load_task("humaneval")
    assert (task.kind, task.max_new_tokens) == ("generate", 384)
    assert {"\ndef ", "\nclass ", "\nif __name__", "\nprint("} <= set(task.stop)
    ex = task.examples[0]
    assert (ex.id, ex.prompt, ex.meta["entry_point"]) == ("HumanEval/0", HE_PROMPT, "add")
    assert task.score(ex, ex.answer) == 1.0
    assert task.score(ex, "    return 0\n") == 0.0


def test_polls_tasks(tmp_path, monkeypatch):
    polls = tmp_path / "polls"
    write_jsonl(polls / "eval_trained.jsonl", POLLS_RECALL)
    write_jsonl(polls / "eval_unseen.jsonl", POLLS_RECALL[:1])
    task = load_task("polls-trained", data_dir=polls)
    assert (task.name, task.kind, task.max_new_tokens, task.stop) == ("polls-trained", "generate", 16, ["\n"])
    leader, share, size, margin = task.examples
    assert leader.prompt == POLLS_RECALL[0]["question"] and leader.meta["kind"] == "leader"
    assert leader.meta["poll_id"] == 1
    assert task.score(leader, "Harris, by 1.5 points") == 1.0
    assert task.score(leader, "Trump") == 0.0
    assert task.score(share, "48.50%") == 1.0
    assert task.score(size, "1,000") == 1.0
    assert task.score(margin, "1.5") == 1.0
    assert len(load_task("polls-unseen", data_dir=polls).examples) == 1
    # Default folder: work/polls relative to the working directory.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    polls.rename(tmp_path / "work" / "polls")
    assert len(load_task("polls-trained", limit=2).examples) == 2


def test_polls_task_uses_the_prompt_field_and_keeps_split_and_fact(tmp_path):
    line = {
        "id": "7-dates",
        "question": "When was Acme's national poll of likely voters conducted?",
        "prompt": "Question: When was Acme's national poll of likely voters conducted?\nAnswer:",
        "answer": "October 1 to October 3, 2024",
        "kind": "dates",
        "fact": "dates",
        "split": "trained",
        "poll_id": 7,
    }
    write_jsonl(
        tmp_path / "eval.jsonl", [line, dict(line, id="7-place", kind="place", fact="place", answer="national")]
    )
    task = load_task("polls", data_dir=tmp_path)
    dates, place = task.examples
    assert dates.prompt == line["prompt"] and dates.meta["question"] == line["question"]
    assert (dates.meta["split"], dates.meta["fact"]) == ("trained", "dates")
    assert task.score(dates, " Oct 1-3, 2024") == 1.0
    assert task.score(dates, " October 2 to October 3, 2024") == 0.0
    assert task.score(place, " Nationwide") == 1.0 and task.score(place, " Ohio") == 0.0


def test_polls_missing_files_say_how_to_build_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProxyToolError, match=r"proxytool data polls --out work/polls"):
        load_task("polls")


def test_polls_rejects_unknown_kind(tmp_path):
    write_jsonl(tmp_path / "eval_trained.jsonl", [POLLS_RECALL[0], dict(POLLS_RECALL[1], kind="turnout")])
    with pytest.raises(ProxyToolError, match=r"eval_trained.jsonl:2: field 'kind'"):
        load_task("polls-trained", data_dir=tmp_path)


def test_jsonl_generate_and_choice_tasks(tmp_path):
    qa = write_jsonl(
        tmp_path / "capitals.jsonl",
        [{"question": "Capital of France?", "answer": "Paris"}, {"id": "n", "question": "2 + 2?", "answer": 4}],
    )
    task = load_task(str(qa))
    assert (task.name, task.kind) == ("capitals", "generate")
    assert [ex.id for ex in task.examples] == ["1", "n"]
    assert task.score(task.examples[0], "Paris, of course.") == 1.0
    assert task.score(task.examples[1], "4.") == 1.0
    mc = write_jsonl(
        tmp_path / "mc.jsonl",
        [
            {"question": "Sky?", "choices": ["blue", "green"], "correct": 0},
            {"question": "Grass?", "choices": ["blue", "green"], "correct": [1], "answer": "green"},
        ],
    )
    task = load_task(mc, limit=1)
    assert task.kind == "choice" and len(task.examples) == 1
    assert task.examples[0].answer == "blue" and task.examples[0].correct == [0]


def test_limit_takes_the_first_examples(evalsets):
    assert [ex.id for ex in load_task("gsm8k", limit=2).examples] == ["gsm8k-0", "gsm8k-1"]
    assert load_task("humaneval", limit=0).examples == []
    with pytest.raises(ProxyToolError, match="limit"):
        load_task("gsm8k", limit=-1)


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"question": "a", "answer": "b"}', '{"question": "c", "answer": '], r"bad.jsonl:2: invalid JSON"),
        (['{"question": "a", "answer": "b"}', "", '{"question": "c"}'], r"bad.jsonl:3: field 'answer': missing"),
        (['{"question": 5, "answer": "b"}'], r"bad.jsonl:1: field 'question': expected a string"),
        (['["question", "answer"]'], r"bad.jsonl:1: expected a JSON object"),
        (
            ['{"id": "x", "question": "a", "answer": "b"}', '{"id": "x", "question": "c", "answer": "d"}'],
            r"bad.jsonl:2: field 'id': duplicate",
        ),
        (['{"question": "a", "choices": ["x", "y"], "correct": 2}'], r"bad.jsonl:1: field 'correct'"),
        (
            ['{"question": "a", "choices": ["x", "y"], "correct": 0}', '{"question": "b", "answer": "c"}'],
            r"bad.jsonl:2: field 'choices'",
        ),
    ],
)
def test_malformed_jsonl_names_file_line_and_field(tmp_path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ProxyToolError, match=message) as err:
        load_task(str(path))
    assert "\n" not in str(err.value)


def test_malformed_gsm8k_line(evalsets):
    write_jsonl(evalsets / "gsm8k" / "test.jsonl", [GSM8K_TEST[0], {"question": "q", "answer": "no final"}])
    with pytest.raises(ProxyToolError, match=r"test.jsonl:2: field 'answer'"):
        load_task("gsm8k", few_shot=0)


def test_evalsets_location(evalsets, tmp_path, monkeypatch):
    # data_dir beats $PROXYTOOL_EVALSETS; the task's own subfolder works too.
    monkeypatch.setenv("PROXYTOOL_EVALSETS", str(tmp_path / "nowhere"))
    with pytest.raises(ProxyToolError, match="PROXYTOOL_EVALSETS"):
        load_task("humaneval")
    assert len(load_task("humaneval", data_dir=evalsets).examples) == 2
    assert len(load_task("humaneval", data_dir=evalsets / "humaneval").examples) == 2
    # Default: ../shared/data/evalsets relative to the working directory.
    monkeypatch.delenv("PROXYTOOL_EVALSETS")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    evalsets.rename(tmp_path / "shared" / "data" / "evalsets")
    (tmp_path / "main").mkdir()
    monkeypatch.chdir(tmp_path / "main")
    assert len(load_task("gsm8k", few_shot=0).examples) == 3


def test_unknown_task_lists_the_names(tmp_path):
    with pytest.raises(ProxyToolError, match="unknown task 'gsm9k'.*polls-trained"):
        load_task("gsm9k")
    with pytest.raises(ProxyToolError, match="not found"):
        load_task(str(tmp_path / "missing.jsonl"))
    assert set(TASK_NAMES) == {
        "polls",
        "polls-trained",
        "polls-documents",
        "polls-unseen",
        "polls-dev",
        "gsm8k",
        "truthfulqa-mc",
        "humaneval",
    }


def test_example_defaults():
    ex = Example(id="1", prompt="p", answer="a")
    assert ex.choices is None and ex.correct is None and ex.meta == {}
    assert metrics.POLL_KINDS[:4] == ("leader", "share", "sample_size", "margin")
    assert set(metrics.POLL_KINDS[4:]) == {"dates", "population", "pollster", "place"}
