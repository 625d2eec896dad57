"""Poll facts in many phrasings: training data that teaches facts, and held-out questions about them.

One poll (538's first Harris-Trump question of each ``poll_id``) has nine facts (:data:`FACTS`):
leader, Harris's share, Trump's share, sample size, margin, dates, population, pollster and place.
Training text says every fact of a poll in several phrasings, following "Physics of Language Models,
Part 3.1" (paraphrase augmentation, and QA mixed with documents, make facts extractable):

* documents in three differently structured renderings (:data:`DOCUMENT_RENDERINGS`: prose, a
  record card, a news lead), all written for every poll that is trained on;
* question-answer lines ``"Question: ...\\nAnswer: ..."`` drawn from a pool of question templates per
  fact kind (:data:`TRAIN_TEMPLATES`).

Evaluation questions use a disjoint pool (:data:`EVAL_TEMPLATES`), so every evaluation question is a
phrasing the model never saw. A question names its poll by the facts it does not ask about (who ran
the poll is asked with place, population and dates; where, with pollster, population and dates; and
so on); a question whose naming phrase fits more than one poll of the data set is dropped.

Polls fall into three splits (the unit is the poll): ``trained`` (documents + QA lines),
``documents`` (documents only: can a fact seen only in documents be extracted?) and ``unseen``
(nothing: the priors control). Everything is plain text, raw (no chat template): the cheapest
examples per fact.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxytool.data.polls import (
    CANDIDATES,
    MONTHS,
    POPULATIONS,
    PollQuestion,
    attribution_text,
    format_date_range,
    format_number,
    jsonl_text,
    read_poll_list,
)
from proxytool.errors import ProxyToolError, at
from proxytool.files.atomic import write_text

SPLITS = ("trained", "documents", "unseen")
"""Evaluation splits: facts trained with QA lines (asked in new phrasings), facts seen only in
documents, and polls never seen (priors)."""

FACTS = (
    "leader",
    "share_harris",
    "share_trump",
    "sample_size",
    "margin",
    "dates",
    "population",
    "pollster",
    "place",
)
"""One poll's facts, in the order they are written."""

KIND_OF_FACT = {f: ("share" if f.startswith("share_") else f) for f in FACTS}
"""Fact -> scoring kind (both shares are scored as ``share``)."""

QA_PROMPT = "Question: {question}\nAnswer:"
"""The raw prompt of every question, in training and in evaluation."""

_SHORT_MONTHS = tuple(month[:3] for month in MONTHS)

# --------------------------------------------------------------------------- the words of a poll


@dataclass(frozen=True)
class PollWords:
    """The phrases templates are filled with, for one poll."""

    pollster: str  # "Emerson College" (a leading "The " dropped)
    pollster_possessive: str  # "Emerson College's"
    place: str  # "Pennsylvania", or "national"
    place_in: str  # "in Pennsylvania", or "nationwide"
    place_adj: str  # "Pennsylvania", or "national"
    population: str  # "likely voters"
    dates: str  # "October 1 to October 3, 2024"
    dates_short: str  # "Oct 1-3, 2024"
    sample_size: str  # "1000"
    harris: str  # "48"
    trump: str  # "47"
    leader: str  # "Harris", "Trump" or "tie"
    loser: str
    margin: str  # "1"
    margin_words: str  # "1 point", "2.5 points", "0 points (a tie)"
    margin_lead: str  # the margin as an answer: "Harris +1", "Trump +2.5", "tie (0 points)"


def _short_dates(start: str, end: str) -> str:
    sy, sm, sd = (int(x) for x in start.split("-"))
    ey, em, ed = (int(x) for x in end.split("-"))
    if (sy, sm, sd) == (ey, em, ed):
        return f"{_SHORT_MONTHS[em - 1]} {ed}, {ey}"
    if (sy, sm) == (ey, em):
        return f"{_SHORT_MONTHS[sm - 1]} {sd}-{ed}, {ey}"
    return f"{_SHORT_MONTHS[sm - 1]} {sd}-{_SHORT_MONTHS[em - 1]} {ed}, {ey}"


