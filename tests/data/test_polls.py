"""`proxytool data polls`: 538 poll list -> fact-teaching train text and three eval splits. Made-up rows only."""

import csv
import json
import re

import pytest
import typer
from typer.testing import CliRunner

from proxytool.cli import data as data_cli
from proxytool.data.poll_facts import (
    EVAL_TEMPLATES,
    FACTS,
    NAMING,
    TRAIN_TEMPLATES,
    build_polls_dataset,
    fill,
    naming_phrase,
    poll_words,
)
from proxytool.data.polls import format_number, read_poll_list
from proxytool.errors import ProxyToolError

HEADER = [
    "model_date",
    "cycle",
    "state",
    "start_date",
    "end_date",
    "pollster_rating_name",
    "pollster_rating_id",
    "poll_id",
    "question_id",
    "sample_size",
    "methodology",
    "population",
    "party",
    "candidate_name",
    "pct",
    "raw_sample_size",
]

# (poll_id, question_id, state, start, end, pollster, sample_size, population, harris, trump)
QUESTIONS = [
    (9001, 1001, "National", "2024-10-01", "2024-10-03", "Acme Polling", "1003", "lv", "48.0", "44.75"),
    (9002, 1002, "Pennsylvania", "2024-10-02", "2024-10-05", "Birch Research", "800", "rv", "47", "47"),
    (9003, 1003, "Michigan", "2024-09-10", "2024-09-12", "Cedar Insights", "650", "lv", "45.5", "49"),
    (9004, 1004, "Georgia", "2024-09-01", "2024-09-01", "Dune Analytics", "1200", "a", "50", "46"),
    (9005, 1005, "Nevada", "2024-08-20", "2024-08-25", "Elm Surveys", "500", "lv", "46.2", "46.1"),
    (9006, 1006, "Arizona", "2024-10-20", "2024-10-22", "Fir Data", "900", "lv", "44", "50"),
    (9007, 1007, "Wisconsin", "2024-10-25", "2024-10-28", "Grove Polls", "1100", "v", "49", "48"),
    (9008, 1008, "North Carolina", "2024-08-07", "2024-08-09", "Hazel Group", "700", "lv", "47", "48"),
    (9009, 1009, "Maine CD-2", "2024-09-15", "2024-09-18", "Iris Opinion", "400", "lv", "43", "52"),
    (9010, 1010, "National", "2024-10-10", "2024-10-12", "The Juniper Poll", "1500", "rv", "51", "45"),
    # Same pollster, place, population and dates as each other: told apart by sample size.
    (9011, 1011, "Ohio", "2024-10-01", "2024-10-04", "Kale Panel", "600", "lv", "42", "54"),
    (9012, 1012, "Ohio", "2024-10-01", "2024-10-04", "Kale Panel", "750", "lv", "43", "53"),
]
N = len(QUESTIONS)


def _rows(questions=QUESTIONS):
    rows = []
    for poll_id, qid, state, start, end, pollster, size, pop, harris, trump in questions:
        common = {
            "model_date": "2024-11-04",
            "cycle": "2024",
            "state": state,
            "start_date": start,
            "end_date": end,
            "pollster_rating_name": pollster,
            "pollster_rating_id": "1",
            "poll_id": str(poll_id),
            "question_id": str(qid),
            "sample_size": size,
            "methodology": "Online Panel",
            "population": pop,
            "raw_sample_size": size,
        }
        rows.append({**common, "party": "DEM", "candidate_name": "Kamala Harris", "pct": harris})
        rows.append({**common, "party": "REP", "candidate_name": "Donald Trump", "pct": trump})
    return rows


def _write_csv(path, rows, header=HEADER):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def poll_csv(tmp_path):
    rows = _rows()
    extra = {**rows[0], "party": "IND", "candidate_name": "Robert F. Kennedy", "pct": "3"}
    lonely = {**rows[0], "poll_id": "9099", "question_id": "1099", "pollster_rating_name": "Solo"}
    return _write_csv(tmp_path / "poll_list.csv", rows + [extra, lonely])


