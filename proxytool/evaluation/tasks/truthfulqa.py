"""``truthfulqa-mc``: MC1 by the log-likelihood of each choice."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from proxytool.errors import ProxyToolError, at
from proxytool.evaluation.tasks.core import Example, Task, evalset_dir, evalset_hint


def _truthfulqa_csv(path: Path) -> dict[str, dict]:
    """TruthfulQA.csv rows by question (empty if the file is absent)."""
    if not path.is_file():
        return {}
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = {"Question", "Best Answer", "Incorrect Answers"} - set(reader.fieldnames or [])
            if missing:
                raise ProxyToolError(f"{at(path, 1, sorted(missing)[0])}: missing column")
            return {row["Question"].strip(): {**row, "_line": reader.line_num} for row in reader}
    except (UnicodeDecodeError, csv.Error) as err:
        raise ProxyToolError(f"{at(path)}: cannot read ({err})") from None


def _split_answers(cell: str) -> list[str]:
    return [a.strip() for a in (cell or "").split(";") if a.strip()]


def _mc1_from_csv(row: dict, path: Path) -> tuple[list[str], list[int]]:
    best = (row.get("Best Answer") or "").strip()
    if not best:
        raise ProxyToolError(f"{at(path, row['_line'], 'Best Answer')}: empty")
    wrong = [a for a in _split_answers(row.get("Incorrect Answers", "")) if a != best]
    if not wrong:
        raise ProxyToolError(f"{at(path, row['_line'], 'Incorrect Answers')}: empty")
    return [best] + list(dict.fromkeys(wrong)), [0]


def _targets(entry: dict, name: str, where: str) -> tuple[list[str], list[int]] | None:
    targets = entry.get(name)
    if targets is None:
        return None
    if (
        not isinstance(targets, dict)
        or len(targets) < 2
        or not all(isinstance(k, str) and v in (0, 1) and not isinstance(v, float) for k, v in targets.items())
    ):
        raise ProxyToolError(f"{where}: field '{name}': expected an object of at least 2 choices mapped to 0 or 1")
    choices = list(targets)
    return choices, [i for i, c in enumerate(choices) if targets[c] == 1]


# Over 60 lines: one pass that validates each field where it is read (errors name file:line:field).
def load_truthfulqa(data_dir: Path | None, few_shot: int | None) -> Task:
    if few_shot:
        raise ProxyToolError("truthfulqa-mc is zero-shot: few_shot must be 0")
    folder = evalset_dir("truthfulqa", data_dir)
    mc_path, csv_path = folder / "mc_task.json", folder / "TruthfulQA.csv"
    rows = _truthfulqa_csv(csv_path)
    if mc_path.is_file():
        try:
            with open(mc_path, encoding="utf-8") as f:
                entries = json.load(f)
        except json.JSONDecodeError as err:
            raise ProxyToolError(f"{at(mc_path, err.lineno)}: invalid JSON ({err.msg})") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ProxyToolError(f"{at(mc_path)}: cannot read ({err})") from None
        if not isinstance(entries, list):
            raise ProxyToolError(f"{at(mc_path)}: expected a JSON list of questions")
        source = str(mc_path)
    elif rows:
        entries = [{"question": q} for q in rows]
        source = str(csv_path)
    else:
        raise ProxyToolError(f"{mc_path} not found (nor {csv_path.name}): {evalset_hint(data_dir)}")
    examples = []
    for i, entry in enumerate(entries):
        where = f"{mc_path}: entry {i}"
        question = entry.get("question") if isinstance(entry, dict) else None
        if not isinstance(question, str) or not question.strip():
            raise ProxyToolError(f"{where}: field 'question': expected a non-empty string")
        question = question.strip()
        row = rows.get(question)
        mc1 = _targets(entry, "mc1_targets", where)
        if mc1 is None:
            if row is None:
                raise ProxyToolError(
                    f"{where}: field 'mc1_targets': missing, and {csv_path.name} has no row for this question"
                )
            mc1 = _mc1_from_csv(row, csv_path)
        choices, correct = mc1
        if len(correct) != 1:
            raise ProxyToolError(
                f"{where}: field 'mc1_targets': expected exactly one correct choice, got {len(correct)}"
            )
        meta: dict = {"question": question}
        mc2 = _targets(entry, "mc2_targets", where)
        if mc2 is not None:
            meta["mc2_choices"], meta["mc2_correct"] = mc2
        if row is not None:
            meta.update(
                type=row.get("Type", ""),
                category=row.get("Category", ""),
                best_answer=row.get("Best Answer", ""),
                source=row.get("Source", ""),
            )
        examples.append(
            Example(
                id=f"truthfulqa-{i}",
                prompt=f"Q: {question}\nA:",
                answer=choices[correct[0]],
                choices=choices,
                correct=correct,
                meta=meta,
            )
        )
    if not examples:
        raise ProxyToolError(f"{source}: no examples")
    return Task(
        name="truthfulqa-mc",
        kind="choice",
        examples=examples,
        max_new_tokens=0,
        stop=[],
        source=source,
        metric="MC1 accuracy (log-likelihood)",
    )