def poll_words(q: PollQuestion) -> PollWords:
    """The phrases of one poll question (see :class:`PollWords`)."""
    pollster = q.pollster[4:] if q.pollster.startswith("The ") else q.pollster
    margin = format_number(q.margin)
    if q.leader == "tie":
        margin_words = "0 points (a tie)"
    else:
        margin_words = f"{margin} point" + ("" if q.margin == 1 else "s")
    leader = q.leader
    margin_lead = "tie (0 points)" if leader == "tie" else f"{leader} +{margin}"
    return PollWords(
        pollster=pollster,
        pollster_possessive=pollster + ("'" if pollster.endswith("s") else "'s"),
        place="national" if q.national else q.state,
        place_in="nationwide" if q.national else f"in {q.state}",
        place_adj="national" if q.national else q.state,
        population=POPULATIONS[q.population],
        dates=format_date_range(q.start_date, q.end_date),
        dates_short=_short_dates(q.start_date, q.end_date),
        sample_size=str(q.sample_size),
        harris=format_number(q.shares["Harris"]),
        trump=format_number(q.shares["Trump"]),
        leader=leader,
        loser={"Harris": "Trump", "Trump": "Harris"}.get(leader, "tie"),
        margin=margin,
        margin_words=margin_words,
        margin_lead=margin_lead,
    )


def answer(w: PollWords, fact: str) -> str:
    """The reference answer of a fact, as written after ``Answer:``."""
    return {
        "leader": w.leader,
        "share_harris": f"{w.harris}%",
        "share_trump": f"{w.trump}%",
        "sample_size": w.sample_size,
        "margin": w.margin_lead,  # a margin, not a share: who leads and by how much
        "dates": w.dates,
        "population": w.population,
        "pollster": w.pollster,
        "place": w.place,
    }[fact]


# --------------------------------------------------------------------------- documents


def _doc_prose(w: PollWords) -> str:
    if w.leader == "tie":
        result = f"The two candidates were tied at {w.harris}%."
    else:
        result = f"{w.leader} led by {w.margin_words}."
    return (
        f"{w.pollster} polled {w.sample_size} {w.population} {w.place_in} from {w.dates} for the 2024 presidential "
        f"race. Kamala Harris received {w.harris}% and Donald Trump {w.trump}%. {result}"
    )


def _doc_record(w: PollWords) -> str:
    leader = "tie" if w.leader == "tie" else f"{w.leader}, by {w.margin_words}"
    return (
        f"Poll: {w.pollster}, {w.place_adj}, {w.dates_short}\n"
        f"Pollster: {w.pollster}\nPlace: {w.place}\nDates: {w.dates}\nPopulation: {w.population}\n"
        f"Sample size: {w.sample_size}\nHarris: {w.harris}%\nTrump: {w.trump}%\nLeader: {leader}\n"
        f"Margin: {w.margin_lead}"
    )


def _doc_news(w: PollWords) -> str:
    if w.leader == "tie":
        lead = f"Harris and Trump were tied at {w.harris}%"
    else:
        mine, theirs = (w.harris, w.trump) if w.leader == "Harris" else (w.trump, w.harris)
        lead = f"{w.leader} led {w.loser} {mine}% to {theirs}%, a margin of {w.margin_words},"
    return (
        f"{lead} among {w.population} {w.place_in}, according to a {w.pollster} poll conducted "
        f"{w.dates_short} with a sample of {w.sample_size}."
    )


DOCUMENT_RENDERINGS: dict[str, Callable[[PollWords], str]] = {
    "prose": _doc_prose,
    "record": _doc_record,
    "news": _doc_news,
}
"""Differently structured documents; each states all nine facts of a poll."""


# --------------------------------------------------------------------------- questions