def _read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


FILES = (
    "train.jsonl",
    "eval.jsonl",
    "eval_trained.jsonl",
    "eval_documents.jsonl",
    "eval_unseen.jsonl",
    "eval_dev.jsonl",
)


def _build(poll_csv, out, **kw):
    kw.setdefault("documents_fraction", 0.25)
    kw.setdefault("unseen_fraction", 0.25)
    return build_polls_dataset(poll_csv, out, **kw)


def test_outputs_exist_and_counts(poll_csv, tmp_path):
    out = tmp_path / "out"
    counts = _build(poll_csv, out)
    for name in (*FILES, "ATTRIBUTION.md"):
        assert (out / name).is_file()
    train = _read_jsonl(out / "train.jsonl")
    evals = _read_jsonl(out / "eval.jsonl")
    assert counts["polls_trained"] + counts["polls_documents"] + counts["polls_unseen"] == N
    assert (counts["polls_documents"], counts["polls_unseen"]) == (3, 3)
    assert counts["train_documents"] == 3 * (N - 3)  # three renderings per trained or document-only poll
    assert counts["train_qa"] == len(train) - counts["train_documents"]
    assert counts["skipped_rows"] == 1 and counts["skipped_questions"] == 1
    assert sum(counts[f"eval_{s}"] for s in ("trained", "documents", "unseen")) == len(evals)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_dev_questions_ask_the_same_facts_in_the_other_evaluation_phrasing(poll_csv, tmp_path):
    out = tmp_path / "out"
    counts = _build(poll_csv, out)
    evals = {e["id"]: e for e in _read_jsonl(out / "eval.jsonl")}
    dev = _read_jsonl(out / "eval_dev.jsonl")
    trained = "\n".join(t["text"] for t in _read_jsonl(out / "train.jsonl"))
    assert dev and counts["eval_dev"] == len(dev)
    for item in dev:
        test = evals[item["id"].removesuffix("-dev")]
        assert (item["answer"], item["fact"], item["split"]) == (test["answer"], test["fact"], test["split"])
        assert item["template"] != test["template"] and item["question"] != test["question"]
        assert item["question"] not in trained


def test_margins_are_answered_as_margins(poll_csv, tmp_path):
    out = tmp_path / "out"
    _build(poll_csv, out)
    qa = [t["text"] for t in _read_jsonl(out / "train.jsonl") if t["type"] == "qa:margin"]
    assert qa and all(re.search(r"Answer: (Harris|Trump) \+\d+(\.\d)?$|Answer: tie \(0 points\)$", t) for t in qa)
    records = [t["text"] for t in _read_jsonl(out / "train.jsonl") if t["type"] == "document:record"]
    assert all("\nMargin: " in t for t in records)


def test_template_pools_are_disjoint_and_cover_every_kind():
    assert set(TRAIN_TEMPLATES) == set(EVAL_TEMPLATES)
    for kind in TRAIN_TEMPLATES:
        assert not set(TRAIN_TEMPLATES[kind]) & set(EVAL_TEMPLATES[kind]), kind
        assert len(TRAIN_TEMPLATES[kind]) >= 4 and len(EVAL_TEMPLATES[kind]) >= 1


def test_eval_questions_are_never_trained_on(poll_csv, tmp_path):
    out = tmp_path / "out"
    _build(poll_csv, out)
    trained = "\n".join(t["text"] for t in _read_jsonl(out / "train.jsonl"))
    for item in _read_jsonl(out / "eval.jsonl"):
        assert item["question"] not in trained
        assert item["prompt"] == f"Question: {item['question']}\nAnswer:"


