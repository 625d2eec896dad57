"""Evaluation tasks: load examples from disk and score completions.

Built-in tasks (``load_task(name)``):

* ``polls``: ``<data_dir>/eval.jsonl`` written by ``proxytool data polls`` (``data_dir`` defaults to
  ``work/polls``): held-out questions about trained polls, document-only polls and unseen polls,
  each line tagged with its ``split`` and ``fact`` (the report breaks scores down by both).
  ``polls-trained`` / ``polls-documents`` / ``polls-unseen`` are the single splits
  (``eval_<split>.jsonl``). The prompt is the line's ``prompt`` (``"Question: ...\nAnswer:"``, the
  raw format the expert was trained on); answers are scored by value with
  :func:`proxytool.evaluation.metrics.polls_score`.
* ``gsm8k``: the test split. Prompt ``"Question: <q>\\nAnswer:"``, preceded by ``few_shot`` worked
  examples (default :data:`GSM8K_FEW_SHOT` = 2) taken from the start of the *train* split, written
  chain-of-thought style with the calculator annotations (``<<48/2=24>>``) removed and the
  ``#### N`` line turned into ``The answer is N.``; examples are separated by a blank line, which is
  why generation stops at ``"\\n\\nQuestion:"``. Two shots show base and chat models alike the
  format that :func:`proxytool.evaluation.metrics.gsm8k_final_number` reads, for about 250 extra prompt tokens.
* ``truthfulqa-mc``: MC1 from ``truthfulqa/mc_task.json`` (choices in file order, the one correct
  index), zero-shot prompt ``"Q: <question>\\nA:"``; each choice is scored as the continuation
  ``" " + choice`` (see :meth:`Task.continuations`). Entries without ``mc1_targets``, or a missing
  ``mc_task.json``, fall back to ``TruthfulQA.csv`` (best answer + incorrect answers).
* ``humaneval``: prompt = signature + docstring; the completion is appended to the prompt and run
  against the task's ``test`` and ``check(entry_point)`` (:func:`proxytool.evaluation.metrics.run_humaneval`).

Any other argument is a path to a JSONL file (``.jsonl`` or ``.jsonl.gz``) with ``question`` and
``answer`` (optional ``id``; optional ``kind``, scored like a poll question when it is a poll kind;
optional ``choices`` + ``correct`` making it a choice task). The evalsets folder is
``$PROXYTOOL_EVALSETS`` or ``../shared/data/evalsets`` relative to the working directory.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from proxytool.data.jsonl import read_jsonl  # noqa: F401  (part of this module's API)
from proxytool.errors import ProxyToolError, at
from proxytool.evaluation import metrics

EVALSETS_ENV = "PROXYTOOL_EVALSETS"
"""Environment variable naming the evalsets folder (holding gsm8k/, humaneval/, truthfulqa/)."""
DEFAULT_EVALSETS = Path("../shared/data/evalsets")
"""Evalsets folder used when neither ``data_dir`` nor ``$PROXYTOOL_EVALSETS`` is given (cwd-relative)."""
DEFAULT_POLLS_DIR = Path("work/polls")
"""Where ``proxytool data polls`` writes its eval files by default (cwd-relative)."""
POLLS_TASKS = {"polls": "eval", "polls-trained": "eval_trained", "polls-documents": "eval_documents"}
POLLS_TASKS["polls-unseen"] = "eval_unseen"
"""Polls task name -> its file stem in the data folder."""
TASK_NAMES = (*POLLS_TASKS, "gsm8k", "truthfulqa-mc", "humaneval")
"""Built-in task names; anything else passed to :func:`load_task` is a JSONL path."""
GSM8K_FEW_SHOT = 2
"""Worked train examples in front of each GSM8K question unless ``few_shot`` says otherwise."""

HUMANEVAL_STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"]
GSM8K_STOP = ["\n\nQuestion:", "\n\n\n"]
SHORT_ANSWER_STOP = ["\n"]


@dataclass
class Example:
    """One evaluation item.

    Attributes:
        id: Stable identifier (dataset id, or derived from the file position).
        prompt: What the model is asked (plain text; callers may wrap it in a chat template).
        answer: Reference answer in string form (for choice tasks, the correct choice).
        choices: Multiple-choice options (choice tasks only).
        correct: Indices of the correct choices (MC1: exactly one).
        meta: Task-specific extras, e.g. HumanEval ``test``/``entry_point``, polls ``kind``, and
            the raw ``question``.
    """

    id: str
    prompt: str
    answer: str
    choices: list[str] | None = None
    correct: list[int] | None = None
    meta: dict = field(default_factory=dict)


def _score_qa(example: Example, completion: str) -> float:
    kind = example.meta.get("kind")
    if kind in metrics.POLL_KINDS:
        return metrics.polls_score(completion, example.answer, kind, example.meta.get("candidates"))
    return metrics.qa_score(completion, example.answer)


def _score_gsm8k(example: Example, completion: str) -> float:
    return metrics.gsm8k_score(completion, example.answer)


def _score_humaneval(example: Example, completion: str) -> float:
    ok = metrics.run_humaneval(
        example.prompt,
        metrics.extract_code(completion),
        example.meta["test"],
        example.meta["entry_point"],
        timeout=example.meta.get("timeout", 5.0),
    )
    return 1.0 if ok else 0.0


@dataclass
class Task:
    """A named list of examples plus how to generate for and score them.

    Attributes:
        name: Task name (built-in name, or the JSONL file's stem).
        kind: ``"generate"`` (score a completion with :meth:`score`) or ``"choice"`` (score each
            choice by log-likelihood of :meth:`continuations` after the prompt, then
            :meth:`score_choices`).
        examples: The examples, in file order.
        max_new_tokens: Default generation budget (0 for choice tasks).
        stop: Stop strings for generation.
        source: The file(s) the examples came from.
        scorer: ``(example, completion) -> score``; used by :meth:`score`.
    """

    name: str
    kind: str
    examples: list[Example]
    max_new_tokens: int
    stop: list[str]
    source: str = ""
    scorer: Callable[[Example, str], float] = field(default=_score_qa, repr=False, compare=False)

    def score(self, example: Example, completion: str) -> float:
        """Score one completion (generate tasks).

        Args:
            example: The example the completion answers.
            completion: Generated text (without the prompt), already cut at a stop string.

        Returns:
            A score in [0, 1].

        Raises:
            ValueError: For choice tasks (use :meth:`score_choices`).
        """
        if self.kind != "generate":
            raise ValueError(f"task {self.name} is a choice task: use score_choices()")
        return self.scorer(example, completion)

    def continuations(self, example: Example) -> list[str]:
        """The texts to score after ``example.prompt``, one per choice (``" " + choice``)."""
        return [" " + c for c in (example.choices or [])]

    def score_choices(self, example: Example, scores: list[float]) -> float:
        """Score a choice example from one score per choice (see :func:`metrics.choice_accuracy`)."""
        return metrics.choice_accuracy(scores, example.correct or [])


# --------------------------------------------------------------------------- file reading


def _text(rec: dict, path: Path, line: int, name: str, *, numbers: bool = False, required: bool = True) -> str | None:
    """A string field (numbers allowed and stringified where ``numbers``)."""
    if name not in rec or rec[name] is None:
        if required:
            raise ProxyToolError(f"{at(path, line, name)}: missing")
        return None
    value = rec[name]
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        kind = "a string or number" if numbers else "a string"
        raise ProxyToolError(f"{at(path, line, name)}: expected {kind}, got {type(value).__name__}")
    if required and not value.strip():
        raise ProxyToolError(f"{at(path, line, name)}: empty")
    return value


def _unique_id(seen: set[str], ex_id: str, path: Path, line: int) -> str:
    if ex_id in seen:
        raise ProxyToolError(f"{at(path, line, 'id')}: duplicate id {ex_id!r}")
    seen.add(ex_id)
    return ex_id


def _require_file(path: Path, hint: str) -> Path:
    if not path.is_file():
        raise ProxyToolError(f"{path} not found: {hint}")
    return path


def _evalset_dir(sub: str, data_dir: Path | None) -> Path:
    """The folder holding one evalset: ``<evalsets>/<sub>``, or ``data_dir`` itself if it is that folder."""
    root = Path(data_dir) if data_dir is not None else Path(os.environ.get(EVALSETS_ENV) or DEFAULT_EVALSETS)
    if (root / sub).is_dir() or not root.is_dir():
        return root / sub
    return root


def _evalset_hint(data_dir: Path | None) -> str:
    if data_dir is not None:
        return "data_dir should be the evalsets folder (holding gsm8k/, humaneval/, truthfulqa/)"
    return (
        f"set {EVALSETS_ENV} to the evalsets folder (holding gsm8k/, humaneval/, truthfulqa/); "
        f"default {DEFAULT_EVALSETS} relative to the working directory"
    )


# --------------------------------------------------------------------------- task loaders


def _load_qa_jsonl(path: Path, *, require_id: bool = False, require_kind: bool = False) -> tuple[str, list[Example]]:
    """Examples from a question/answer JSONL; returns (task kind, examples)."""
    examples: list[Example] = []
    seen: set[str] = set()
    task_kind = None
    for line, rec in read_jsonl(path):
        question = _text(rec, path, line, "question")
        ex_id = _text(rec, path, line, "id", numbers=True, required=require_id)
        ex_id = _unique_id(seen, ex_id if ex_id is not None else str(line), path, line)
        kind = _text(rec, path, line, "kind", required=require_kind)
        if require_kind and kind not in metrics.POLL_KINDS:
            raise ProxyToolError(
                f"{at(path, line, 'kind')}: expected one of {', '.join(metrics.POLL_KINDS)}, got {kind!r}"
            )
        choices, correct = _choices(rec, path, line)
        this_kind = "choice" if choices is not None else "generate"
        if task_kind is None:
            task_kind = this_kind
        elif this_kind != task_kind:
            raise ProxyToolError(
                f"{at(path, line, 'choices')}: every line must have choices, or none "
                f"(the first line {'has' if task_kind == 'choice' else 'has none'})"
            )
        answer = _text(rec, path, line, "answer", numbers=True, required=choices is None)
        if answer is None:
            answer = choices[correct[0]]
        prompt = _text(rec, path, line, "prompt", required=False) or question
        meta = {k: v for k, v in rec.items() if k not in ("id", "question", "prompt", "answer", "choices", "correct")}
        meta["question"] = question
        examples.append(Example(id=ex_id, prompt=prompt, answer=answer, choices=choices, correct=correct, meta=meta))
    if not examples:
        raise ProxyToolError(f"{at(path)}: no examples")
    return task_kind or "generate", examples


def _choices(rec: dict, path: Path, line: int) -> tuple[list[str] | None, list[int] | None]:
    has_choices, has_correct = rec.get("choices") is not None, rec.get("correct") is not None
    if not has_choices and not has_correct:
        return None, None
    if not has_choices:
        raise ProxyToolError(f"{at(path, line, 'choices')}: missing ('correct' needs 'choices')")
    if not has_correct:
        raise ProxyToolError(f"{at(path, line, 'correct')}: missing ('choices' needs 'correct')")
    choices = rec["choices"]
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
        raise ProxyToolError(f"{at(path, line, 'choices')}: expected a list of at least 2 non-empty strings")
    correct = rec["correct"]
    correct = [correct] if isinstance(correct, int) and not isinstance(correct, bool) else correct
    if (
        not isinstance(correct, list)
        or not correct
        or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(choices) for i in correct)
    ):
        raise ProxyToolError(
            f"{at(path, line, 'correct')}: expected a choice index or a non-empty list "
            f"of indices in 0..{len(choices) - 1}"
        )
    return list(choices), sorted(set(correct))


def _load_polls(name: str, data_dir: Path | None) -> Task:
    folder = Path(data_dir) if data_dir is not None else DEFAULT_POLLS_DIR
    path = _require_file(
        folder / f"{POLLS_TASKS[name]}.jsonl",
        f"run `proxytool data polls --out {folder}` to build the polls eval files",
    )
    kind, examples = _load_qa_jsonl(path, require_id=True, require_kind=True)
    if kind != "generate":
        raise ProxyToolError(f"{at(path)}: polls questions have no choices")
    return Task(
        name=name,
        kind="generate",
        examples=examples,
        max_new_tokens=16,
        stop=list(SHORT_ANSWER_STOP),
        source=str(path),
        scorer=_score_qa,
    )


_CALC = re.compile(r"<<[^<>]*>>")


def gsm8k_final_answer(solution: str) -> str:
    """The reference number of a GSM8K solution, without thousands commas (``"#### 2,125"`` -> ``"2125"``)."""
    return solution.split("####", 1)[1].strip().replace(",", "")


def gsm8k_exemplar(question: str, solution: str) -> str:
    """One worked GSM8K example for a few-shot prefix (ends with a blank line).

    Args:
        question: The problem.
        solution: The dataset's answer field (reasoning lines, then ``#### N``).

    Returns:
        ``"Question: ...\\nAnswer: <reasoning without <<calc>> annotations> The answer is N.\\n\\n"``.
    """
    return f"Question: {question.strip()}\nAnswer: {gsm8k_answer_text(solution)}\n\n"


def gsm8k_answer_text(solution: str) -> str:
    """A GSM8K solution in the few-shot style: reasoning without ``<<calc>>``, then "The answer is N."."""
    reasoning = _CALC.sub("", solution.split("####", 1)[0]).strip()
    reasoning = re.sub(r"\n\s*\n+", "\n", reasoning)  # a blank line would look like a new example
    return f"{reasoning}\nThe answer is {gsm8k_final_answer(solution)}."


def _gsm8k_rows(path: Path, limit: int | None = None) -> Iterator[tuple[int, str, str]]:
    count = 0
    for line, rec in read_jsonl(path):
        if limit is not None and count >= limit:
            return
        question = _text(rec, path, line, "question")
        solution = _text(rec, path, line, "answer")
        if "####" not in solution or not metrics.is_number(solution.split("####", 1)[1].strip()):
            raise ProxyToolError(f"{at(path, line, 'answer')}: expected a solution ending in '#### <number>'")
        count += 1
        yield line, question, solution


def _load_gsm8k(data_dir: Path | None, few_shot: int) -> Task:
    folder = _evalset_dir("gsm8k", data_dir)
    test = _require_file(folder / "test.jsonl", _evalset_hint(data_dir))
    prefix = ""
    if few_shot:
        train = _require_file(folder / "train.jsonl", _evalset_hint(data_dir))
        shots = list(_gsm8k_rows(train, few_shot))
        if len(shots) < few_shot:
            raise ProxyToolError(f"{at(train)}: only {len(shots)} examples, few_shot={few_shot} asked for")
        prefix = "".join(gsm8k_exemplar(q, s) for _, q, s in shots)
    examples = [
        Example(
            id=f"gsm8k-{i}",
            prompt=f"{prefix}Question: {q.strip()}\nAnswer:",
            answer=gsm8k_final_answer(s),
            meta={"question": q, "solution": s, "few_shot": few_shot},
        )
        for i, (_, q, s) in enumerate(_gsm8k_rows(test))
    ]
    if not examples:
        raise ProxyToolError(f"{at(test)}: no examples")
    return Task(
        name="gsm8k",
        kind="generate",
        examples=examples,
        max_new_tokens=256,
        stop=list(GSM8K_STOP),
        source=str(test),
        scorer=_score_gsm8k,
    )


def _truthfulqa_csv(path: Path) -> dict[str, dict]:
    """TruthfulQA.csv rows by question (empty if the file is absent)."""
    if not path.is_file():
        return {}
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = {"Question", "Best Answer", "Incorrect Answers"} - set(reader.fieldnames or [])
            if missing:
                raise ProxyToolError(f"{at(path, 1, sorted(missing)[0])}: missing column")
            return {row["Question"].strip(): {**row, "_line": reader.line_num} for row in reader}
    except (UnicodeDecodeError, csv.Error) as err:
        raise ProxyToolError(f"{at(path)}: cannot read ({err})") from None


def _split_answers(cell: str) -> list[str]:
    return [a.strip() for a in (cell or "").split(";") if a.strip()]


def _mc1_from_csv(row: dict, path: Path) -> tuple[list[str], list[int]]:
    best = (row.get("Best Answer") or "").strip()
    if not best:
        raise ProxyToolError(f"{at(path, row['_line'], 'Best Answer')}: empty")
    wrong = [a for a in _split_answers(row.get("Incorrect Answers", "")) if a != best]
    if not wrong:
        raise ProxyToolError(f"{at(path, row['_line'], 'Incorrect Answers')}: empty")
    return [best] + list(dict.fromkeys(wrong)), [0]


def _targets(entry: dict, name: str, where: str) -> tuple[list[str], list[int]] | None:
    targets = entry.get(name)
    if targets is None:
        return None
    if (
        not isinstance(targets, dict)
        or len(targets) < 2
        or not all(isinstance(k, str) and v in (0, 1) and not isinstance(v, float) for k, v in targets.items())
    ):
        raise ProxyToolError(f"{where}: field '{name}': expected an object of at least 2 choices mapped to 0 or 1")
    choices = list(targets)
    return choices, [i for i, c in enumerate(choices) if targets[c] == 1]


def _load_truthfulqa(data_dir: Path | None, few_shot: int) -> Task:
    if few_shot:
        raise ProxyToolError("truthfulqa-mc is zero-shot: few_shot must be 0")
    folder = _evalset_dir("truthfulqa", data_dir)
    mc_path, csv_path = folder / "mc_task.json", folder / "TruthfulQA.csv"
    rows = _truthfulqa_csv(csv_path)
    if mc_path.is_file():
        try:
            with open(mc_path, encoding="utf-8") as f:
                entries = json.load(f)
        except json.JSONDecodeError as err:
            raise ProxyToolError(f"{at(mc_path, err.lineno)}: invalid JSON ({err.msg})") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ProxyToolError(f"{at(mc_path)}: cannot read ({err})") from None
        if not isinstance(entries, list):
            raise ProxyToolError(f"{at(mc_path)}: expected a JSON list of questions")
        source = str(mc_path)
    elif rows:
        entries = [{"question": q} for q in rows]
        source = str(csv_path)
    else:
        raise ProxyToolError(f"{mc_path} not found (nor {csv_path.name}): {_evalset_hint(data_dir)}")
    examples = []
    for i, entry in enumerate(entries):
        where = f"{mc_path}: entry {i}"
        question = entry.get("question") if isinstance(entry, dict) else None
        if not isinstance(question, str) or not question.strip():
            raise ProxyToolError(f"{where}: field 'question': expected a non-empty string")
        question = question.strip()
        row = rows.get(question)
        mc1 = _targets(entry, "mc1_targets", where)
        if mc1 is None:
            if row is None:
                raise ProxyToolError(
                    f"{where}: field 'mc1_targets': missing, and {csv_path.name} has no row for this question"
                )
            mc1 = _mc1_from_csv(row, csv_path)
        choices, correct = mc1
        if len(correct) != 1:
            raise ProxyToolError(
                f"{where}: field 'mc1_targets': expected exactly one correct choice, got {len(correct)}"
            )
        meta: dict = {"question": question}
        mc2 = _targets(entry, "mc2_targets", where)
        if mc2 is not None:
            meta["mc2_choices"], meta["mc2_correct"] = mc2
        if row is not None:
            meta.update(
                type=row.get("Type", ""),
                category=row.get("Category", ""),
                best_answer=row.get("Best Answer", ""),
                source=row.get("Source", ""),
            )
        examples.append(
            Example(
                id=f"truthfulqa-{i}",
                prompt=f"Q: {question}\nA:",
                answer=choices[correct[0]],
                choices=choices,
                correct=correct,
                meta=meta,
            )
        )
    if not examples:
        raise ProxyToolError(f"{source}: no examples")
    return Task(name="truthfulqa-mc", kind="choice", examples=examples, max_new_tokens=0, stop=[], source=source)


def _load_humaneval(data_dir: Path | None, few_shot: int) -> Task:
    if few_shot:
        raise ProxyToolError("humaneval is zero-shot: few_shot must be 0")
    folder = _evalset_dir("humaneval", data_dir)
    path = folder / "HumanEval.jsonl.gz"
    if not path.is_file() and (folder / "HumanEval.jsonl").is_file():
        path = folder / "HumanEval.jsonl"
    _require_file(path, _evalset_hint(data_dir))
    examples: list[Example] = []
    seen: set[str] = set()
    for line, rec in read_jsonl(path):
        fields = {
            name: _text(rec, path, line, name)
            for name in ("task_id", "prompt", "canonical_solution", "test", "entry_point")
        }
        if not fields["entry_point"].isidentifier():
            raise ProxyToolError(f"{at(path, line, 'entry_point')}: not a Python identifier")
        examples.append(
            Example(
                id=_unique_id(seen, fields["task_id"], path, line),
                prompt=fields["prompt"],
                answer=fields["canonical_solution"],
                meta={"test": fields["test"], "entry_point": fields["entry_point"], "timeout": 5.0},
            )
        )
    if not examples:
        raise ProxyToolError(f"{at(path)}: no examples")
    return Task(
        name="humaneval",
        kind="generate",
        examples=examples,
        max_new_tokens=384,
        stop=list(HUMANEVAL_STOP),
        source=str(path),
        scorer=_score_humaneval,
    )


def _load_jsonl_task(path: Path, few_shot: int) -> Task:
    if few_shot:
        raise ProxyToolError(f"{path}: few-shot prompts are only built for gsm8k; few_shot must be 0")
    kind, examples = _load_qa_jsonl(path)
    name = path.name.removesuffix(".gz").removesuffix(".jsonl")
    if kind == "choice":
        return Task(name=name, kind="choice", examples=examples, max_new_tokens=0, stop=[], source=str(path))
    return Task(
        name=name,
        kind="generate",
        examples=examples,
        max_new_tokens=64,
        stop=list(SHORT_ANSWER_STOP),
        source=str(path),
        scorer=_score_qa,
    )


def load_task(
    name_or_path: str | Path, limit: int | None = None, data_dir: Path | None = None, few_shot: int | None = None
) -> Task:
    """Load an evaluation task by name, or from a JSONL file.

    Args:
        name_or_path: One of :data:`TASK_NAMES`, or a path to a ``question``/``answer`` JSONL file.
        limit: Keep only the first N examples (file order, so deterministic); None keeps all.
        data_dir: For ``polls*``, the folder with ``eval.jsonl`` and ``eval_<split>.jsonl``
            (default ``work/polls``); for the other built-ins, the evalsets folder (or the task's own
            subfolder), overriding ``$PROXYTOOL_EVALSETS`` and ``../shared/data/evalsets``.
            Ignored for JSONL paths.
        few_shot: Worked examples in front of each prompt. None = the task's default
            (:data:`GSM8K_FEW_SHOT` for gsm8k, 0 elsewhere); only gsm8k accepts more than 0.

    Returns:
        The task.

    Raises:
        ProxyToolError: Unknown task, missing files (the message says how to get them), malformed
            data (the message names ``file:line`` and the field), or bad ``limit``/``few_shot``.
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ProxyToolError(f"limit must be a non-negative integer, got {limit!r}")
    if few_shot is not None and (isinstance(few_shot, bool) or not isinstance(few_shot, int) or few_shot < 0):
        raise ProxyToolError(f"few_shot must be a non-negative integer, got {few_shot!r}")
    name = str(name_or_path)
    if name in POLLS_TASKS:
        if few_shot:
            raise ProxyToolError(f"{name} is zero-shot: few_shot must be 0")
        task = _load_polls(name, data_dir)
    elif name == "gsm8k":
        task = _load_gsm8k(data_dir, GSM8K_FEW_SHOT if few_shot is None else few_shot)
    elif name == "truthfulqa-mc":
        task = _load_truthfulqa(data_dir, few_shot or 0)
    elif name == "humaneval":
        task = _load_humaneval(data_dir, few_shot or 0)
    else:
        path = Path(name_or_path)
        if path.is_file():
            task = _load_jsonl_task(path, few_shot or 0)
        elif path.suffix in (".jsonl", ".json", ".gz") or os.sep in name or "/" in name:
            raise ProxyToolError(f"{path} not found")
        else:
            raise ProxyToolError(
                f"unknown task {name!r}: expected one of {', '.join(TASK_NAMES)}, "
                f"or a path to a JSONL file with 'question' and 'answer'"
            )
    if limit is not None:
        task.examples = task.examples[:limit]
    return task
