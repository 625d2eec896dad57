"""Any question/answer JSONL file as a task (choices + correct make it a multiple-choice task)."""

from __future__ import annotations

from pathlib import Path

from proxytool.errors import ProxyToolError
from proxytool.evaluation.tasks.core import SHORT_ANSWER_STOP, Task, load_qa_jsonl, score_qa


def load_qa_file(path: Path, few_shot: int | None) -> Task:
    if few_shot:
        raise ProxyToolError(f"{path}: few-shot prompts are only built for gsm8k; few_shot must be 0")
    kind, examples = load_qa_jsonl(path)
    name = path.name.removesuffix(".gz").removesuffix(".jsonl")
    if kind == "choice":
        return Task(
            name=name,
            kind="choice",
            examples=examples,
            max_new_tokens=0,
            stop=[],
            source=str(path),
            metric="choice accuracy (log-likelihood)",
        )
    return Task(
        name=name,
        kind="generate",
        examples=examples,
        max_new_tokens=64,
        stop=list(SHORT_ANSWER_STOP),
        source=str(path),
        scorer=score_qa,
    )
