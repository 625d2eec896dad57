"""The polls scale curve as a table and a plot: one row per run folder of examples/polls_scale.sh.

Each folder (``OUT/n<N>/``) holds ``data/`` (proxytool data polls), ``expert/`` (proxytool train:
proxytool.json), ``eval/`` (proxytool eval --task polls: report.json and outputs/*.jsonl) and
``times.jsonl`` (one line per phase the script ran: wall seconds and the machine, written by
``record`` below). A folder whose eval has not finished is listed as pending, not dropped.

Usage:
    python benchmarks/scale_table.py table runs/scale --output runs/scale/scale.md --plot runs/scale/scale.png
    python benchmarks/scale_table.py record runs/scale/n10 train 1234.5 --threads 2 --attempt fresh
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SPLITS = ("trained", "documents", "unseen")


# --------------------------------------------------------------------------- reading a run folder


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def gap_closed(base: float | None, proxy: float | None, expert: float | None) -> float | None:
    """``(proxy - base) / (expert - base)``: the share of the base-to-expert gap the proxy closes (None: no gap)."""
    if base is None or proxy is None or expert is None or abs(expert - base) < 1e-12:
        return None
    return (proxy - base) / (expert - base)


def answers_with_number(records: list[dict], split: str = "unseen") -> float | None:
    """Share of a split's questions with a numeric reference (shares, margins, sample sizes, dates) that
    the model answered with a number at all: on unseen polls every such number is a guess."""
    from proxytool.evaluation.metrics import first_number

    asked = [r for r in records if r.get("split") == split and first_number(str(r.get("answer", ""))) is not None]
    if not asked:
        return None
    return sum(first_number(str(r.get("completion", ""))) is not None for r in asked) / len(asked)


def _polls_per_split(data: Path) -> dict[str, int]:
    return {s: len({r["poll_id"] for r in _read_jsonl(data / f"eval_{s}.jsonl")}) for s in SPLITS}


def _machine(line: dict) -> str:
    gpu = line.get("gpu") or "no GPU"
    return f"{line.get('cores', '?')} cores (--threads {line.get('threads') or '-'}), {gpu}"


def read_run(folder: Path) -> list[dict]:
    """One row per proxy system (one per alpha) of a run folder; a single row with ``pending`` before eval ends."""
    meta_path = folder / "expert" / "proxytool.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    times = _read_jsonl(folder / "times.jsonl")
    train_lines = [t for t in times if t["phase"] == "train"]
    eval_lines = [t for t in times if t["phase"] == "eval" and t.get("finished", True)]
    tokens = meta.get("data", {}).get("tokens", {})
    common = {
        "folder": folder.name,
        "polls": _polls_per_split(folder / "data"),
        "train_examples": tokens.get("examples"),
        "train_tokens": tokens.get("tokens"),
        "tokens_seen": meta.get("metrics", {}).get("tokens_seen"),
        "steps": meta.get("metrics", {}).get("global_step"),
        "last_loss": meta.get("metrics", {}).get("last_loss"),
        "train_s": sum(t["seconds"] for t in train_lines) if meta else None,
        "train_attempts": len(train_lines),
        "eval_s": eval_lines[-1]["seconds"] if eval_lines else None,
        "machine_train": _machine(train_lines[-1]) if train_lines else None,
        "machine_eval": _machine(eval_lines[-1]) if eval_lines else None,
    }
    report_path = folder / "eval" / "report.json"
    if not report_path.is_file():
        return [{**common, "pending": "expert" if not meta else "eval"}]
    report = json.loads(report_path.read_text(encoding="utf-8"))
    scores = report.get("by_split", {}).get("score", {})
    outputs = {name: _read_jsonl(folder / "eval" / "outputs" / f"{name}.jsonl") for name in report["systems"]}
    rows = []
    for sweep in report["sweep"]:
        proxy = sweep["system"]
        row = {**common, "alpha": sweep["alpha"], "pending": None, "splits": {}}
        for split in SPLITS:
            by = scores.get(split, {})
            base, expert, prox = by.get("base"), by.get("expert"), by.get(proxy)
            row["splits"][split] = {
                "base": base,
                "expert": expert,
                "proxy": prox,
                "gap_closed": gap_closed(base, prox, expert),
            }
        row["number_on_unseen"] = {
            role: answers_with_number(outputs.get(name, [])) for role, name in (("base", "base"), ("expert", "expert"))
        }
        row["number_on_unseen"]["proxy"] = answers_with_number(outputs.get(proxy, []))
        rows.append(row)
    return rows


def read_runs(root: Path) -> list[dict]:
    """Rows of every run folder under ``root`` (folders with a ``data/``), by trained polls, then alpha."""
    rows = [row for folder in sorted(root.iterdir()) if (folder / "data").is_dir() for row in read_run(folder)]
    return sorted(rows, key=lambda r: (r["polls"]["trained"], r.get("alpha") or 0))


# --------------------------------------------------------------------------- writing


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x: float | int | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _split_cell(s: dict) -> str:
    gap = "" if s["gap_closed"] is None else f" ({100 * s['gap_closed']:.0f}%)"
    return f"{_pct(s['base'])} / {_pct(s['expert'])} / {_pct(s['proxy'])}{gap}"


def _machine_cell(row: dict) -> str:
    train, ev = row["machine_train"], row["machine_eval"]
    if train == ev:
        return train or "-"
    return f"train: {train or '-'}; eval: {ev or '-'}"


HEADER = [
    "trained polls",
    "doc-only / unseen polls",
    "α",
    "trained: base / expert / proxy % (gap closed)",
    "documents",
    "unseen",
    "unseen, answered with a number: base / expert / proxy %",
    "train examples",
    "train tokens (one epoch)",
    "tokens trained",
    "train wall s",
    "eval wall s",
    "machine",
]


def markdown(rows: list[dict]) -> str:
    """The table: accuracy per split as base / expert / proxy (gap closed), costs and machine per row."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        polls = r["polls"]
        cells = [str(polls["trained"]), f"{polls['documents']} / {polls['unseen']}"]
        if r["pending"]:
            cells += ["-", f"pending ({r['pending']} not finished)", "-", "-", "-"]
        else:
            numbers = r["number_on_unseen"]
            cells += [f"{r['alpha']:g}", *(_split_cell(r["splits"][s]) for s in SPLITS)]
            cells.append(" / ".join(_pct(numbers[k]) for k in ("base", "expert", "proxy")))
        attempts = f" ({r['train_attempts']} attempts)" if r["train_attempts"] > 1 else ""
        cells += [_num(r["train_examples"]), _num(r["train_tokens"]), _num(r["tokens_seen"])]
        cells += [_num(r["train_s"]) + attempts, _num(r["eval_s"]), _machine_cell(r)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> bool:
    """Accuracy against trained polls, one panel per split (base, expert, proxy per alpha); False without
    matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    done = [r for r in rows if not r["pending"]]
    alphas = sorted({r["alpha"] for r in done})
    sizes = sorted({r["polls"]["trained"] for r in done})
    fig = Figure(figsize=(10, 3.6), dpi=120)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(SPLITS), sharey=True)
    for ax, split in zip(axes, SPLITS):
        lines = [("base", "gray", ":", alphas[:1]), ("expert", "C1", "--", alphas[:1]), ("proxy", "C0", "-", alphas)]
        for role, color, style, for_alphas in lines:
            for i, alpha in enumerate(for_alphas):
                points = [r for r in done if r["alpha"] == alpha and r["splits"][split][role] is not None]
                label = role if role != "proxy" or len(alphas) == 1 else f"proxy α={alpha:g}"
                ax.plot(
                    [r["polls"]["trained"] for r in points],
                    [100 * r["splits"][split][role] for r in points],
                    linestyle=style,
                    marker="o",
                    color=color if i == 0 else f"C{i + 2}",
                    label=label,
                )
        if len(sizes) > 1:
            ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_ylim(-3, 103)
        ax.set_title(f"{split} split")
        ax.set_xlabel("trained polls")
    axes[0].set_ylabel("accuracy (%)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return True


# --------------------------------------------------------------------------- recording a phase


def machine() -> dict:
    """Cores this process may use and the GPUs nvidia-smi lists (none without it)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = None
    if shutil.which("nvidia-smi"):
        try:
            found = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=60
            ).stdout
        except (OSError, subprocess.SubprocessError):
            found = ""
        names = [name.strip() for name in found.splitlines() if name.strip()]
        gpu = ", ".join(f"{names.count(n)}x {n}" for n in dict.fromkeys(names)) or None
    return {"cores": cores, "gpu": gpu}