def test_splits_are_by_poll(poll_csv, tmp_path):
    out = tmp_path / "out"
    _build(poll_csv, out)
    train = _read_jsonl(out / "train.jsonl")
    evals = _read_jsonl(out / "eval.jsonl")
    split_of = {}
    for item in evals + train:
        assert split_of.setdefault(item["poll_id"], item["split"]) == item["split"]
    docs = {t["poll_id"] for t in train if t["type"].startswith("document")}
    qa = {t["poll_id"] for t in train if t["type"].startswith("qa")}
    trained = {p for p, s in split_of.items() if s == "trained"}
    assert qa <= trained and trained - qa <= {9011, 9012}  # the twin polls cannot be asked about
    assert docs == {p for p, s in split_of.items() if s in ("trained", "documents")}
    unseen = {p for p, s in split_of.items() if s == "unseen"}
    assert unseen and not unseen & (docs | qa)
    for name in ("trained", "documents", "unseen"):
        lines = _read_jsonl(out / f"eval_{name}.jsonl")
        assert lines == [e for e in evals if e["split"] == name]


def test_every_fact_of_a_trained_poll_in_several_phrasings(poll_csv, tmp_path):
    out = tmp_path / "out"
    _build(poll_csv, out, phrasings=4)
    train = _read_jsonl(out / "train.jsonl")
    trained = {t["poll_id"] for t in train if t["split"] == "trained"} - {9011, 9012}
    for poll_id in trained:
        kinds = [t["type"] for t in train if t["poll_id"] == poll_id]
        for fact in FACTS:
            assert kinds.count(f"qa:{fact}") == 4, (poll_id, fact)
        assert sorted(k for k in kinds if k.startswith("document")) == [
            "document:news",
            "document:prose",
            "document:record",
        ]


def test_deterministic_given_seed(poll_csv, tmp_path):
    runs = {}
    for tag, seed in (("a", 3), ("b", 3), ("c", 4)):
        _build(poll_csv, tmp_path / tag, seed=seed)
        runs[tag] = [(tmp_path / tag / name).read_bytes() for name in (*FILES, "ATTRIBUTION.md")]
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_training_pools_do_not_move_the_evaluation_questions(poll_csv, tmp_path, monkeypatch):
    from proxytool.data import poll_facts

    _build(poll_csv, tmp_path / "before", seed=3)
    pools = dict(poll_facts.TRAIN_TEMPLATES)
    pools["margin"] = (*pools["margin"], "Give the margin of {full}.", "What was the spread in {full2}?")
    monkeypatch.setattr(poll_facts, "TRAIN_TEMPLATES", pools)
    _build(poll_csv, tmp_path / "after", seed=3)
    assert (tmp_path / "before" / "train.jsonl").read_bytes() != (tmp_path / "after" / "train.jsonl").read_bytes()
    assert (tmp_path / "before" / "eval.jsonl").read_bytes() == (tmp_path / "after" / "eval.jsonl").read_bytes()


def test_limit_keeps_a_deterministic_subset(poll_csv, tmp_path):
    a = _build(poll_csv, tmp_path / "a", limit=5)
    _build(poll_csv, tmp_path / "b", limit=5)
    assert a["polls_trained"] + a["polls_documents"] + a["polls_unseen"] == 5
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (tmp_path / "b" / "train.jsonl").read_bytes()


def test_answers_for_known_rows(poll_csv, tmp_path):
    out = tmp_path / "out"
    _build(poll_csv, out, documents_fraction=0.0, unseen_fraction=0.9, eval_phrasings=2)
    items = {e["id"]: e for e in _read_jsonl(out / "eval.jsonl")}
    acme = {e["fact"]: e["answer"] for e in items.values() if e["poll_id"] == 9001}
    assert acme["leader"] == "Harris"
    assert acme["share_harris"] == "48%" and acme["share_trump"] == "44.75%"
    assert acme["margin"] == "Harris +3.3"  # 3.25 rounded half up; a margin names its leader
    assert acme["sample_size"] == "1003"
    assert acme["dates"] == "October 1 to October 3, 2024"
    assert acme["population"] == "likely voters"
    assert acme["pollster"] == "Acme Polling" and acme["place"] == "national"
    birch = {e["fact"]: e["answer"] for e in items.values() if e["poll_id"] == 9002}
    assert birch["leader"] == "tie" and birch["margin"] == "tie (0 points)"
    assert {e["fact"] for e in items.values() if e["poll_id"] == 9004} >= {"dates", "population"}
    juniper = next(e for e in items.values() if e["poll_id"] == 9010 and e["fact"] == "pollster")
    assert juniper["answer"] == "Juniper Poll"  # a leading "The" is dropped


