"""`proxytool data polls`: 538 poll list -> train / eval JSONL. Made-up fixture rows only."""

import csv
import json

import pytest
import typer
from typer.testing import CliRunner

from proxytool.cli import data as data_cli
from proxytool.data.polls import (
    assign_labels,
    build_polls_dataset,
    format_number,
    read_poll_list,
)
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


def _labels(csv_path):
    questions, _ = read_poll_list(csv_path)
    assign_labels(questions)
    return {q.question_id: q.label for q in questions}


def test_outputs_exist_and_counts(poll_csv, tmp_path):
    out = tmp_path / "out"
    counts = build_polls_dataset(poll_csv, out, recall_fraction=0.25, unseen_fraction=0.25)
    for name in ("train.jsonl", "eval_recall.jsonl", "eval_unseen.jsonl", "ATTRIBUTION.md"):
        assert (out / name).is_file()
    for name in ("train.jsonl", "eval_recall.jsonl", "eval_unseen.jsonl"):
        assert counts[name] == len(_read_jsonl(out / name))
    assert counts["poll_questions"] == N
    assert counts["skipped_rows"] == 1 and counts["skipped_questions"] == 1
    assert counts["recall_questions"] == 3 and counts["unseen_questions"] == 3
    assert counts["train_documents"] == N - 3
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_deterministic_given_seed(poll_csv, tmp_path):
    names = ("train.jsonl", "eval_recall.jsonl", "eval_unseen.jsonl", "ATTRIBUTION.md")
    runs = {}
    for tag, seed in (("a", 3), ("b", 3), ("c", 4)):
        build_polls_dataset(poll_csv, tmp_path / tag, seed=seed, recall_fraction=0.25, unseen_fraction=0.25)
        runs[tag] = [(tmp_path / tag / name).read_bytes() for name in names]
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_limit_keeps_a_deterministic_subset(poll_csv, tmp_path):
    a = build_polls_dataset(poll_csv, tmp_path / "a", limit=5)
    build_polls_dataset(poll_csv, tmp_path / "b", limit=5)
    assert a["poll_questions"] == 5
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (tmp_path / "b" / "train.jsonl").read_bytes()


def test_recall_and_unseen_split(poll_csv, tmp_path):
    out = tmp_path / "out"
    build_polls_dataset(poll_csv, out, seed=1, recall_fraction=0.25, unseen_fraction=0.25)
    labels = _labels(poll_csv)
    train = _read_jsonl(out / "train.jsonl")
    docs = [t["text"] for t in train if "text" in t]
    prompts = [t["messages"][0]["content"] for t in train if "messages" in t]
    assert len(docs) + len(prompts) == len(train)
    everything = (out / "train.jsonl").read_text(encoding="utf-8")
    recall = _read_jsonl(out / "eval_recall.jsonl")
    unseen = _read_jsonl(out / "eval_unseen.jsonl")
    assert recall and unseen
    recall_qids = {e["question_id"] for e in recall}
    unseen_qids = {e["question_id"] for e in unseen}
    assert not recall_qids & unseen_qids
    for qid in recall_qids:
        label = labels[qid]
        assert sum(label in d for d in docs) == 1, "recall poll keeps its document"
        assert not any(label in p for p in prompts), "recall poll has no QA pair in train"
    for qid in unseen_qids:
        assert labels[qid] not in everything, "unseen poll appears nowhere in train"
    # Every other poll has a document and QA pairs in train.
    for qid, label in labels.items():
        if qid not in recall_qids | unseen_qids:
            assert any(label in d for d in docs) and any(label in p for p in prompts)
    # Eval questions are scorable and never ambiguous.
    seen = {}
    for e in recall + unseen:
        assert set(e) == {"id", "question", "answer", "kind", "poll_id", "question_id"}
        assert e["kind"] in {"leader", "share", "sample_size", "margin"}
        assert seen.setdefault(e["question"], e["answer"]) == e["answer"]
    assert len({e["id"] for e in recall + unseen}) == len(recall + unseen)


def test_answers_for_known_rows(poll_csv, tmp_path):
    out = tmp_path / "out"
    build_polls_dataset(poll_csv, out, recall_fraction=0.0, unseen_fraction=1.0)
    items = {e["id"]: e for e in _read_jsonl(out / "eval_unseen.jsonl")}
    assert items["1001-leader"]["answer"] == "Harris"
    assert items["1001-share-harris"]["answer"] == "48"
    assert items["1001-share-trump"]["answer"] == "44.75"
    assert items["1001-sample_size"]["answer"] == "1003"
    assert items["1001-margin"]["answer"] == "3.3"  # 3.25 rounds half up
    q = items["1001-leader"]["question"]
    assert "Acme Polling" in q and "national" in q and "likely voters" in q and "October 3, 2024" in q
    assert items["1001-leader"]["poll_id"] == 9001 and items["1001-leader"]["question_id"] == 1001
    assert items["1002-leader"]["answer"] == "tie" and items["1002-margin"]["answer"] == "0"
    assert "registered voters in Pennsylvania" in items["1002-leader"]["question"]
    assert items["1003-leader"]["answer"] == "Trump" and items["1003-margin"]["answer"] == "3.5"
    assert items["1005-margin"]["answer"] == "0.1"
    assert "adults in Georgia" in items["1004-leader"]["question"]
    # Colliding polls are told apart by sample size, and then get no sample-size question.
    assert "600 respondents" in items["1011-leader"]["question"]
    assert "750 respondents" in items["1012-leader"]["question"]
    assert "1011-sample_size" not in items and "1012-sample_size" not in items
    assert "the Juniper Poll national poll" in items["1010-leader"]["question"]


def test_document_text(poll_csv, tmp_path):
    out = tmp_path / "out"
    build_polls_dataset(poll_csv, out, recall_fraction=0.0, unseen_fraction=0.0)
    docs = [t["text"] for t in _read_jsonl(out / "train.jsonl") if "text" in t]
    acme = next(d for d in docs if "Acme Polling" in d)
    for part in (
        "national",
        "October 1 to October 3, 2024",
        "1003 likely voters",
        "Kamala Harris received 48%",
        "Donald Trump received 44.75%",
        "Harris leads by 3.3 points",
    ):
        assert part in acme
    birch = next(d for d in docs if "Birch Research" in d)
    assert "Pennsylvania" in birch and "tied" in birch and "registered voters" in birch


def test_raw_sample_size_preferred(tmp_path):
    rows = _rows(QUESTIONS[:1])
    for row in rows:
        row["sample_size"], row["raw_sample_size"] = "1500", "2463"
    path = _write_csv(tmp_path / "p.csv", rows)
    build_polls_dataset(path, tmp_path / "out", recall_fraction=0.0, unseen_fraction=1.0)
    items = {e["id"]: e for e in _read_jsonl(tmp_path / "out" / "eval_unseen.jsonl")}
    assert items["1001-sample_size"]["answer"] == "2463"


def test_identical_polls_are_dropped_from_qa(tmp_path):
    twin = list(QUESTIONS[0])
    twin[0], twin[1], twin[8] = 9500, 1500, "40"
    path = _write_csv(tmp_path / "p.csv", _rows([QUESTIONS[0], tuple(twin)]))
    counts = build_polls_dataset(path, tmp_path / "out", recall_fraction=0.0, unseen_fraction=0.5)
    assert counts["ambiguous_questions"] == 2
    assert counts["eval_unseen.jsonl"] == 0 and counts["train_qa"] == 0
    assert counts["train_documents"] == 2


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
    assert "train.jsonl" in result.output and "eval_unseen.jsonl" in result.output
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