def record(folder: Path, phase: str, seconds: float, threads: str | None, attempt: str, finished: bool) -> dict:
    """Append one phase's wall time and the machine it ran on to ``folder/times.jsonl``."""
    line = {"phase": phase, "seconds": round(seconds, 1), "attempt": attempt, "finished": finished}
    line |= {"threads": threads, **machine()}
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "times.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
    return line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    table = sub.add_parser("table", help="Markdown table (and PNG plot) of every run folder under ROOT.")
    table.add_argument("root", type=Path)
    table.add_argument("--output", type=Path, help="Markdown file (default: stdout only).")
    table.add_argument("--plot", type=Path, help="PNG plot (needs matplotlib).")
    rec = sub.add_parser("record", help="Append a phase's wall time and the machine to FOLDER/times.jsonl.")
    rec.add_argument("folder", type=Path)
    rec.add_argument("phase", choices=("train", "eval"))
    rec.add_argument("seconds", type=float)
    rec.add_argument("--threads")
    rec.add_argument("--attempt", default="fresh", choices=("fresh", "resume"))
    rec.add_argument("--interrupted", action="store_true", help="The phase stopped before it finished.")
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.folder, args.phase, args.seconds, args.threads, args.attempt, not args.interrupted)
        return
    rows = read_runs(args.root)
    if not rows:
        sys.exit(f"{args.root}: no run folders (n<N>/data) found")
    text = markdown(rows)
    print(text, end="")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    if args.plot and not plot(rows, args.plot):
        print("no plot: matplotlib is not installed", file=sys.stderr)


if __name__ == "__main__":
    main()