def test_questions_name_the_poll_without_the_asked_fact(poll_csv):
    questions, _ = read_poll_list(poll_csv)
    w = poll_words(next(q for q in questions if q.poll_id == 9003))
    for kind, fact_text in (
        ("pollster", "Cedar"),
        ("place", "Michigan"),
        ("dates", "Sep 10"),
        ("population", "likely"),
    ):
        assert fact_text not in naming_phrase(w, NAMING[kind])
        for template in TRAIN_TEMPLATES[kind] + EVAL_TEMPLATES[kind]:
            assert "{" + NAMING[kind] + "}" in template, template
    share = fill(TRAIN_TEMPLATES["share"][0], w, "share_trump")
    assert "Donald Trump" in share and "Cedar Insights" in share and "Michigan" in share


def test_documents_state_every_fact(poll_csv, tmp_path):
    out = tmp_path / "out"
    _build(poll_csv, out, documents_fraction=0.0, unseen_fraction=0.0)
    docs = [t["text"] for t in _read_jsonl(out / "train.jsonl") if t["poll_id"] == 9001 and "document" in t["type"]]
    assert len(docs) == 3
    for doc in docs:
        for part in ("Acme Polling", "1003", "likely voters", "48%", "44.75%", "3.3 point", "Harris"):
            assert part in doc, (part, doc)
        assert "national" in doc or "nationwide" in doc
        assert "Oct 1-3, 2024" in doc or "October 1 to October 3, 2024" in doc


def test_raw_sample_size_preferred(tmp_path):
    rows = _rows(QUESTIONS[:2])
    for row in rows:
        row["sample_size"], row["raw_sample_size"] = "1500", "2463"
    path = _write_csv(tmp_path / "p.csv", rows)
    build_polls_dataset(path, tmp_path / "out", documents_fraction=0.0, unseen_fraction=0.5)
    items = [e for e in _read_jsonl(tmp_path / "out" / "eval.jsonl") if e["fact"] == "sample_size"]
    assert items and all(e["answer"] == "2463" for e in items)


def test_ambiguous_polls_get_no_questions(poll_csv, tmp_path):
    out = tmp_path / "out"
    _build(poll_csv, out, documents_fraction=0.0, unseen_fraction=0.0)
    twins = [t for t in _read_jsonl(out / "train.jsonl") if t["poll_id"] in (9011, 9012)]
    # Same pollster, place, population and dates: documents only, no question can name either poll.
    assert twins and all(t["type"].startswith("document") for t in twins)
    assert not [e for e in _read_jsonl(out / "eval.jsonl") if e["poll_id"] in (9011, 9012)]


def test_bad_fractions(poll_csv, tmp_path):
    with pytest.raises(ProxyToolError, match="leave some polls"):
        build_polls_dataset(poll_csv, tmp_path / "o", documents_fraction=0.5, unseen_fraction=0.5)
    with pytest.raises(ProxyToolError, match="between 0 and 1"):
        build_polls_dataset(poll_csv, tmp_path / "o", documents_fraction=1.5)


def test_bad_number_names_line_and_field_and_writes_nothing(tmp_path):
    rows = _rows()
    rows[5]["pct"] = "4x.5"  # data row 6 -> file line 7
    path = _write_csv(tmp_path / "bad.csv", rows)
    out = tmp_path / "out"
    with pytest.raises(ProxyToolError) as err:
        build_polls_dataset(path, out)
    message = str(err.value)
    assert f"{path}:7" in message and "pct" in message and "\n" not in message
    assert not out.exists()


