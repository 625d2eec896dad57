"""The substitution table of the docs check: what stands in for real models and data when a documented
command runs for real on tiny models.

A documented command runs with its own flags, in a fresh working folder per page, through three kinds of
stand-in (and nothing else is changed):

1. ``MODELS``: names the docs use, registered in the run's own registry (``$PROXYTOOL_HOME``) for tiny
   in-process models, so ``--base qwen2.5-coder-1.5b-instruct`` loads a 2-layer model (the offline packs
   among them are recorded as installed: `proxytool models install` finds them and downloads nothing);
2. ``FILES``: files the docs read, written into the working folder (or ``../shared`` beside it) with a
   few made-up lines of the right format;
3. ``WORDS``: whole command words swapped for a path, only where a file cannot simply be placed (the
   trained polls expert is read by most pages and written by the main job's recipe, so reading it from
   the working folder would make that recipe refuse its non-empty output folder).

Add a name here when a new page uses a new model name or input file; a command that needs more (a real
model's answers, a GPU, a server) is marked parse-only in the page instead.
"""

import csv
import json
import shutil
from pathlib import Path

from tiny import OTHER_CORPUS, build_tokenizer, save_adapter, save_model

# registry name -> (tiny model key, registry hints)
MODELS = {
    "qwen2.5-coder-1.5b-instruct": ("base", {"prompt_format": "chat"}),
    "qwen2.5-coder-0.5b-instruct": ("anti", {"prompt_format": "chat"}),
    "gpt2-large": ("base", {"prompt_format": "raw"}),
    "distilgpt2": ("gpt2", {"prompt_format": "raw"}),
    "llama-2-13b": ("base", {"prompt_format": "raw"}),
    "llama-2-13b-chat": ("base", {"prompt_format": "chat"}),
    "llama-2-7b": ("anti", {"prompt_format": "raw"}),
    "llama-2-7b-chat": ("expert", {"prompt_format": "chat", "base": "llama-2-7b"}),
    "polls-demo-expert": ("adapter", {}),
    "smollm2-135m-instruct": ("other", {"prompt_format": "chat"}),  # another tokenizer: cross-tokenizer pairs
}

# word in a command -> tiny stand-in key
WORDS = {"runs/demo/polls-expert": "adapter"}

PROMPTS = ["Who leads the national poll?", "The answer is", "def add(a, b):"]
POLLS = [  # (poll_id, state, start, end, pollster, sample size, population, Harris, Trump): made up
    (9001, "National", "2024-10-01", "2024-10-03", "Acme Polling", "1003", "lv", "48.0", "44.75"),
    (9002, "Pennsylvania", "2024-10-02", "2024-10-05", "Birch Research", "800", "rv", "47", "47"),
    (9003, "Michigan", "2024-09-10", "2024-09-12", "Cedar Insights", "650", "lv", "45.5", "49"),
    (9004, "Georgia", "2024-09-01", "2024-09-01", "Dune Analytics", "1200", "a", "50", "46"),
    (9005, "Nevada", "2024-08-20", "2024-08-25", "Elm Surveys", "500", "lv", "46.2", "46.1"),
    (9006, "Arizona", "2024-10-20", "2024-10-22", "Fir Data", "900", "lv", "44", "50"),
]
GSM8K = [("Janet has 3 apples and buys 5 more. How many apples does she have?", "3 + 5 = 8\n#### 8")] * 8
POLL_CSV = "shared/data/polls/538_2024_forecast_poll_list.csv"


