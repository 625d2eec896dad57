"""α from data: choose the steering weight on held-out dev questions (``proxytool eval --alpha auto``).

The sweep runs the base alone and the proxy at each α of a grid on a dev task (for the polls, the
evaluation phrasing the reported questions do not use: ``polls-dev``); the best α is stored with the
expert (``alpha.json``, :data:`proxytool.models.checkpoint.ALPHA_FILE`) so that decode, chat and serve
steer with it when ``--alpha`` is not given. When no α beats the base alone, steering hurts on this
task: the record says so and eval warns in one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from proxytool.evaluation.report import BASE, Report
from proxytool.models.checkpoint import write_calibration
from proxytool.models.registry import ModelSpec

AUTO_GRID = (0.5, 1.0, 1.5, 2.0, 3.0)
"""The α values ``--alpha auto`` tries (``--alpha auto:0.25,0.5,1`` names others)."""
DEV_TASKS = {
    "polls": "polls-dev",
    "polls-trained": "polls-dev",
    "polls-documents": "polls-dev",
    "polls-unseen": "polls-dev",
}
"""A task's own held-out dev task, used when ``--dev-task`` is not given."""


@dataclass(frozen=True)
class Choice:
    """The chosen α and what it was chosen from."""

    alpha: float
    score: float
    base_score: float
    junk_rate: float | None

    @property
    def beats_base(self) -> bool:
        return self.score > self.base_score


def choose_alpha(report: Report) -> Choice:
    """The best proxy of a dev sweep: highest score, then lowest junk rate, then the α closest to 1
    (the uncalibrated default), then the smaller α."""
    proxies = [r for r in report.proxies if r.alpha is not None]
    if not proxies:
        raise ValueError("a dev sweep needs at least one proxy system")

    def key(r):
        junk = r.junk_rate if r.junk_rate is not None else 0.0
        return (-r.score, junk, abs(r.alpha - 1.0), r.alpha)

    best = min(proxies, key=key)
    base = report.results.get(BASE)
    return Choice(best.alpha, best.score, base.score if base else float("-inf"), best.junk_rate)


def warning(choice: Choice, dev_task: str) -> str | None:
    """One line when no α beats the base alone on the dev task (steering hurts there), else None."""
    if choice.beats_base:
        return None
    return (
        f"warning: no alpha beats the base alone on {dev_task} (best alpha {choice.alpha:g}: "
        f"{100 * choice.score:.1f}% vs base {100 * choice.base_score:.1f}%): steering does not help this task"
    )


def record(choice: Choice, dev: Report, base: ModelSpec, anti: ModelSpec, plausible: float, command: str) -> dict:
    """What ``alpha.json`` holds (see :data:`proxytool.models.checkpoint.ALPHA_FILE`)."""
    return {
        "alpha": choice.alpha,
        "beats_base": choice.beats_base,
        "base": {"name": base.name, "source": str(base.source)},
        "anti_expert": {"name": anti.name, "source": str(anti.source)},
        "task": dev.task,
        "n": next(iter(dev.results.values())).n if dev.results else 0,
        "plausible": plausible,
        "scores": {name: r.score for name, r in dev.results.items()},
        "junk_rates": {name: r.junk_rate for name, r in dev.results.items()},
        "command": command,
        "created": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def store(expert: ModelSpec, data: dict) -> Path | None:
    """Write ``alpha.json`` next to a local expert's weights; None where the expert is not a local folder
    (a hub id: nothing to write next to)."""
    folder = Path(expert.source)
    if not folder.is_dir():
        return None
    return write_calibration(folder, data)
