"""``polls``: questions about the FiveThirtyEight polls, built by ``proxytool data polls``.

``<data_dir>/eval.jsonl`` (``data_dir`` defaults to ``work/polls``) holds held-out questions about
trained polls, document-only polls and unseen polls, each line tagged with its ``split`` and ``fact``
(the report breaks scores down by both); ``polls-trained`` / ``polls-documents`` / ``polls-unseen``
are the single splits (``eval_<split>.jsonl``); ``polls-dev`` (``eval_dev.jsonl``) asks the same facts
in the evaluation phrasing the others do not use: the held-out set ``--alpha auto`` chooses α on.
The prompt is the line's ``prompt`` (``"Question: ...\nAnswer:"``, the raw format the expert was
trained on); answers are scored by value with :func:`proxytool.evaluation.metrics.polls_score`.
"""

from __future__ import annotations

from pathlib import Path

from proxytool.errors import ProxyToolError, at
from proxytool.evaluation.tasks.core import SHORT_ANSWER_STOP, Task, load_qa_jsonl, require_file, score_qa

DEFAULT_POLLS_DIR = Path("work/polls")
"""Where ``proxytool data polls`` writes its eval files by default (cwd-relative)."""


POLLS_TASKS = {
    "polls": "eval",
    "polls-trained": "eval_trained",
    "polls-documents": "eval_documents",
    "polls-unseen": "eval_unseen",
    "polls-dev": "eval_dev",
}
"""Polls task name -> its file stem in the data folder."""


def load_polls(name: str, data_dir: Path | None, few_shot: int | None) -> Task:
    if few_shot:
        raise ProxyToolError(f"{name} is zero-shot: few_shot must be 0")
    folder = Path(data_dir) if data_dir is not None else DEFAULT_POLLS_DIR
    path = require_file(
        folder / f"{POLLS_TASKS[name]}.jsonl",
        f"run `proxytool data polls --out {folder}` to build the polls eval files",
    )
    kind, examples = load_qa_jsonl(path, require_id=True, require_kind=True)
    if kind != "generate":
        raise ProxyToolError(f"{at(path)}: polls questions have no choices")
    return Task(
        name=name,
        metric="accuracy (answer scored by value)",
        kind="generate",
        examples=examples,
        max_new_tokens=16,
        stop=list(SHORT_ANSWER_STOP),
        source=str(path),
        scorer=score_qa,
    )
