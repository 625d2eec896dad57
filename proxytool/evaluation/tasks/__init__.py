"""Evaluation tasks: a registry of named tasks, each one module that loads its examples and says how
to score them (a new task is one file plus one ``register`` line here).

Built-in tasks (``load_task(name)``):

* ``polls``, ``polls-trained``, ``polls-documents``, ``polls-unseen``: see :mod:`.polls`.
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

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from proxytool.errors import ProxyToolError
from proxytool.evaluation.tasks.core import Example, Task
from proxytool.evaluation.tasks.gsm8k import GSM8K_FEW_SHOT, gsm8k_answer_text, gsm8k_exemplar, load_gsm8k
from proxytool.evaluation.tasks.humaneval import load_humaneval
from proxytool.evaluation.tasks.polls import load_polls
from proxytool.evaluation.tasks.qa_file import load_qa_file
from proxytool.evaluation.tasks.truthfulqa import load_truthfulqa

__all__ = [
    "Example",
    "GSM8K_FEW_SHOT",
    "REGISTRY",
    "TASK_NAMES",
    "Task",
    "gsm8k_answer_text",
    "gsm8k_exemplar",
    "load_task",
    "register",
]


@dataclass(frozen=True)
class TaskSpec:
    """A built-in task: its name, ``load(data_dir, few_shot) -> Task`` and one line of help."""

    name: str
    load: Callable[[Path | None, int | None], Task]
    help: str


REGISTRY: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> None:
    REGISTRY[spec.name] = spec


register(TaskSpec("polls", partial(load_polls, "polls"), "the three polls splits, scored by split and fact"))
register(TaskSpec("polls-trained", partial(load_polls, "polls-trained"), "trained polls, held-out phrasings"))
register(TaskSpec("polls-documents", partial(load_polls, "polls-documents"), "polls seen only as documents"))
register(TaskSpec("polls-unseen", partial(load_polls, "polls-unseen"), "polls never trained on"))
register(TaskSpec("polls-dev", partial(load_polls, "polls-dev"), "other phrasings of the same facts (choosing alpha)"))
register(TaskSpec("gsm8k", load_gsm8k, "grade-school math, few-shot, final number"))
register(TaskSpec("truthfulqa-mc", load_truthfulqa, "TruthfulQA MC1 by log-likelihood"))
register(TaskSpec("humaneval", load_humaneval, "Python pass@1 (needs --allow-code-execution)"))

TASK_NAMES = tuple(REGISTRY)
"""Built-in task names; anything else passed to :func:`load_task` is a JSONL path."""


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
    if name in REGISTRY:
        task = REGISTRY[name].load(data_dir, few_shot)
    else:
        path = Path(name_or_path)
        if path.is_file():
            task = load_qa_file(path, few_shot)
        elif path.suffix in (".jsonl", ".json", ".gz") or os.sep in name or "/" in name:
            raise ProxyToolError(f"{path} not found")
        else:
            raise ProxyToolError(
                f"unknown task {name!r}: expected one of {', '.join(REGISTRY)}, "
                f"or a path to a JSONL file with 'question' and 'answer'"
            )
    if limit is not None:
        task.examples = task.examples[:limit]
    return task