# Each template names the poll with a phrase built from the facts it does not ask about:
#   {full}   pollster, place, population and dates (for leader, shares, sample size, margin)
#   {no_pollster} / {no_place} / {no_population} / {no_dates}: the poll minus the asked fact
# {cand} is a candidate's full name (share questions).
_NAMES = {
    "full": "{pollster_possessive} {dates_short} poll of {population} {place_in}",
    "full2": "the {pollster} {place_adj} poll of {population} ({dates_short})",
    "no_pollster": "the {place_adj} poll of {population} from {dates_short}",
    "no_place": "{pollster_possessive} poll of {population} from {dates_short}",
    "no_population": "{pollster_possessive} {place_adj} poll from {dates_short}",
    "no_dates": "{pollster_possessive} {place_adj} poll of {population}",
}
"""How a question names its poll; the key says which facts the phrase leaves out."""

NAMING = {
    "pollster": "no_pollster",
    "place": "no_place",
    "population": "no_population",
    "dates": "no_dates",
}
"""Fact -> the naming phrase its questions use (other facts use ``full`` / ``full2``)."""

TRAIN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "leader": (
        "Who led in {full}?",
        "In {full2}, which candidate was ahead?",
        "Which candidate came out on top in {full}?",
        "Who was winning {full2}, Harris or Trump?",
        "According to {full}, who was leading the race?",
    ),
    "share": (
        "What share did {cand} get in {full}?",
        "In {full2}, what percentage did {cand} receive?",
        "How much support did {cand} have in {full}?",
        "What was {cand}'s percentage in {full2}?",
        "In {full}, what percent backed {cand}?",
    ),
    "sample_size": (
        "How many people were surveyed in {full}?",
        "What was the sample size of {full2}?",
        "How many respondents did {full} have?",
        "How large was the sample in {full2}?",
        "How many people answered {full}?",
    ),
    "margin": (
        "By how many points did the leader lead in {full}?",
        "What was the margin in {full2}?",
        "How far apart were Harris and Trump in {full}?",
        "In {full2}, how big was the gap between the candidates?",
        "What was the lead in {full}?",
        "How large was the leader's advantage in {full2}?",
        "How many points ahead was the leader in {full}?",
        "How wide was the margin between Harris and Trump in {full2}?",
    ),
    "pollster": (
        "Who conducted {no_pollster}?",
        "Which pollster ran {no_pollster}?",
        "Which organization carried out {no_pollster}?",
        "Who was the pollster behind {no_pollster}?",
        "Name the pollster of {no_pollster}.",
    ),
    "place": (
        "Where was {no_place} conducted?",
        "Which state, or the nation, did {no_place} cover?",
        "In what place did {no_place} survey people?",
        "What was the geography of {no_place}?",
        "Where did {no_place} take place?",
    ),
    "population": (
        "Who did {no_population} survey?",
        "What population did {no_population} sample?",
        "Which group of people did {no_population} interview?",
        "Was {no_population} of likely voters, registered voters or adults?",
        "What population was {no_population} drawn from?",
    ),
    "dates": (
        "When was {no_dates} conducted?",
        "What were the dates of {no_dates}?",
        "When was {no_dates} in the field?",
        "On which dates did {no_dates} run?",
        "When did {no_dates} take place?",
    ),
}
"""Question templates trained on, per scoring kind."""

EVAL_TEMPLATES: dict[str, tuple[str, ...]] = {
    "leader": ("Name the candidate in front in {full}.", "In {full2}, who had the higher share?"),
    "share": (
        "In {full}, {cand} polled at what percent?",
        "What level of support was recorded for {cand} in {full2}?",
    ),
    "sample_size": ("{full} interviewed how many people?", "What number of respondents took part in {full2}?"),
    "margin": (
        "How many percentage points separated the two candidates in {full}?",
        "In {full2}, what was the size of the lead?",
    ),
    "pollster": ("Name the polling firm responsible for {no_pollster}.", "{no_pollster} was run by which firm?"),
    "place": ("Which area did {no_place} poll?", "{no_place} polled people where?"),
    "population": ("Which kind of respondents did {no_population} poll?", "{no_population} sampled which group?"),
    "dates": ("During what period was {no_dates} taken?", "Over which days did {no_dates} collect responses?"),
}
"""Question templates kept for evaluation only: disjoint from :data:`TRAIN_TEMPLATES`."""


