"""The evaluation report: per-system results, gap closed, and the files and table that show them."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from proxytool.evaluation import metrics
from proxytool.files.atomic import write_text

BASE, EXPERT, DIRECT, PROXY = "base", "expert", "direct", "proxy"
"""System names used in reports, output files and the gap-closed formula."""
GROUP_KEYS = ("split", "fact")
"""Example tags (polls: ``split`` and ``fact``) that reports break scores down by."""


@dataclass
class SystemResult:
    """How one system did on the task.

    Attributes:
        name: System name (``base``, ``expert``, ``proxy@0.5``, ...).
        score: Mean per-example score (the task's metric, in [0, 1]).
        n: Examples scored.
        seconds: Wall time for generating and scoring.
        outputs: Per-example records (id, prompt, completion, answer, score; choice tasks add
            choices and choice_scores).
        alpha: The steering weight of a proxy system, else None.
    """

    name: str
    score: float
    n: int
    seconds: float
    outputs: list[dict] = field(repr=False)
    alpha: float | None = None

    @property
    def junk_rate(self) -> float | None:
        """The share of answers with junk glued to them (:func:`metrics.junk_in`); None for choice tasks."""
        flags = [r["junk"] for r in self.outputs if "junk" in r]
        return sum(flags) / len(flags) if flags else None


@dataclass
class Report:
    """Scores of every system on one task, and the settings that produced them.

    Attributes:
        task: Task name.
        metric: What the score measures (e.g. ``"pass@1"``).
        results: Results by system name, in the order they ran.
        meta: Resolved settings merged into report.json (models, alphas, decoding options, ...).
    """

    task: str
    metric: str
    results: dict[str, SystemResult]
    meta: dict = field(default_factory=dict)

    @property
    def target(self) -> str | None:
        """The system gap closed is measured against: ``direct`` if it ran, else ``expert``."""
        return next((name for name in (DIRECT, EXPERT) if name in self.results), None)

    @property
    def proxies(self) -> list[SystemResult]:
        """The proxy-tuned results (one per alpha), in run order."""
        return [r for name, r in self.results.items() if is_proxy(name)]

    def gap_closed(self) -> dict[str, float | None]:
        """``(proxy - base) / (target - base)`` per proxy system (None: no base/target, or no gap)."""
        base, target = self.results.get(BASE), self.results.get(self.target) if self.target else None
        if base is None or target is None:
            return {r.name: None for r in self.proxies}
        return {r.name: metrics.gap_closed(base.score, r.score, target.score) for r in self.proxies}

    def breakdown(self, key: str, value: str = "score") -> dict[str, dict[str, float]]:
        """Mean of ``value`` (``score``, or ``junk``) per value of a per-example tag (``split``, ``fact``):
        ``{group: {system: mean}}``.

        Empty when the examples carry no such tag. Groups keep their first-seen order.
        """
        table: dict[str, dict[str, float]] = {}
        for name, result in self.results.items():
            groups: dict[str, list[float]] = {}
            for record in result.outputs:
                if key in record and value in record:
                    groups.setdefault(str(record[key]), []).append(float(record[value]))
            for group, scores in groups.items():
                table.setdefault(group, {})[name] = sum(scores) / len(scores)
        return table

    def breakdown_gap_closed(self, key: str) -> dict[str, dict[str, float | None]]:
        """Gap closed per group of :meth:`breakdown`: ``{group: {proxy system: gap}}``."""
        out = {}
        for group, scores in self.breakdown(key).items():
            base, target = scores.get(BASE), scores.get(self.target) if self.target else None
            out[group] = {
                r.name: None if base is None or target is None else metrics.gap_closed(base, scores[r.name], target)
                for r in self.proxies
                if r.name in scores
            }
        return out

    def to_json(self) -> dict:
        """Everything but the per-example outputs, as a JSON-friendly dict (report.json)."""
        gaps = self.gap_closed()
        by = {
            f"by_{key}": {
                "score": self.breakdown(key),
                "gap_closed": self.breakdown_gap_closed(key),
                "junk_rate": self.breakdown(key, "junk"),
            }
            for key in GROUP_KEYS
            if self.breakdown(key)
        }
        systems = {
            name: {
                "score": r.score,
                "junk_rate": r.junk_rate,
                "n": r.n,
                "seconds": round(r.seconds, 3),
                "alpha": r.alpha,
            }
            for name, r in self.results.items()
        }
        sweep = [
            {"alpha": r.alpha, "system": r.name, "score": r.score, "gap_closed": gaps[r.name]} for r in self.proxies
        ]
        return {
            "task": self.task,
            "metric": self.metric,
            "target": self.target,
            "systems": systems,
            "gap_closed": gaps,
            "sweep": sweep,
            **by,
            **self.meta,
        }


def is_proxy(name: str) -> bool:
    """True for proxy system names (``proxy`` or ``proxy@<alpha>``)."""
    return name == PROXY or name.startswith(PROXY + "@")


def proxy_name(alpha: float, sweep: bool) -> str:
    """``proxy`` for a single alpha, ``proxy@<alpha>`` in a sweep (``proxy@0.5``, ``proxy@2``)."""
    if not sweep:
        return PROXY
    short = f"{alpha:g}"
    return f"{PROXY}@{short if float(short) == alpha else repr(alpha)}"


def table_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """The summary table (headers, rows) shared by the terminal and report.md."""
    gaps = report.gap_closed()
    junk = any(r.junk_rate is not None for r in report.results.values())
    headers = ["system", "alpha", "n", "score (%)"] + (["junk (%)"] if junk else []) + ["gap closed", "seconds"]
    rows = []
    for name, r in report.results.items():
        gap = "" if not is_proxy(name) else ("n/a" if gaps.get(name) is None else f"{100 * gaps[name]:.1f}%")
        row = [name, "" if r.alpha is None else f"{r.alpha:g}", str(r.n), f"{100 * r.score:.1f}"]
        if junk:
            row.append("" if r.junk_rate is None else f"{100 * r.junk_rate:.1f}")
        rows.append(row + [gap, f"{r.seconds:.1f}"])
    return headers, rows


def models_note(report: Report) -> str:
    """One line naming the models of each role."""
    models = report.meta.get("models", {})
    return "; ".join(f"{role.replace('_', '-')}: {spec['name']}" for role, spec in models.items())


def target_note(report: Report) -> str:
    """One line saying what gap closed is measured against."""
    target = report.target
    name = report.meta.get("models", {}).get(target, {}).get("name", "")
    why = "the directly tuned model" if target == DIRECT else "the expert, as no --direct was given"
    return f"gap closed = (proxy - base) / (target - base); target = {target} ({name}): {why}"


def markdown(report: Report, command: str = "") -> str:
    """report.md: title, the table, the models, what the target is, and the command."""
    headers, rows = table_rows(report)
    lines = [
        f"# {report.task}: {report.metric}",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [
        "",
        f"Models: {models_note(report)}.",
        "",
        target_note(report) + ".",
        "",
        "Greedy decoding for every system; score = " + report.metric + ".",
        "",
    ]
    lines += calibration_lines(report.meta.get("calibration"))
    for key in GROUP_KEYS:
        lines += breakdown_lines(report, key)
    if len(report.proxies) > 1:
        lines += ["![score vs alpha](alpha_sweep.png)", ""]
    if command:
        lines += ["Command:", "", "```", command, "```", ""]
    return "\n".join(lines)


def calibration_lines(calibration: dict | None) -> list[str]:
    """report.md's paragraph on how ``--alpha auto`` chose α (nothing without one)."""
    if not calibration:
        return []
    scores = ", ".join(f"{name} {100 * score:.1f}%" for name, score in calibration["scores"].items())
    where = calibration.get("stored") or "not stored (the expert is not a local folder)"
    lines = [
        f"Alpha {calibration['alpha']:g} was chosen on {calibration['task']} ({calibration['n']} held-out "
        f"questions; dev/report.md): {scores}. Stored in {where}.",
        "",
    ]
    if calibration.get("warning"):
        lines += [f"**{calibration['warning']}**", ""]
    return lines


BREAKDOWN_TITLES = {"split": "By split", "fact": "By question type (fact)"}


def breakdown_rows(report: Report, key: str) -> tuple[list[str], list[list[str]]]:
    """Per ``key`` group: the count, each system's score (%), gap closed (%) per proxy and each system's
    junk rate (%) where answers were checked for junk; empty when no example carries ``key``."""
    table = report.breakdown(key)
    if not table:
        return [], []
    gaps = report.breakdown_gap_closed(key)
    junk = report.breakdown(key, "junk")
    systems = list(report.results)
    proxies = [r.name for r in report.proxies]
    checked = [s for s in systems if any(s in by for by in junk.values())]
    headers = [key, "n"] + systems + [f"gap {p}" for p in proxies] + [f"junk {s}" for s in checked]
    counts: dict[str, int] = {}
    for record in next(iter(report.results.values())).outputs:
        if key in record:
            counts[str(record[key])] = counts.get(str(record[key]), 0) + 1
    rows = []
    for group, scores in table.items():
        cells = [group, str(counts.get(group, ""))]
        cells += [f"{100 * scores[s]:.1f}" if s in scores else "" for s in systems]
        cells += [("n/a" if gaps[group].get(p) is None else f"{100 * gaps[group][p]:.0f}") for p in proxies]
        cells += [f"{100 * junk[group][s]:.1f}" if s in junk.get(group, {}) else "" for s in checked]
        rows.append(cells)
    return headers, rows


def breakdown_lines(report: Report, key: str) -> list[str]:
    """A markdown table of :func:`breakdown_rows`."""
    headers, rows = breakdown_rows(report, key)
    if not rows:
        return []
    title = BREAKDOWN_TITLES.get(key, f"By {key}")
    lines = [f"{title} (score %, gap closed %, junk %):", "", "| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return lines + [""]


def write_report(report: Report, folder: Path, command: str = "") -> None:
    """Write report.json, report.md, outputs/<system>.jsonl and (for a sweep) alpha_sweep.png."""
    folder = Path(folder)
    for name, result in report.results.items():
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.outputs)
        write_text(folder / "outputs" / f"{name}.jsonl", lines)
    if len(report.proxies) > 1:
        plot_sweep(report, folder / "alpha_sweep.png")
    write_text(folder / "report.md", markdown(report, command))
    write_text(folder / "report.json", json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")


def plot_sweep(report: Report, path: Path) -> None:
    """Score vs alpha for the proxy, with horizontal lines for base, expert and direct (Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = sorted((r.alpha, 100 * r.score) for r in report.proxies if r.alpha is not None)
    ax.plot([a for a, _ in points], [s for _, s in points], marker="o", color="C0", label="proxy-tuned")
    lines = (
        (BASE, ":", "gray", "base alone"),
        (EXPERT, "--", "C1", "expert alone"),
        (DIRECT, "-.", "C2", "directly tuned"),
    )
    for name, style, color, label in lines:
        if name in report.results:
            ax.axhline(100 * report.results[name].score, linestyle=style, color=color, label=label)
    ax.set_xlabel("alpha")
    ax.set_ylabel(f"{report.metric} (%)")
    ax.set_title(f"{report.task}: score vs alpha")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            fig.savefig(f, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
