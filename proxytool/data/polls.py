"""FiveThirtyEight 2024 poll list: reading, validating and spelling out poll questions.

The input is 538's ``poll_list.csv`` (two rows per Harris-Trump poll question, one per candidate).
:func:`read_poll_list` merges and validates them; :mod:`proxytool.data.poll_facts` turns the polls
into training text and held-out questions (``proxytool data polls``). The data is CC BY 4.0,
ABC News / FiveThirtyEight (:func:`attribution_text`).

Only the standard library is used; the file is read with :mod:`csv`.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

from proxytool.errors import ProxyToolError, at

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

MONTHS = (
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
    end_text = f"{MONTHS[em - 1]} {ed}, {ey}"
    if (sy, sm, sd) == (ey, em, ed):
        return end_text
    start_text = f"{MONTHS[sm - 1]} {sd}" + (f", {sy}" if sy != ey else "")
    return f"{start_text} to {end_text}"


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
    records = _csv_records(path)
    questions: dict[int, PollQuestion] = {}
    skipped_rows = 0
    for line, rec in records:
        if not _add_row(path, line, rec, questions):
            skipped_rows += 1
    complete = [q for q in questions.values() if len(q.shares) == len(CANDIDATES)]
    if not records:
        raise ProxyToolError(f"{at(path, 2)}: no poll rows after the header")
    if not complete:
        raise ProxyToolError(f"{at(path)}: no poll question lists both {' and '.join(CANDIDATES)}")
    summary = {"rows": len(records), "skipped_rows": skipped_rows, "skipped_questions": len(questions) - len(complete)}
    return complete, summary


def _csv_records(path: Path) -> list[tuple[int, dict]]:
    """(line, {column: cell}) for each non-blank row, after the header's required columns are checked."""
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
                if not any(cell.strip() for cell in row):
                    continue
                row = row + [""] * (len(header) - len(row))
                records.append((reader.line_num, {name: row[i] for name, i in index.items()}))
            return records
    except UnicodeDecodeError as err:
        raise ProxyToolError(f"{at(path)}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise ProxyToolError(f"{at(path)}: malformed CSV: {err}") from None


def _add_row(path: Path, line: int, rec: dict, questions: dict[int, PollQuestion]) -> bool:
    """Validate one row and add its candidate's share to its question; False for another candidate."""
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
        return False
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
        raise ProxyToolError(f"{at(path, line, 'candidate_name')}: {last} listed twice for question_id {question_id}")
    q.shares[last] = pct
    q.full_names[last] = " ".join(rec["candidate_name"].split())
    return True


# --------------------------------------------------------------------------- writing


def jsonl_text(records: list[dict]) -> str:
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
        "documents in three renderings, question-answer lines and evaluation questions "
        "(`train.jsonl`, `eval.jsonl` and its splits `eval_trained.jsonl`, `eval_documents.jsonl`, "
        "`eval_unseen.jsonl`); only the first Harris-Trump question of each poll was kept, margins and "
        "leaders were computed from the reported shares, and the sample size "
        "given is the raw sample size reported by the pollster where available. "
        f"{SOURCE_NAME} does not endorse proxytool or this derived data.\n"
    )