def naming_phrase(w: PollWords, key: str) -> str:
    """One of :data:`_NAMES` filled in for a poll."""
    return _NAMES[key].format(**vars(w))


def fill(template: str, w: PollWords, fact: str) -> str:
    """A question: ``template`` with the poll's naming phrases (and candidate) filled in."""
    values = {key: naming_phrase(w, key) for key in _NAMES if "{" + key + "}" in template}
    if fact.startswith("share_"):
        values["cand"] = {"share_harris": "Kamala Harris", "share_trump": "Donald Trump"}[fact]
    text = template.format(**values)
    return text[0].upper() + text[1:]


def naming_keys(fact: str) -> tuple[str, ...]:
    """The naming phrases a fact's questions may use."""
    return (NAMING[fact],) if fact in NAMING else ("full", "full2")


def qa_text(question: str, reference: str) -> str:
    """A training line: the raw question prompt followed by the answer."""
    return QA_PROMPT.format(question=question) + " " + reference


def pick_templates(pool: tuple[str, ...], n: int, rng: random.Random) -> list[str]:
    """``n`` distinct templates from ``pool`` (all of them, shuffled, when ``n`` >= its size)."""
    chosen = list(pool)
    rng.shuffle(chosen)
    return chosen[: max(1, min(n, len(chosen)))]


def candidates() -> tuple[str, ...]:
    """Candidate last names (for leader scoring)."""
    return CANDIDATES


# --------------------------------------------------------------------------- the data set


def one_question_per_poll(questions: list[PollQuestion]) -> list[PollQuestion]:
    """The first Harris-Trump question (lowest ``question_id``) of each poll, sorted by ``poll_id``.

    A poll often asks several variants (with third parties, other populations); one question per
    poll keeps a poll's facts unambiguous.
    """
    first: dict[int, PollQuestion] = {}
    for q in questions:
        if q.poll_id not in first or q.question_id < first[q.poll_id].question_id:
            first[q.poll_id] = q
    return [first[k] for k in sorted(first)]


def ambiguous_names(words: dict[int, PollWords]) -> set[tuple[int, str]]:
    """``(poll_id, naming key)`` pairs whose naming phrase also fits another poll of the data set."""
    out: set[tuple[int, str]] = set()
    for key in _NAMES:
        seen: dict[str, list[int]] = {}
        for poll_id, w in words.items():
            seen.setdefault(naming_phrase(w, key).lower(), []).append(poll_id)
        for ids in seen.values():
            if len(ids) > 1:
                out.update((i, key) for i in ids)
    return out


def assign_splits(
    poll_ids: list[int], rng: random.Random, documents_fraction: float, unseen_fraction: float
) -> dict[int, str]:
    """Split polls (not questions) into :data:`SPLITS`; at least one trained poll is kept."""
    ids = sorted(poll_ids)
    rng.shuffle(ids)
    n_unseen = round(len(ids) * unseen_fraction)
    n_docs = round(len(ids) * documents_fraction)
    n_docs = max(0, min(n_docs, len(ids) - n_unseen - 1))
    n_unseen = max(0, min(n_unseen, len(ids) - n_docs - 1))
    split = {i: "unseen" for i in ids[:n_unseen]}
    split.update({i: "documents" for i in ids[n_unseen : n_unseen + n_docs]})
    split.update({i: "trained" for i in ids[n_unseen + n_docs :]})
    return split