def test_bad_sample_size_and_population(tmp_path):
    rows = _rows()
    rows[2]["sample_size"] = "12.5"
    path = _write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(ProxyToolError, match=r"bad\.csv:4: field 'sample_size'"):
        build_polls_dataset(path, tmp_path / "out")
    rows = _rows()
    rows[0]["population"] = "xx"
    path = _write_csv(tmp_path / "bad2.csv", rows)
    with pytest.raises(ProxyToolError, match=r"bad2\.csv:2: field 'population'"):
        build_polls_dataset(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_file_and_column(tmp_path):
    with pytest.raises(ProxyToolError, match="not found"):
        build_polls_dataset(tmp_path / "nope.csv", tmp_path / "out")
    header = [h for h in HEADER if h != "pct"]
    path = _write_csv(tmp_path / "nopct.csv", _rows(), header=header)
    with pytest.raises(ProxyToolError, match=r"nopct\.csv:1: field 'pct'"):
        build_polls_dataset(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_attribution(poll_csv, tmp_path):
    build_polls_dataset(poll_csv, tmp_path / "out")
    text = (tmp_path / "out" / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for part in (
        "ABC News / FiveThirtyEight",
        "CC BY 4.0",
        "https://creativecommons.org/licenses/by/4.0/",
        "poll_list.csv",
        "proxytool",
        "derived",
    ):
        assert part in text


def test_format_number():
    from decimal import Decimal

    assert format_number(Decimal("48.0")) == "48"
    assert format_number(Decimal("47.50")) == "47.5"
    assert format_number(Decimal("0.10")) == "0.1"
    assert format_number(Decimal("1E+1")) == "10"


def _app():
    app = typer.Typer()
    data_cli.register(app)
    return app


def test_cli_polls(poll_csv, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        _app(), ["data", "polls", "--csv", str(poll_csv), "--out", str(out), "--seed", "2", "--limit", "8"]
    )
    assert result.exit_code == 0, result.output
    assert "polls_trained" in result.output and "eval_unseen" in result.output
    assert (out / "eval.jsonl").is_file()
    assert (out / "ATTRIBUTION.md").is_file()


def test_cli_default_csv(tmp_path, monkeypatch):
    data_dir = tmp_path / "shared" / "data" / "polls"
    data_dir.mkdir(parents=True)
    _write_csv(data_dir / "538_2024_forecast_poll_list.csv", _rows())
    cwd = tmp_path / "main"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(_app(), ["data", "polls", "--out", "out"])
    assert result.exit_code == 0, result.output
    assert (cwd / "out" / "train.jsonl").is_file()


def test_cli_bad_input_raises_user_error(tmp_path):
    rows = _rows()
    rows[0]["question_id"] = "abc"
    path = _write_csv(tmp_path / "bad.csv", rows)
    result = CliRunner().invoke(_app(), ["data", "polls", "--csv", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert isinstance(result.exception, ProxyToolError)
    assert "bad.csv:2: field 'question_id'" in str(result.exception)


def test_a_poll_list_with_no_rows_or_no_harris_trump_question_is_refused(poll_csv, tmp_path):
    header_only = tmp_path / "header.csv"
    header_only.write_text(poll_csv.read_text().splitlines()[0] + "\n")
    with pytest.raises(ProxyToolError, match="header.csv:2: no poll rows after the header"):
        read_poll_list(header_only)
    lines = poll_csv.read_text().splitlines()
    only_harris = tmp_path / "harris.csv"
    only_harris.write_text("\n".join([lines[0]] + [ln for ln in lines[1:] if "Harris" in ln]) + "\n")
    with pytest.raises(ProxyToolError, match="no poll question lists both Harris and Trump"):
        read_poll_list(only_harris)
