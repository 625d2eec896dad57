"""FiveThirtyEight 2024 poll list -> training text, chat QA pairs and scorable eval questions.

The input is 538's ``poll_list.csv`` (two rows per Harris-Trump poll question, one per candidate).
:func:`build_polls_dataset` turns it into ``train.jsonl`` (one document per poll question plus chat
QA pairs), ``eval_recall.jsonl`` (questions about polls whose document is in ``train.jsonl`` but whose
QA pairs are held out), ``eval_unseen.jsonl`` (questions about polls held out entirely) and
``ATTRIBUTION.md`` (the data is CC BY 4.0, ABC News / FiveThirtyEight).

Only the standard library is used; the file is read with :mod:`csv`.
"""

from __future__ import annotations

import csv
import json
import random
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

from proxytool.errors import ProxyToolError, at
from proxytool.files.atomic import write_text

REQUIRED_COLUMNS = (
    "state",
    "start_date",
    "end_date",
    "pollster_rating_name",
    "poll_id",
    "question_id",
    "sample_size",
    "population",
    "candidate_name",
    "pct",
)
"""Columns the converter needs; a file without one of them is rejected."""

POPULATIONS = {
    "lv": "likely voters",
    "rv": "registered voters",
    "a": "adults",
    "v": "voters",
}
"""538 population codes, spelled out."""

CANDIDATES = ("Harris", "Trump")
"""Last names of the two candidates kept; rows for anyone else are skipped."""

KINDS = ("leader", "share", "sample_size", "margin")
"""Question kinds, in the order they are written."""

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_NA = {"", "NA", "N/A", "NaN", "nan", "null", "None"}

SOURCE_NAME = "ABC News / FiveThirtyEight"
LICENSE_URL = "https://creativecommons.org/licenses/by/4.0/"


@dataclass
class PollQuestion:
    """One Harris-Trump poll question (two CSV rows merged)."""

    poll_id: int
    question_id: int
    pollster: str
    state: str
    start_date: str
    end_date: str
    population: str
    sample_size: int
    methodology: str
    shares: dict[str, Decimal]
    full_names: dict[str, str]
    label: str = ""
    label_has_size: bool = False
    ambiguous: bool = False

    @property
    def national(self) -> bool:
        """True for national polls (538 writes the state as ``National``)."""
        return self.state.strip().lower() == "national"

    @property
    def leader(self) -> str:
        """``Harris``, ``Trump`` or ``tie`` by reported share."""
        harris, trump = self.shares["Harris"], self.shares["Trump"]
        if harris == trump:
            return "tie"
        return "Harris" if harris > trump else "Trump"

    @property
    def margin(self) -> Decimal:
        """``|Harris - Trump|`` in points, rounded half up to one decimal."""
        diff = abs(self.shares["Harris"] - self.shares["Trump"])
        return diff.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


# --------------------------------------------------------------------------- formatting


def format_number(value: Decimal | int) -> str:
    """Format a number without trailing zeros: ``48.0`` -> ``"48"``, ``47.50`` -> ``"47.5"``.

    Args:
        value: The number.

    Returns:
        Its shortest plain decimal spelling (never scientific notation).
    """
    d = Decimal(value)
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def format_date_range(start: str, end: str) -> str:
    """Spell out an ISO date range, e.g. ``"October 23 to October 25, 2024"``.

    Args:
        start: ``YYYY-MM-DD``.
        end: ``YYYY-MM-DD``.

    Returns:
        The range in words (a single date when both are equal).
    """
    sy, sm, sd = (int(x) for x in start.split("-"))
    ey, em, ed = (int(x) for x in end.split("-"))
    end_text = f"{_MONTHS[em - 1]} {ed}, {ey}"
    if (sy, sm, sd) == (ey, em, ed):
        return end_text
    start_text = f"{_MONTHS[sm - 1]} {sd}" + (f", {sy}" if sy != ey else "")
    return f"{start_text} to {end_text}"


def _pollster_in_label(pollster: str) -> str:
    """Drop a leading "The " so that "the The New York Times poll" reads "the New York Times poll"."""
    return pollster[4:] if pollster.startswith("The ") else pollster