def build_world(root: Path, tiny_models: dict) -> dict:
    """Write the stand-ins under ``root`` once: ``root/repo`` is a page's working folder (copied per
    page), ``root/shared`` the shared data beside it, ``root/models`` the tiny models. Returns the
    tiny model paths by key, with the LoRA expert as ``adapter`` and a model of another tokenizer as ``other``."""
    models = {key: _long_context_copy(path, root / "models" / key) for key, path in tiny_models.items()}
    other = build_tokenizer(vocab_size=300, corpus=OTHER_CORPUS)
    models["other"] = _long_context(save_model(root / "models" / "other", seed=6, tokenizer=other))
    models["adapter"] = save_adapter(root / "models" / "polls-expert-adapter", models["anti"], seed=5)
    repo, shared = root / "repo", root / "shared"
    _write_jsonl(repo / "prompts.jsonl", [{"id": f"p{i}", "prompt": p} for i, p in enumerate(PROMPTS)])
    (repo / "p.txt").write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    for name in ("polls.jsonl", "my.jsonl"):
        _write_jsonl(repo / name, [{"text": f"Question: {p}\nAnswer: 42"} for p in PROMPTS])
    _write_jsonl(repo / "my_questions.jsonl", [{"question": p, "answer": "42"} for p in PROMPTS])
    shutil.copytree(tiny_models["base"], repo / "models" / "my-base")
    _write_poll_csv(root / POLL_CSV)
    gsm8k = [{"question": q, "answer": a} for q, a in GSM8K]
    _write_jsonl(shared / "data/evalsets/gsm8k/train.jsonl", gsm8k)
    _write_jsonl(shared / "data/evalsets/gsm8k/test.jsonl", gsm8k[:2])
    _build_polls(root / POLL_CSV, repo / "work/polls", limit=None)
    _build_polls(root / POLL_CSV, repo / "work/polls-demo", limit=6)
    for folder in ("work/polls", "work/polls-demo"):  # a few lines: the recipes' epochs stay cheap
        lines = (repo / folder / "train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        (repo / folder / "train.jsonl").write_text("".join(lines[:4]), encoding="utf-8")
    prompts = [json.loads(line) for line in (repo / "work/polls-demo/eval_trained.jsonl").open()][:2]
    _write_jsonl(
        repo / "work/analysis/prompts_trained.jsonl", [{"id": p["id"], "prompt": p["prompt"]} for p in prompts]
    )
    return models


def _long_context_copy(source: Path, dest: Path) -> Path:
    """A copy of a tiny model whose context fits the docs' token budgets (`--max-new-tokens 256`); rotary
    positions need no new weights (GPT-2's learned ones do: it keeps its 256)."""
    shutil.copytree(source, dest)
    return _long_context(dest)


def _long_context(dest: Path) -> Path:
    config = json.loads((dest / "config.json").read_text())
    if "max_position_embeddings" in config:
        config["max_position_embeddings"] = 2048
        (dest / "config.json").write_text(json.dumps(config, indent=2))
    return dest


def register_models(models: dict) -> None:
    """The MODELS stand-ins, in the registry of the current ``$PROXYTOOL_HOME``; the offline packs among
    them are recorded as installed, so `proxytool models install` finds them (and downloads nothing)."""
    from proxytool.models.packs import PACKS, pack_dir
    from proxytool.models.registry import add_entry

    for name in MODELS.keys() & PACKS.keys():
        record = {"name": name, "sha256": PACKS[name].sha256, "folder": str(models[MODELS[name][0]])}
        pack_dir(name).mkdir(parents=True, exist_ok=True)
        (pack_dir(name) / "pack.json").write_text(json.dumps(record), encoding="utf-8")

    for name, (key, hints) in MODELS.items():
        if "base" not in hints:
            add_entry(name, str(models[key]), **hints)
    for name, (key, hints) in MODELS.items():
        if "base" in hints:
            add_entry(name, str(models[key]), **hints)


def substitute(words: tuple[str, ...], models: dict) -> list[str]:
    return [str(models[WORDS[word]]) if word in WORDS else word for word in words]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _write_poll_csv(path: Path) -> None:
    header = ["state", "start_date", "end_date", "pollster_rating_name", "poll_id", "question_id"]
    header += ["sample_size", "population", "candidate_name", "pct", "raw_sample_size"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        for poll_id, state, start, end, pollster, size, population, harris, trump in POLLS:
            common = {"state": state, "start_date": start, "end_date": end, "pollster_rating_name": pollster}
            common |= {"poll_id": poll_id, "question_id": poll_id + 1000, "sample_size": size}
            common |= {"population": population, "raw_sample_size": size}
            writer.writerow({**common, "candidate_name": "Kamala Harris", "pct": harris})
            writer.writerow({**common, "candidate_name": "Donald Trump", "pct": trump})


def _build_polls(csv_path: Path, out: Path, limit: int | None) -> None:
    from proxytool.data.poll_facts import build_polls_dataset

    build_polls_dataset(csv_path, out, limit=limit, documents_fraction=0.3, unseen_fraction=0.3)
