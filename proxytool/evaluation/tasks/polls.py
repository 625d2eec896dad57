"""``polls``: questions about the FiveThirtyEight polls, built by ``proxytool data polls``."""

from __future__ import annotations

from pathlib import Path

from proxytool.errors import ProxyToolError, at
from proxytool.evaluation.tasks.core import SHORT_ANSWER_STOP, Task, load_qa_jsonl, require_file, score_qa

DEFAULT_POLLS_DIR = Path("work/polls")
"""Where ``proxytool data polls`` writes its eval files by default (cwd-relative)."""


def load_polls(which: str, data_dir: Path | None, few_shot: int | None) -> Task:
    if few_shot:
        raise ProxyToolError(f"polls-{which} is zero-shot: few_shot must be 0")
    folder = Path(data_dir) if data_dir is not None else DEFAULT_POLLS_DIR
    path = require_file(
        folder / f"eval_{which}.jsonl", f"run `proxytool data polls --out {folder}` to build the polls eval files"
    )
    kind, examples = load_qa_jsonl(path, require_id=True, require_kind=True)
    if kind != "generate":
        raise ProxyToolError(f"{at(path)}: polls questions have no choices")
    return Task(
        name=f"polls-{which}",
        kind="generate",
        examples=examples,
        max_new_tokens=16,
        stop=list(SHORT_ANSWER_STOP),
        source=str(path),
        scorer=score_qa,
    )