# Over 60 lines: one record per fact and phrasing, listed in the order the data card describes them.
def build_records(
    polls: list[PollQuestion],
    split: dict[int, str],
    rng: random.Random,
    phrasings: int = 4,
    eval_phrasings: int = 1,
) -> tuple[list[dict], list[dict], list[dict]]:
    """Training lines, evaluation questions and dev questions for polls already split.

    Args:
        polls: One question per poll.
        split: ``poll_id`` -> split name.
        rng: Seeded generator (template choice, order).
        phrasings: QA lines per fact of a trained poll (distinct training templates).
        eval_phrasings: Evaluation questions per fact (distinct evaluation templates).

    Returns:
        ``(train, evals, dev)``: ``{"text", "poll_id", "split", "type"}`` lines (``type`` document or
        qa, shuffled), evaluation records (``id``, ``question``, ``prompt``, ``answer``, ``kind``,
        ``fact``, ``split``, ``poll_id``, ``template``) and dev records of the same shape: per fact,
        one evaluation phrasing the evaluation questions do not use (where one is left), for
        choosing α (``proxytool eval --alpha auto``) on other questions than those reported.
    """
    # Evaluation templates come from their own stream, so a change to the training pools leaves the
    # evaluation questions as they were (training-data experiments compare on the same questions).
    eval_rng = random.Random(rng.getrandbits(64))
    words = {q.poll_id: poll_words(q) for q in polls}
    ambiguous = ambiguous_names(words)
    train: list[dict] = []
    evals: list[dict] = []
    dev: list[dict] = []
    for q in polls:
        w, where = words[q.poll_id], split[q.poll_id]
        if where in ("trained", "documents"):
            for name, render in DOCUMENT_RENDERINGS.items():
                train.append({"text": render(w), "poll_id": q.poll_id, "split": where, "type": f"document:{name}"})
        for fact in FACTS:
            kind = KIND_OF_FACT[fact]
            usable = [k for k in naming_keys(fact) if (q.poll_id, k) not in ambiguous]
            if not usable:
                continue
            ok = [t for t in TRAIN_TEMPLATES[kind] if any("{" + k + "}" in t for k in usable)]
            if where == "trained":
                for template in pick_templates(tuple(ok), phrasings, rng):
                    text = qa_text(fill(template, w, fact), answer(w, fact))
                    train.append({"text": text, "poll_id": q.poll_id, "split": where, "type": f"qa:{fact}"})
            ok = [t for t in EVAL_TEMPLATES[kind] if any("{" + k + "}" in t for k in usable)]
            chosen = pick_templates(tuple(ok), eval_phrasings, eval_rng) if ok else []
            for i, template in enumerate(chosen):
                evals.append(_eval_record(q, w, fact, template, f"{q.poll_id}-{fact}" + (f"-{i}" if i else ""), where))
            # the dev question (α calibration): an evaluation phrasing the test question does not use;
            # picked without drawing from eval_rng, so the test questions stay as they were
            for template in [t for t in ok if t not in chosen][:1]:
                dev.append(_eval_record(q, w, fact, template, f"{q.poll_id}-{fact}-dev", where))
    rng.shuffle(train)
    trained_text = "\n".join(t["text"] for t in train)
    for e in evals + dev:  # guard: no evaluation question is ever trained on
        if e["question"] in trained_text:
            raise AssertionError(f"evaluation question found in training text: {e['question']!r}")
    return train, evals, dev


def _eval_record(q: PollQuestion, w: PollWords, fact: str, template: str, record_id: str, where: str) -> dict:
    question = fill(template, w, fact)
    kind = KIND_OF_FACT[fact]
    return {
        "id": record_id,
        "question": question,
        "prompt": QA_PROMPT.format(question=question),
        "answer": answer(w, fact),
        "kind": kind,
        "fact": fact,
        "split": where,
        "poll_id": q.poll_id,
        "template": EVAL_TEMPLATES[kind].index(template),
    }