def poll_label(q: PollQuestion, with_size: bool = False) -> str:
    """The phrase that identifies a poll question in documents and questions.

    Args:
        q: The poll question.
        with_size: Also name the sample size (used only to tell otherwise identical polls apart).

    Returns:
        E.g. ``"the Emerson College poll of likely voters in Pennsylvania (October 1 to October 3, 2024)"``.
    """
    pollster = _pollster_in_label(q.pollster)
    population = POPULATIONS[q.population]
    where = f"national poll of {population}" if q.national else f"poll of {population} in {q.state}"
    when = format_date_range(q.start_date, q.end_date)
    if with_size:
        when += f"; {q.sample_size} respondents"
    return f"the {pollster} {where} ({when})"


def poll_document(q: PollQuestion) -> str:
    """The natural-language training document for one poll question.

    Args:
        q: The poll question.

    Returns:
        A short paragraph with pollster, place, dates, population, sample size, shares, leader, margin.
    """
    population = POPULATIONS[q.population]
    label = q.label or poll_label(q)
    method = f" (method: {q.methodology})" if q.methodology else ""
    h, t = q.shares["Harris"], q.shares["Trump"]
    text = (
        f"In the 2024 U.S. presidential race, {label} surveyed {q.sample_size} {population}{method}. "
        f"{q.full_names['Harris']} received {format_number(h)}% and "
        f"{q.full_names['Trump']} received {format_number(t)}%. "
    )
    if q.leader == "tie":
        text += "The two candidates are tied."
    elif q.margin == 0:
        text += f"{q.leader} leads by less than 0.1 points."
    else:
        unit = "point" if q.margin == 1 else "points"
        text += f"{q.leader} leads by {format_number(q.margin)} {unit}."
    return text


def poll_questions(q: PollQuestion) -> list[dict]:
    """The scorable questions about one poll question, one dict per question.

    Args:
        q: The poll question (its ``label`` must be set).

    Returns:
        Dicts with ``id``, ``question``, ``answer``, ``kind``, ``poll_id``, ``question_id``.
        The ``sample_size`` kind is left out when the label itself names the sample size.
    """
    label = q.label
    out: list[dict] = []

    def add(suffix: str, kind: str, question: str, answer: str) -> None:
        out.append(
            {
                "id": f"{q.question_id}-{suffix}",
                "question": question,
                "answer": answer,
                "kind": kind,
                "poll_id": q.poll_id,
                "question_id": q.question_id,
            }
        )

    add(
        "leader",
        "leader",
        f"In {label}, who was ahead: Harris or Trump? Answer with the last name, or 'tie'.",
        q.leader,
    )
    for last in CANDIDATES:
        add(
            f"share-{last.lower()}",
            "share",
            f"In {label}, what percentage did {q.full_names[last]} receive? Answer with a number.",
            format_number(q.shares[last]),
        )
    if not q.label_has_size:
        add(
            "sample_size",
            "sample_size",
            f"What was the sample size of {label}? Answer with a number.",
            str(q.sample_size),
        )
    add(
        "margin",
        "margin",
        f"In {label}, by how many percentage points did the leader lead? Answer with a number (0 for a tie).",
        format_number(q.margin),
    )
    return out


def to_chat(item: dict) -> dict:
    """Turn an eval question into a chat training example."""
    return {
        "messages": [{"role": "user", "content": item["question"]}, {"role": "assistant", "content": item["answer"]}]
    }


# --------------------------------------------------------------------------- reading


def _parse_int(path: Path, line: int, field: str, value: str) -> int:
    text = value.strip()
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ProxyToolError(f"{at(path, line, field)}: not a number: {value!r}") from None
    if not number.is_finite() or number != number.to_integral_value() or number < 0:
        raise ProxyToolError(f"{at(path, line, field)}: not a whole number: {value!r}")
    return int(number)


def _parse_pct(path: Path, line: int, field: str, value: str) -> Decimal:
    try:
        number = Decimal(value.strip())
    except InvalidOperation:
        raise ProxyToolError(f"{at(path, line, field)}: not a number: {value!r}") from None
    if not number.is_finite() or not (0 <= number <= 100):
        raise ProxyToolError(f"{at(path, line, field)}: not a percentage between 0 and 100: {value!r}")
    return number


