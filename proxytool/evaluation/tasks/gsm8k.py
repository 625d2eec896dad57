"""``gsm8k``: grade-school math, few-shot from the train split, scored by the final number."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from proxytool.data.gsm8k import gsm8k_answer_text, gsm8k_final_answer
from proxytool.data.jsonl import read_jsonl
from proxytool.errors import ProxyToolError, at
from proxytool.evaluation import metrics
from proxytool.evaluation.tasks.core import Example, Task, evalset_dir, evalset_hint, require_file, text_field

GSM8K_FEW_SHOT = 2
"""Worked train examples in front of each GSM8K question unless ``few_shot`` says otherwise."""
GSM8K_STOP = ["\n\nQuestion:", "\n\n\n"]


def _score_gsm8k(example: Example, completion: str) -> float:
    return metrics.gsm8k_score(completion, example.answer)


def gsm8k_exemplar(question: str, solution: str) -> str:
    """One worked GSM8K example for a few-shot prefix (ends with a blank line).

    Args:
        question: The problem.
        solution: The dataset's answer field (reasoning lines, then ``#### N``).

    Returns:
        ``"Question: ...\\nAnswer: <reasoning without <<calc>> annotations> The answer is N.\\n\\n"``.
    """
    return f"Question: {question.strip()}\nAnswer: {gsm8k_answer_text(solution)}\n\n"


def _gsm8k_rows(path: Path, limit: int | None = None) -> Iterator[tuple[int, str, str]]:
    count = 0
    for line, rec in read_jsonl(path):
        if limit is not None and count >= limit:
            return
        question = text_field(rec, path, line, "question")
        solution = text_field(rec, path, line, "answer")
        if "####" not in solution or not metrics.is_number(solution.split("####", 1)[1].strip()):
            raise ProxyToolError(f"{at(path, line, 'answer')}: expected a solution ending in '#### <number>'")
        count += 1
        yield line, question, solution


def load_gsm8k(data_dir: Path | None, few_shot: int | None) -> Task:
    few_shot = GSM8K_FEW_SHOT if few_shot is None else few_shot
    folder = evalset_dir("gsm8k", data_dir)
    test = require_file(folder / "test.jsonl", evalset_hint(data_dir))
    prefix = ""
    if few_shot:
        train = require_file(folder / "train.jsonl", evalset_hint(data_dir))
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
        metric="accuracy (final number)",
    )