# Over 60 lines: the split, the three renderings and the files are one recipe that reads top to bottom.
def build_polls_dataset(
    csv_path: Path,
    out_dir: Path,
    seed: int = 0,
    limit: int | None = None,
    documents_fraction: float = 0.2,
    unseen_fraction: float = 0.2,
    phrasings: int = 4,
    eval_phrasings: int = 1,
) -> dict:
    """Convert a 538 poll list into fact-teaching training text and three evaluation splits.

    Writes into ``out_dir`` (each file atomically): ``train.jsonl`` (``{"text"}`` lines: documents
    and QA lines, shuffled; ``poll_id``/``split``/``type`` are kept for reading and ignored by
    training), ``eval.jsonl`` (every split), ``eval_trained.jsonl``, ``eval_documents.jsonl``,
    ``eval_unseen.jsonl``, ``eval_dev.jsonl`` (other phrasings of the same facts, for choosing α)
    and ``ATTRIBUTION.md``. Byte-identical output for the same input and seed.

    Args:
        csv_path: FiveThirtyEight ``poll_list.csv``.
        out_dir: Output folder (created if missing).
        seed: Seed for the ``limit`` subset, the split, template choice and order.
        limit: Keep only this many polls (a seeded random subset), e.g. for a CPU demo.
        documents_fraction: Share of polls trained only as documents (split ``documents``).
        unseen_fraction: Share of polls held out entirely (split ``unseen``).
        phrasings: QA lines per fact of a trained poll.
        eval_phrasings: Evaluation questions per fact.

    Returns:
        Counts: polls per split, training lines (documents, QA lines, tokens are not counted here),
        evaluation questions per split, skipped rows and questions of the CSV.

    Raises:
        ProxyToolError: Bad arguments or bad input; nothing is written then.
    """
    for name, frac in (("documents_fraction", documents_fraction), ("unseen_fraction", unseen_fraction)):
        if not 0 <= frac <= 1:
            raise ProxyToolError(f"{name} must be between 0 and 1, got {frac}")
    if documents_fraction + unseen_fraction >= 1:
        raise ProxyToolError("documents_fraction + unseen_fraction must leave some polls to train on (< 1)")
    if limit is not None and limit < 1:
        raise ProxyToolError(f"limit must be at least 1, got {limit}")
    if phrasings < 1 or eval_phrasings < 1:
        raise ProxyToolError("phrasings and eval_phrasings must be at least 1")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ProxyToolError(f"{at(out_dir)}: exists and is not a folder")

    questions, summary = read_poll_list(Path(csv_path))
    polls = one_question_per_poll(questions)
    rng = random.Random(seed)
    if limit is not None and limit < len(polls):
        polls = sorted(rng.sample(polls, limit), key=lambda q: q.poll_id)
    split = assign_splits([q.poll_id for q in polls], rng, documents_fraction, unseen_fraction)
    train, evals, dev = build_records(polls, split, rng, phrasings, eval_phrasings)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "train.jsonl", jsonl_text(train))
    write_text(out_dir / "eval.jsonl", jsonl_text(evals))
    for name in SPLITS:
        write_text(out_dir / f"eval_{name}.jsonl", jsonl_text([e for e in evals if e["split"] == name]))
    write_text(out_dir / "eval_dev.jsonl", jsonl_text(dev))
    write_text(out_dir / "ATTRIBUTION.md", attribution_text(Path(csv_path)))
    counts = {f"polls_{name}": sum(1 for s in split.values() if s == name) for name in SPLITS}
    counts["train_documents"] = sum(1 for t in train if t["type"].startswith("document"))
    counts["train_qa"] = sum(1 for t in train if t["type"].startswith("qa"))
    counts.update({f"eval_{name}": sum(1 for e in evals if e["split"] == name) for name in SPLITS})
    counts["eval_dev"] = len(dev)
    counts.update(skipped_rows=summary["skipped_rows"], skipped_questions=summary["skipped_questions"])
    return counts