def _parse_date(path: Path, line: int, field: str, value: str) -> str:
    text = value.strip()
    m = _DATE.match(text)
    if not m or not (1 <= int(m.group(2)) <= 12 and 1 <= int(m.group(3)) <= 31):
        raise ProxyToolError(f"{at(path, line, field)}: not a YYYY-MM-DD date: {value!r}")
    return text


def _candidate(name: str) -> str | None:
    """``Harris``/``Trump`` for their rows, ``None`` for any other candidate."""
    parts = name.strip().split()
    last = parts[-1] if parts else ""
    return last if last in CANDIDATES else None


def read_poll_list(csv_path: Path) -> tuple[list[PollQuestion], dict]:
    """Read and validate a 538 poll list, merging the two candidate rows of each question.

    Every row is validated (numbers, dates, population code) before anything is returned.

    Args:
        csv_path: The CSV file.

    Returns:
        The Harris-Trump poll questions (file order of their first row) and a summary with
        ``rows``, ``skipped_rows`` (other candidates) and ``skipped_questions`` (missing a candidate).

    Raises:
        ProxyToolError: Missing file, missing column, malformed value, or a candidate listed twice
            for one question; the message names ``file:line`` and the field.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise ProxyToolError(f"{at(path)}: poll list not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header:
                raise ProxyToolError(f"{at(path, 1)}: empty file, expected a CSV header")
            header = [h.strip() for h in header]
            for col in REQUIRED_COLUMNS:
                if col not in header:
                    raise ProxyToolError(f"{at(path, 1, col)}: required column missing from the header")
            index = {name: i for i, name in reversed(list(enumerate(header)))}
            records = []
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) < len(header):
                    row = row + [""] * (len(header) - len(row))
                records.append((line, {name: row[i] for name, i in index.items()}))
    except UnicodeDecodeError as err:
        raise ProxyToolError(f"{at(path)}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise ProxyToolError(f"{at(path)}: malformed CSV: {err}") from None

    questions: dict[int, PollQuestion] = {}
    skipped_rows = 0
    for line, rec in records:
        poll_id = _parse_int(path, line, "poll_id", rec["poll_id"])
        question_id = _parse_int(path, line, "question_id", rec["question_id"])
        sample = _parse_int(path, line, "sample_size", rec["sample_size"])
        raw = rec.get("raw_sample_size", "")
        if raw is not None and raw.strip() not in _NA:
            sample = _parse_int(path, line, "raw_sample_size", raw)  # as reported, not 538's capped value
        pct = _parse_pct(path, line, "pct", rec["pct"])
        start = _parse_date(path, line, "start_date", rec["start_date"])
        end = _parse_date(path, line, "end_date", rec["end_date"])
        population = rec["population"].strip().lower()
        if population not in POPULATIONS:
            raise ProxyToolError(
                f"{at(path, line, 'population')}: unknown population code "
                f"{rec['population']!r} (expected one of {', '.join(POPULATIONS)})"
            )
        for field in ("pollster_rating_name", "state"):
            if not rec[field].strip():
                raise ProxyToolError(f"{at(path, line, field)}: empty")
        last = _candidate(rec["candidate_name"])
        if last is None:
            skipped_rows += 1
            continue
        q = questions.get(question_id)
        if q is None:
            methodology = (rec.get("methodology") or "").strip()
            q = questions[question_id] = PollQuestion(
                poll_id=poll_id,
                question_id=question_id,
                pollster=rec["pollster_rating_name"].strip(),
                state=rec["state"].strip(),
                start_date=start,
                end_date=end,
                population=population,
                sample_size=sample,
                methodology="" if methodology in _NA else methodology,
                shares={},
                full_names={},
            )
        if last in q.shares:
            raise ProxyToolError(
                f"{at(path, line, 'candidate_name')}: {last} listed twice for question_id {question_id}"
            )
        q.shares[last] = pct
        q.full_names[last] = " ".join(rec["candidate_name"].split())

    complete = [q for q in questions.values() if len(q.shares) == len(CANDIDATES)]
    summary = {"rows": len(records), "skipped_rows": skipped_rows, "skipped_questions": len(questions) - len(complete)}
    return complete, summary


# --------------------------------------------------------------------------- labels and splits


def assign_labels(questions: list[PollQuestion]) -> int:
    """Give every poll question a label that no other question shares.

    Pollster, place, population and dates usually suffice; colliding questions also name their sample
    size (and then get no sample-size question); questions that still collide are marked ambiguous.

    Args:
        questions: The poll questions; their ``label``, ``label_has_size``, ``ambiguous`` are set.

    Returns:
        How many questions were marked ambiguous.
    """
    groups: dict[str, list[PollQuestion]] = {}
    for q in questions:
        q.label, q.label_has_size, q.ambiguous = poll_label(q), False, False
        groups.setdefault(q.label.lower(), []).append(q)
    for group in groups.values():
        if len(group) > 1:
            for q in group:
                q.label, q.label_has_size = poll_label(q, with_size=True), True
    final: dict[str, list[PollQuestion]] = {}
    for q in questions:
        final.setdefault(q.label.lower(), []).append(q)
    ambiguous = 0
    for group in final.values():
        if len(group) > 1:
            for q in group:
                q.ambiguous = True
                ambiguous += 1
    return ambiguous


def split_polls(
    questions: list[PollQuestion], rng: random.Random, recall_fraction: float, unseen_fraction: float
) -> tuple[set[int], set[int]]:
    """Pick the poll ids held out for recall and for unseen evaluation.

    The unit is the poll (``poll_id``), so all questions of an unseen poll stay out of training.
    Polls with an ambiguous question are never picked.

    Args:
        questions: All poll questions kept.
        rng: The seeded random generator.
        recall_fraction: Share of eligible polls whose QA pairs are held out.
        unseen_fraction: Share of eligible polls held out entirely.

    Returns:
        ``(recall_poll_ids, unseen_poll_ids)``, disjoint.
    """
    ambiguous = {q.poll_id for q in questions if q.ambiguous}
    eligible = sorted({q.poll_id for q in questions} - ambiguous)
    rng.shuffle(eligible)
    n_unseen = round(len(eligible) * unseen_fraction)
    n_recall = min(round(len(eligible) * recall_fraction), len(eligible) - n_unseen)
    unseen = set(eligible[:n_unseen])
    recall = set(eligible[n_unseen : n_unseen + n_recall])
    return recall, unseen


# --------------------------------------------------------------------------- writing


def _jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def attribution_text(csv_path: Path) -> str:
    """The ``ATTRIBUTION.md`` written next to the generated files.

    Args:
        csv_path: The source CSV (only its file name is written).

    Returns:
        Markdown naming the source, the licence and the changes made.
    """
    return (
        "# Attribution\n\n"
        f"The files in this folder are derived from FiveThirtyEight's 2024 presidential election "
        f"forecast poll list (`{Path(csv_path).name}`, the model's input `poll_list.csv`), "
        f"(c) {SOURCE_NAME}, licensed under the Creative Commons Attribution 4.0 International "
        f"licence (CC BY 4.0): {LICENSE_URL}\n\n"
        "Source: https://github.com/fivethirtyeight/data and "
        "https://projects.fivethirtyeight.com/2024-election-forecast/\n\n"
        "Changes: the poll rows were converted by proxytool (`proxytool data polls`) into "
        "natural-language documents, chat question-answer pairs and evaluation questions "
        "(`train.jsonl`, `eval_recall.jsonl`, `eval_unseen.jsonl`); only Harris-Trump questions "
        "were kept, margins and leaders were computed from the reported shares, and the sample size "
        "given is the raw sample size reported by the pollster where available. "
        f"{SOURCE_NAME} does not endorse proxytool or this derived data.\n"
    )


def build_polls_dataset(
    csv_path: Path,
    out_dir: Path,
    seed: int = 0,
    limit: int | None = None,
    recall_fraction: float = 0.1,
    unseen_fraction: float = 0.1,
) -> dict:
    """Convert a 538 poll list into training and evaluation JSONL files.

    Writes into ``out_dir`` (each file atomically): ``train.jsonl`` (``{"text"}`` documents and
    ``{"messages"}`` chat QA pairs, shuffled), ``eval_recall.jsonl``, ``eval_unseen.jsonl`` and
    ``ATTRIBUTION.md``. Recall polls keep their document in ``train.jsonl`` but none of their QA
    pairs; unseen polls appear only in ``eval_unseen.jsonl``. The output is byte-identical for the
    same input and seed.

    Args:
        csv_path: FiveThirtyEight ``poll_list.csv`` (two rows per question: Harris and Trump).
        out_dir: Output folder (created if missing).
        seed: Seed for ``limit`` sampling, the split and the training-file order.
        limit: Keep only this many poll questions (a seeded random subset), e.g. for a CPU demo.
        recall_fraction: Share of polls whose QA pairs are held out for ``eval_recall.jsonl``.
        unseen_fraction: Share of polls held out entirely for ``eval_unseen.jsonl``.

    Returns:
        Counts: lines per output file (``train.jsonl``, ``eval_recall.jsonl``, ``eval_unseen.jsonl``),
        ``train_documents``, ``train_qa``, ``poll_questions``, ``recall_questions``,
        ``unseen_questions``, ``skipped_rows``, ``skipped_questions`` and ``ambiguous_questions``.

    Raises:
        ProxyToolError: Bad arguments or bad input (missing file or column, malformed value);
            nothing is written then.
    """
    for name, frac in (("recall_fraction", recall_fraction), ("unseen_fraction", unseen_fraction)):
        if not 0 <= frac <= 1:
            raise ProxyToolError(f"{name} must be between 0 and 1, got {frac}")
    if recall_fraction + unseen_fraction > 1:
        raise ProxyToolError("recall_fraction + unseen_fraction must not exceed 1")
    if limit is not None and limit < 1:
        raise ProxyToolError(f"limit must be at least 1, got {limit}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ProxyToolError(f"{at(out_dir)}: exists and is not a folder")

    questions, summary = read_poll_list(Path(csv_path))
    questions.sort(key=lambda q: q.question_id)
    rng = random.Random(seed)
    if limit is not None and limit < len(questions):
        questions = sorted(rng.sample(questions, limit), key=lambda q: q.question_id)
    ambiguous = assign_labels(questions)
    recall, unseen = split_polls(questions, rng, recall_fraction, unseen_fraction)

    train: list[dict] = []
    eval_recall: list[dict] = []
    eval_unseen: list[dict] = []
    n_docs = n_qa = n_recall_q = n_unseen_q = 0
    for q in questions:
        items = [] if q.ambiguous else poll_questions(q)
        if q.poll_id in unseen:
            eval_unseen.extend(items)
            n_unseen_q += 1
            continue
        train.append({"text": poll_document(q)})
        n_docs += 1
        if q.poll_id in recall:
            eval_recall.extend(items)
            n_recall_q += 1
        else:
            train.extend(to_chat(item) for item in items)
            n_qa += len(items)
    rng.shuffle(train)
    _check_consistent(train, eval_recall + eval_unseen)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "train.jsonl", _jsonl(train))
    write_text(out_dir / "eval_recall.jsonl", _jsonl(eval_recall))
    write_text(out_dir / "eval_unseen.jsonl", _jsonl(eval_unseen))
    write_text(out_dir / "ATTRIBUTION.md", attribution_text(Path(csv_path)))
    return {
        "train.jsonl": len(train),
        "eval_recall.jsonl": len(eval_recall),
        "eval_unseen.jsonl": len(eval_unseen),
        "train_documents": n_docs,
        "train_qa": n_qa,
        "poll_questions": len(questions),
        "recall_questions": n_recall_q,
        "unseen_questions": n_unseen_q,
        "skipped_rows": summary["skipped_rows"],
        "skipped_questions": summary["skipped_questions"],
        "ambiguous_questions": ambiguous,
    }


def _check_consistent(train: list[dict], evals: list[dict]) -> None:
    """Guard: one question text never has two different answers anywhere in the output."""
    answers: dict[str, str] = {}
    pairs = [(e["question"], e["answer"]) for e in evals]
    pairs += [(t["messages"][0]["content"], t["messages"][1]["content"]) for t in train if "messages" in t]
    for question, answer in pairs:
        if answers.setdefault(question, answer) != answer:
            raise AssertionError(f"question with two answers: {question!r}")
