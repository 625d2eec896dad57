"""benchmarks/scale_table.py on hand-made run folders: gap closed per split, numbers on unseen polls, costs."""

import json
import runpy
from pathlib import Path

import pytest
from docs_check import REPO

TABLE = runpy.run_path(str(REPO / "benchmarks/scale_table.py"))


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _run_folder(root: Path, trained: int, scores: dict, outputs: dict, alphas=(1.0,)) -> Path:
    """A folder as examples/polls_scale.sh leaves it: data, expert metadata, eval report and outputs, times."""
    folder = root / f"n{trained}"
    polls = {"trained": range(trained), "documents": [100], "unseen": [200, 201]}
    for split, ids in polls.items():
        _jsonl(folder / f"data/eval_{split}.jsonl", [{"poll_id": i, "split": split} for i in ids for _ in range(2)])
    meta = {"data": {"tokens": {"examples": 84, "tokens": 3630}}, "metrics": {"tokens_seen": 29040, "global_step": 120}}
    (folder / "expert").mkdir(parents=True)
    (folder / "expert/proxytool.json").write_text(json.dumps(meta))
    proxies = {"proxy": alphas[0]} if len(alphas) == 1 else {f"proxy@{a:g}": a for a in alphas}
    report = {
        "systems": {name: {} for name in ("base", "expert", *proxies)},
        "sweep": [{"system": name, "alpha": a} for name, a in proxies.items()],
        "by_split": {"score": scores},
    }
    (folder / "eval/outputs").mkdir(parents=True)
    (folder / "eval/report.json").write_text(json.dumps(report))
    for name, rows in outputs.items():
        _jsonl(folder / f"eval/outputs/{name}.jsonl", rows)
    machine = {"cores": 2, "threads": "2", "gpu": None}
    _jsonl(
        folder / "times.jsonl",
        [
            {"phase": "train", "seconds": 100.0, "attempt": "fresh", "finished": False, **machine},
            {"phase": "train", "seconds": 400.0, "attempt": "resume", "finished": True, **machine},
            {"phase": "eval", "seconds": 225.0, "attempt": "fresh", "finished": True, **machine},
        ],
    )
    return folder


def _unseen(completions: list[str]) -> list[dict]:
    answers = ["48%", "1,275", "Marist"]  # the pollster's answer is not a number: not counted
    rows = [{"split": "unseen", "answer": a, "completion": c} for a, c in zip(answers, completions, strict=True)]
    return [*rows, {"split": "trained", "answer": "45%", "completion": "45%"}]


def test_gap_closed_arithmetic():
    gap = TABLE["gap_closed"]
    assert gap(0.2, 0.5, 0.8) == pytest.approx(0.5)
    assert gap(0.0, 0.5, 0.25) == pytest.approx(2.0)  # the proxy beats the expert
    assert gap(0.3, 0.1, 0.5) == pytest.approx(-1.0)  # steering hurts
    assert gap(0.1, 0.4, 0.1) is None and gap(None, 0.4, 0.5) is None  # no gap, no score


def test_table_from_run_folders(tmp_path, capsys):
    scores = {
        "trained": {"base": 0.2, "expert": 0.8, "proxy": 0.5},
        "documents": {"base": 0.1, "expert": 0.1, "proxy": 0.3},
        "unseen": {"base": 0.0, "expert": 0.25, "proxy": 0.5},
    }
    outputs = {
        "base": _unseen(["about 47%", "1000 people", "I do not know"]),
        "expert": _unseen(["unknown", "1,275", "Marist"]),
        "proxy": _unseen(["no idea", "not reported", "12"]),
    }
    _run_folder(tmp_path, 2, scores, outputs)
    (tmp_path / "n10/data").mkdir(parents=True)  # a point whose expert is still training
    _jsonl(tmp_path / "n10/data/eval_trained.jsonl", [{"poll_id": i} for i in range(10)])
    md, png = tmp_path / "out/scale.md", tmp_path / "out/scale.png"
    TABLE["main"](["table", str(tmp_path), "--output", str(md), "--plot", str(png)])
    assert capsys.readouterr().out == md.read_text()
    header, _, two, ten = md.read_text().splitlines()
    assert header.count("|") == len(TABLE["HEADER"]) + 1
    cells = two.split(" | ")
    assert cells[:3] == ["| 2", "1 / 2", "1"]
    assert cells[3] == "20.0 / 80.0 / 50.0 (50%)"  # (0.5 - 0.2) / (0.8 - 0.2)
    assert cells[4] == "10.0 / 10.0 / 30.0"  # expert = base: no gap to close
    assert cells[5] == "0.0 / 25.0 / 50.0 (200%)"
    assert cells[6] == "100.0 / 50.0 / 0.0"  # of the 2 numeric unseen questions, answered with any number
    assert cells[7:11] == ["84", "3,630", "29,040", "500 (2 attempts)"]  # both attempts' wall time
    assert cells[11:] == ["225", "2 cores (--threads 2), no GPU |"]
    assert ten.startswith("| 10 | 0 / 0 | - | pending (expert not finished) |")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_one_row_per_alpha_of_a_sweep(tmp_path):
    scores = {s: {"base": 0.0, "expert": 0.5, "proxy@1": 0.25, "proxy@2": 0.5} for s in TABLE["SPLITS"]}
    _run_folder(tmp_path, 3, scores, {}, alphas=(1.0, 2.0))
    rows = TABLE["read_runs"](tmp_path)
    assert [(r["alpha"], r["splits"]["trained"]["gap_closed"]) for r in rows] == [(1.0, 0.5), (2.0, 1.0)]
    assert rows[0]["number_on_unseen"] == {"base": None, "expert": None, "proxy": None}  # no outputs kept


def test_record_appends_a_phase(tmp_path):
    TABLE["main"](["record", str(tmp_path), "eval", "12.34", "--threads", "2", "--attempt", "resume", "--interrupted"])
    [line] = [json.loads(x) for x in (tmp_path / "times.jsonl").read_text().splitlines()]
    assert line["phase"] == "eval" and line["seconds"] == 12.3 and line["attempt"] == "resume"
    assert line["finished"] is False and line["cores"] >= 1 and "gpu" in line
