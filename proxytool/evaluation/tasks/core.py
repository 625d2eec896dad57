"""What every task is made of: examples, the Task (loader-made: prompts, budget, scorer, metric,
aggregation) and the readers shared by task files. One task per module beside this one."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from proxytool.data.jsonl import read_jsonl
from proxytool.errors import ProxyToolError, at
from proxytool.evaluation import metrics

EVALSETS_ENV = "PROXYTOOL_EVALSETS"
"""Environment variable naming the evalsets folder (holding gsm8k/, humaneval/, truthfulqa/)."""
DEFAULT_EVALSETS = Path("../shared/data/evalsets")
"""Evalsets folder used when neither ``data_dir`` nor ``$PROXYTOOL_EVALSETS`` is given (cwd-relative)."""

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


def score_qa(example: Example, completion: str) -> float:
    kind = example.meta.get("kind")
    if kind in metrics.POLL_KINDS:
        return metrics.polls_score(completion, example.answer, kind, example.meta.get("candidates"))
    return metrics.qa_score(completion, example.answer)


def mean(scores: list[float]) -> float:
    return sum(scores) / len(scores) if scores else 0.0


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
        metric: What the task's score means (report headers).
        aggregator: Per-example scores -> the task's score (default: the mean).
        runs_code: Scoring executes model-written code, so eval asks for --allow-code-execution.
    """

    name: str
    kind: str
    examples: list[Example]
    max_new_tokens: int
    stop: list[str]
    source: str = ""
    scorer: Callable[[Example, str], float] = field(default=score_qa, repr=False, compare=False)
    metric: str = "accuracy (exact / numeric)"
    runs_code: bool = False  # scoring executes model-written code (needs --allow-code-execution)
    aggregator: Callable[[list[float]], float] = field(default=mean, repr=False, compare=False)

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

    def aggregate(self, scores: list[float]) -> float:
        """The task's score from its per-example scores."""
        return self.aggregator(scores)

    def continuations(self, example: Example) -> list[str]:
        """The texts to score after ``example.prompt``, one per choice (``" " + choice``)."""
        return [" " + c for c in (example.choices or [])]

    def score_choices(self, example: Example, scores: list[float]) -> float:
        """Score a choice example from one score per choice (see :func:`metrics.choice_accuracy`)."""
        return metrics.choice_accuracy(scores, example.correct or [])


# --------------------------------------------------------------------------- file reading


def text_field(
    rec: dict, path: Path, line: int, name: str, *, numbers: bool = False, required: bool = True
) -> str | None:
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


def unique_id(seen: set[str], ex_id: str, path: Path, line: int) -> str:
    if ex_id in seen:
        raise ProxyToolError(f"{at(path, line, 'id')}: duplicate id {ex_id!r}")
    seen.add(ex_id)
    return ex_id


def require_file(path: Path, hint: str) -> Path:
    if not path.is_file():
        raise ProxyToolError(f"{path} not found: {hint}")
    return path


def evalset_dir(sub: str, data_dir: Path | None) -> Path:
    """The folder holding one evalset: ``<evalsets>/<sub>``, or ``data_dir`` itself if it is that folder."""
    root = Path(data_dir) if data_dir is not None else Path(os.environ.get(EVALSETS_ENV) or DEFAULT_EVALSETS)
    if (root / sub).is_dir() or not root.is_dir():
        return root / sub
    return root


def evalset_hint(data_dir: Path | None) -> str:
    if data_dir is not None:
        return "data_dir should be the evalsets folder (holding gsm8k/, humaneval/, truthfulqa/)"
    return (
        f"set {EVALSETS_ENV} to the evalsets folder (holding gsm8k/, humaneval/, truthfulqa/); "
        f"default {DEFAULT_EVALSETS} relative to the working directory"
    )


# --------------------------------------------------------------------------- task loaders


def load_qa_jsonl(path: Path, *, require_id: bool = False, require_kind: bool = False) -> tuple[str, list[Example]]:
    """Examples from a question/answer JSONL; returns (task kind, examples)."""
    examples: list[Example] = []
    seen: set[str] = set()
    task_kind = None
    for line, rec in read_jsonl(path):
        question = text_field(rec, path, line, "question")
        ex_id = text_field(rec, path, line, "id", numbers=True, required=require_id)
        ex_id = unique_id(seen, ex_id if ex_id is not None else str(line), path, line)
        kind = text_field(rec, path, line, "kind", required=require_kind)
        if require_kind and kind not in metrics.POLL_KINDS:
            raise ProxyToolError(
                f"{at(path, line, 'kind')}: expected one of {', '.join(metrics.POLL_KINDS)}, got {kind!r}"
            )
        choices, correct = read_choices(rec, path, line)
        this_kind = "choice" if choices is not None else "generate"
        if task_kind is None:
            task_kind = this_kind
        elif this_kind != task_kind:
            raise ProxyToolError(
                f"{at(path, line, 'choices')}: every line must have choices, or none "
                f"(the first line {'has' if task_kind == 'choice' else 'has none'})"
            )
        answer = text_field(rec, path, line, "answer", numbers=True, required=choices is None)
        if answer is None:
            answer = choices[correct[0]]
        prompt = text_field(rec, path, line, "prompt", required=False) or question
        meta = {k: v for k, v in rec.items() if k not in ("id", "question", "prompt", "answer", "choices", "correct")}
        meta["question"] = question
        examples.append(Example(id=ex_id, prompt=prompt, answer=answer, choices=choices, correct=correct, meta=meta))
    if not examples:
        raise ProxyToolError(f"{at(path)}: no examples")
    return task_kind or "generate", examples


def read_choices(rec: dict, path: Path, line: int) -> tuple[list[str] | None, list[int] | None]:
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
