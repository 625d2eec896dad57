"""``humaneval``: Python functions from docstrings, run against their tests (only with code execution allowed)."""

from __future__ import annotations

from pathlib import Path

from proxytool.data.jsonl import read_jsonl
from proxytool.errors import ProxyToolError, at
from proxytool.evaluation import metrics
from proxytool.evaluation.tasks.core import (
    Example,
    Task,
    evalset_dir,
    evalset_hint,
    require_file,
    text_field,
    unique_id,
)

HUMANEVAL_STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"]


def _pass_at_1(scores: list[float]) -> float:
    """One greedy sample per problem: pass@1 is the share of problems whose sample passed."""
    return sum(metrics.pass_at_k(1, int(s >= 1.0), 1) for s in scores) / len(scores) if scores else 0.0


def _score_humaneval(example: Example, completion: str) -> float:
    ok = metrics.run_humaneval(
        example.prompt,
        metrics.extract_code(completion),
        example.meta["test"],
        example.meta["entry_point"],
        timeout=example.meta.get("timeout", 5.0),
    )
    return 1.0 if ok else 0.0


def load_humaneval(data_dir: Path | None, few_shot: int | None) -> Task:
    if few_shot:
        raise ProxyToolError("humaneval is zero-shot: few_shot must be 0")
    folder = evalset_dir("humaneval", data_dir)
    path = folder / "HumanEval.jsonl.gz"
    if not path.is_file() and (folder / "HumanEval.jsonl").is_file():
        path = folder / "HumanEval.jsonl"
    require_file(path, evalset_hint(data_dir))
    examples: list[Example] = []
    seen: set[str] = set()
    for line, rec in read_jsonl(path):
        fields = {
            name: text_field(rec, path, line, name)
            for name in ("task_id", "prompt", "canonical_solution", "test", "entry_point")
        }
        if not fields["entry_point"].isidentifier():
            raise ProxyToolError(f"{at(path, line, 'entry_point')}: not a Python identifier")
        examples.append(
            Example(
                id=unique_id(seen, fields["task_id"], path, line),
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
        metric="pass@1 (greedy)",
        aggregator=_pass_at_1,
        runs_code=True,
    )
