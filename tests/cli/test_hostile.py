"""Hostile input against every command: exit code, one line naming the culprit, no traceback, no file touched.

Each case writes its files, snapshots the test folder, runs the real entry point in-process and checks
that the folder is byte-for-byte unchanged afterwards. Almost every case fails before a model loads.
"""

import gzip
import hashlib
import json
from pathlib import Path

import pytest
from cli_runner import run_cli

GOOD = b'{"id": "a", "prompt": "Hello"}\n'
NESTED = b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
HUMANEVAL = {
    "task_id": "HumanEval/0",
    "prompt": "def add(a, b):\n",
    "canonical_solution": "    return a + b\n",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
    "entry_point": "add",
}
REGISTRY = "proxytool_home/models.toml"


def decode(*extra):
    return ["decode", "--prompts", "{T}/p.jsonl", "--output", "{T}/out.jsonl", "--base", "{B}", *extra]


def proxy(*extra):
    return decode("--expert", "{E}", "--anti-expert", "{A}", *extra)


def train(*extra):
    return ["train", "--model", "{B}", "--data", "{T}/d.jsonl", "--output", "{T}/run", *extra]


def evaluate(*extra):
    return ["eval", "--task", "{T}/qa.jsonl", "--base", "{B}", "--expert", "{E}", "--anti-expert", "{A}", *extra]


DATA = {"d.jsonl": b'{"text": "hello world"}\n'}
QA = {"qa.jsonl": b'{"question": "2+2?", "answer": "4"}\n'}

# (id, argv, files, exit code, stderr must contain, stdin)
CASES = [
    # ---- usage errors (typer's vendored click exceptions)
    ("unknown-command", ["nosuch"], {}, 2, "No such command 'nosuch'", None),
    ("unknown-flag", decode("--nope"), {}, 2, "No such option: --nope", None),
    ("missing-option", ["decode", "--base", "{B}"], {}, 2, "Missing option '--prompts'", None),
    ("word-for-int", decode("--max-new-tokens", "many"), {}, 2, "--max-new-tokens", None),
    ("word-for-float", decode("--temperature", "hot"), {}, 2, "--temperature", None),
    ("train-word-for-lr", train("--lr", "fast"), {}, 2, "--lr", None),
    ("eval-float-for-int", evaluate("--batch-size", "1.5"), {}, 2, "--batch-size", None),
    ("models-show-no-arg", ["models", "show"], {}, 2, "Missing argument", None),
    ("models-add-no-arg", ["models", "add"], {}, 2, "Missing argument", None),
    ("chat-word-for-float", ["chat", "--base", "{B}", "--top-p", "x"], {}, 2, "--top-p", None),
    ("bench-word-for-int", ["bench", "--base", "{B}", "--expert", "{E}", "--repeats", "x"], {}, 2, "--repeats", None),
    ("recipes-show-no-arg", ["recipes", "show"], {}, 2, "Missing argument", None),
    ("unknown-global-flag", ["--debugx", "env"], {}, 2, "No such option", None),
    ("flag-missing-value", decode("--seed"), {}, 2, "--seed", None),
    # ---- decode: values, checked before any model loads
    ("alpha-nan", proxy("--alpha", "nan"), {}, 2, "--alpha must be a finite number", None),
    ("alpha-inf", proxy("--alpha", "inf"), {}, 2, "--alpha must be a finite number", None),
    ("alpha-minus-inf", proxy("--alpha", "-inf"), {}, 2, "--alpha must be a finite number", None),
    ("alpha-absurd", proxy("--alpha", "1e308"), {}, 2, "--alpha must be between -1000 and 1000", None),
    ("alpha-without-expert", decode("--alpha", "0.5"), {}, 2, "--alpha needs an --expert", None),
    ("alpha-count", proxy("--alpha", "1", "--alpha", "2", "--alpha", "3"), {}, 2, "--alpha", None),
    ("temperature-nan", decode("--temperature", "nan"), {}, 2, "--temperature must be a finite", None),
    ("temperature-inf", decode("--temperature", "inf"), {}, 2, "--temperature must be a finite", None),
    ("temperature-negative", decode("--temperature", "-1"), {}, 2, "--temperature must be >= 0", None),
    ("top-p-nan", decode("--top-p", "nan"), {}, 2, "--top-p", None),
    ("top-p-zero", decode("--top-p", "0"), {}, 2, "--top-p must be > 0", None),
    ("top-p-above-one", decode("--top-p", "1.5"), {}, 2, "--top-p must be <= 1", None),
    ("top-k-negative", decode("--top-k", "-1"), {}, 2, "--top-k must be >= 0", None),
    ("seed-negative", decode("--seed", "-1"), {}, 2, "--seed must be >= 0", None),
    ("seed-huge", decode("--seed", str(2**70)), {}, 2, "--seed must be <=", None),
    ("max-new-tokens-negative", decode("--max-new-tokens", "-1"), {}, 2, "--max-new-tokens must be >= 0", None),
    ("max-new-tokens-absurd", decode("--max-new-tokens", "99999999"), {}, 2, "--max-new-tokens must be <=", None),
    ("batch-size-zero", decode("--batch-size", "0"), {}, 2, "--batch-size must be >= 1", None),
    ("stop-empty", decode("--stop", ""), {}, 2, "--stop must not be empty", None),
    ("device-bogus", decode("--device", "tpu"), {}, 2, "--device must be", None),
    ("device-cuda-letter", decode("--device", "cuda:x"), {}, 2, "--device must be", None),
    ("device-cuda-absent", decode("--device", "cuda"), {}, 2, "no CUDA device", None),
    ("dtype-bogus", decode("--dtype", "float8"), {}, 2, "--dtype must be one of", None),
    ("quantize-bogus", decode("--quantize-base", "3bit"), {}, 2, "--quantize-base must be one of", None),
    ("base-format-bogus", decode("--base-format", "fancy"), {}, 2, "--base-format must be one of", None),
    ("expert-format-bogus", proxy("--expert-format", "x"), {}, 2, "--expert-format must be one of", None),
    ("anti-format-bogus", proxy("--anti-expert-format", "x"), {}, 2, "--anti-expert-format must be one of", None),
    ("overlap-bogus", decode("--overlap", "maybe"), {}, 2, "--overlap must be one of", None),
    ("threads-zero", decode("--threads", "0"), {}, 2, "--threads must be >= 1", None),
    ("threads-huge", decode("--threads", "100000"), {}, 2, "--threads must be <= 4096", None),
    ("expert-empty", decode("--expert", "", "--anti-expert", "{A}"), {}, 2, "--expert must not be empty", None),
    ("anti-without-expert", decode("--anti-expert", "{A}"), {}, 2, "--anti-expert given for 0 --expert", None),
    ("base-empty", ["decode", "--prompts", "{T}/p.jsonl", "-o", "{T}/out.jsonl", "--base", ""], {}, 2, "empty", None),
    ("base-unknown", decode()[:-1] + ["no-such-model"], {}, 2, "unknown model 'no-such-model'", None),
    ("base-text-file", decode()[:-1] + ["{T}/p.jsonl"], {}, 2, "not a model folder", None),
    ("base-is-a-device", decode()[:-1] + ["/dev/zero"], {}, 2, "/dev/zero: not a model folder", None),
    ("base-empty-folder", decode()[:-1] + ["{T}/empty"], {"empty/": None}, 2, "no config.json", None),
    ("base-non-utf8-arg", decode()[:-1] + ["\udcff"], {}, 2, "unknown model '\\udcff'", None),
    ("stop-non-utf8-arg", decode("--stop", "a\udcff"), {}, 2, "--stop: not valid UTF-8", None),
    ("chat-system-non-utf8", ["chat", "--base", "{B}", "--system", "\udcff"], {}, 2, "--system: not valid UTF-8", ""),
    # ---- decode: prompts files
    (
        "prompts-missing",
        ["decode", "--prompts", "{T}/nope.jsonl", "-o", "{T}/out.jsonl", "-b", "{B}"],
        {},
        2,
        "nope.jsonl: prompts file not found",
        None,
    ),
    (
        "prompts-folder",
        ["decode", "--prompts", "{T}/dir", "-o", "{T}/out.jsonl", "-b", "{B}"],
        {"dir/": None},
        2,
        "is a folder",
        None,
    ),
    (
        "prompts-dev-zero",
        ["decode", "--prompts", "/dev/zero", "-o", "{T}/out.jsonl", "-b", "{B}"],
        {},
        2,
        "/dev/zero: not a regular file",
        None,
    ),
    ("prompts-latin1", decode(), {"p.jsonl": GOOD + b'{"prompt": "caf\xe9"}\n'}, 2, "p.jsonl:2: not UTF-8", None),
    (
        "prompts-id-of-5000-digits",
        decode(),
        {"p.jsonl": GOOD + b'{"id": ' + b"7" * 5000 + b', "prompt": "x"}\n'},
        2,
        "p.jsonl:2: field 'id': a number of 5000 digits",
        None,
    ),
    (
        "prompts-token-of-5000-digits",
        decode(),
        {"p.jsonl": b'{"prompt": "x", "ids": [' + b"7" * 5000 + b"]}\n"},
        2,
        "p.jsonl:1: a number of 5000 digits",
        None,
    ),
    (
        "quantize-4bit-on-cpu-unaligned",
        proxy("--quantize-base", "4bit", "--device", "cpu"),
        {},
        2,
        "--quantize-base 4bit on CPU needs layer widths that are multiples of 64",
        None,
    ),
    (
        "prompts-text-latin1",
        ["decode", "--prompts", "{T}/p.txt", "-o", "{T}/out.jsonl", "-b", "{B}"],
        {"p.txt": b"ok\n\xff\xfe\n"},
        2,
        "p.txt:2: not UTF-8",
        None,
    ),
    (
        "prompts-nul",
        ["decode", "--prompts", "{T}/p.txt", "-o", "{T}/out.jsonl", "-b", "{B}"],
        {"p.txt": b"one\ntwo\x00\n"},
        2,
        "p.txt:2: binary data",
        None,
    ),
    (
        "stdin-binary",
        ["decode", "--prompts", "-", "-o", "{T}/out.jsonl", "-b", "{B}"],
        {},
        2,
        "<stdin>:1: not UTF-8",
        b"\x89PNG\r\n\x1a\n\xff",
    ),
    ("stdin-empty", ["decode", "--prompts", "-", "-o", "{T}/out.jsonl", "-b", "{B}"], {}, 2, "no prompts", ""),
    ("lone-surrogate", decode(), {"p.jsonl": b'{"prompt": "a\\ud800b"}\n'}, 2, "p.jsonl:1: field 'prompt'", None),
    (
        "lone-surrogate-messages",
        decode(),
        {"p.jsonl": b'{"messages": [{"role": "user", "content": "\\udfff"}]}\n'},
        2,
        "field 'messages'",
        None,
    ),
    ("deep-nesting", decode(), {"p.jsonl": NESTED}, 2, "p.jsonl:1: JSON nested too deeply", None),
    ("json-array-line", decode(), {"p.jsonl": b'["prompt"]\n'}, 2, "p.jsonl:1: expected a JSON object", None),
    ("id-is-a-list", decode(), {"p.jsonl": b'{"id": [1], "prompt": "x"}\n'}, 2, "field 'id' must be", None),
    ("id-is-bool", decode(), {"p.jsonl": b'{"id": true, "prompt": "x"}\n'}, 2, "field 'id' must be", None),
    ("messages-empty", decode(), {"p.jsonl": b'{"messages": []}\n'}, 2, "field 'messages'", None),
    (
        "messages-content-int",
        decode(),
        {"p.jsonl": b'{"messages": [{"role": "user", "content": 1}]}\n'},
        2,
        "field 'messages[0].content'",
        None,
    ),
    (
        "messages-unknown-role",  # the rule train applies
        decode(),
        {"p.jsonl": b'{"messages": [{"role": "wizard", "content": "hi"}]}\n'},
        2,
        "field 'messages[0].role': must be one of system, user, assistant (got 'wizard')",
        None,
    ),
    (
        "prompts-gz-not-gzip",
        ["decode", "--prompts", "{T}/p.jsonl.gz", "-o", "{T}/out.jsonl", "-b", "{B}"],
        {"p.jsonl.gz": b"not gzip"},
        2,
        "p.jsonl.gz: not a readable gzip file",
        None,
    ),
    (
        "bench-bad-mode",
        ["bench", "--base", "{B}", "--expert", "{E}", "--modes", "base,fast"],
        {},
        2,
        "--modes must be one of",
        None,
    ),
    (
        "bench-new-tokens",
        ["bench", "--base", "{B}", "--expert", "{E}", "--new-tokens", "1"],
        {},
        2,
        "--new-tokens must be >= 2",
        None,
    ),
    ("prompt-null", decode(), {"p.jsonl": b'{"prompt": null}\n'}, 2, "field 'prompt' must be a string", None),
    (
        "prompt-too-long",
        decode(),
        {"p.jsonl": json.dumps({"id": "big", "prompt": "word " * 400}).encode()},
        2,
        "prompt 'big' is",
        None,
    ),
    (
        "prompt-megabyte",
        decode(),
        {"p.jsonl": json.dumps({"id": "mb", "prompt": "x" * 2**20}).encode()},
        2,
        "prompt 'mb' has 1048576 characters",
        None,
    ),
    (
        "prompt-fits-only-without-budget",
        decode("--max-new-tokens", "250"),
        {"p.jsonl": json.dumps({"id": "q", "prompt": "word " * 10}).encode()},
        2,
        "--max-new-tokens 250",
        None,
    ),
    # ---- decode: outputs
    (
        "output-is-folder",
        ["decode", "--prompts", "{T}/p.jsonl", "-o", "{T}/dir", "-b", "{B}"],
        {"dir/": None},
        2,
        "is a folder",
        None,
    ),
    (
        "output-folder-missing",
        ["decode", "--prompts", "{T}/p.jsonl", "-o", "{T}/no/out.jsonl", "-b", "{B}"],
        {},
        2,
        "does not exist",
        None,
    ),
    (
        "output-is-input",
        ["decode", "--prompts", "{T}/p.jsonl", "-o", "{T}/p.jsonl", "-b", "{B}"],
        {},
        2,
        "would overwrite the input",
        None,
    ),
    (
        "output-part-is-input",
        ["decode", "--prompts", "{T}/o.jsonl.part", "-o", "{T}/o.jsonl", "-b", "{B}"],
        {"o.jsonl.part": GOOD},
        2,
        "would overwrite the input",
        None,
    ),
    (
        "output-unrelated-jsonl",
        decode(),
        {"out.jsonl": b'{"id": "a", "text": "mine"}\n'},
        2,
        "not written by proxytool",
        None,
    ),
    ("output-unrelated-part", decode(), {"out.jsonl.part": b'{"id": "a"}\n'}, 2, "not written by proxytool", None),
    (
        "output-meta-corrupt",
        decode(),
        {"out.jsonl.meta.json": b"{nope", "out.jsonl.part": b""},
        2,
        "not a proxytool decode meta file",
        None,
    ),
    (
        "output-meta-other-kind",
        decode(),
        {"out.jsonl.meta.json": b'{"kind": "x", "fingerprint": {}}'},
        2,
        "not a proxytool decode meta file",
        None,
    ),
    # ---- chat
    ("chat-alpha-without-expert", ["chat", "--base", "{B}", "--alpha", "2"], {}, 2, "--alpha needs an --expert", ""),
    ("chat-temperature-nan", ["chat", "--base", "{B}", "--temperature", "nan"], {}, 2, "--temperature", ""),
    ("chat-device-bogus", ["chat", "--base", "{B}", "--device", "gpu0"], {}, 2, "--device must be", ""),
    ("chat-max-new-tokens", ["chat", "--base", "{B}", "--max-new-tokens", "-5"], {}, 2, "--max-new-tokens", ""),
    (
        "chat-binary-stdin",
        ["chat", "--base", "{B}", "--max-new-tokens", "2"],
        {},
        2,
        "<stdin>:1: not UTF-8",
        b"\xff\xfe\xfd\n",
    ),
    # ---- train
    ("train-lr-inf", train("--lr", "inf"), DATA, 2, "key 'lr' must be a finite number", None),
    ("train-lr-nan", train("--lr", "nan"), DATA, 2, "key 'lr' must be a finite number", None),
    ("train-lr-zero", train("--lr", "0"), DATA, 2, "key 'lr' must be > 0", None),
    ("train-epochs-nan", train("--epochs", "nan"), DATA, 2, "key 'epochs'", None),
    ("train-dropout-one", train("--lora-dropout", "1"), DATA, 2, "key 'lora_dropout' must be < 1", None),
    ("train-batch-zero", train("--batch-size", "0"), DATA, 2, "key 'batch_size' must be >= 1", None),
    ("train-rank-zero", train("--lora-r", "0"), DATA, 2, "key 'lora_r' must be >= 1", None),
    ("train-seq-tiny", train("--max-seq-len", "2"), DATA, 2, "key 'max_seq_len' must be >= 8", None),
    ("train-no-model", ["train", "--data", "{T}/d.jsonl", "--output", "{T}/run"], DATA, 2, "no model given", None),
    ("train-data-missing", train(), {}, 2, "d.jsonl: no such data file", None),
    ("train-data-folder", train(), {"d.jsonl/": None}, 2, "is a folder", None),
    (
        "train-data-dev-zero",
        ["train", "--model", "{B}", "--data", "/dev/zero", "--output", "{T}/run"],
        {},
        2,
        "/dev/zero: not a regular file",
        None,
    ),
    ("train-data-latin1", train(), {"d.jsonl": b'{"text": "ok"}\n{"text": "\xe9"}\n'}, 2, "d.jsonl:2: not UTF-8", None),
    ("train-data-empty", train(), {"d.jsonl": b"\n\n"}, 2, "no examples", None),
    ("train-data-nested", train(), {"d.jsonl": NESTED.replace(b"prompt", b"text")}, 2, "nested too deeply", None),
    ("train-model-unknown", train()[:2] + ["nobody"] + train()[3:], DATA, 2, "unknown model 'nobody'", None),
    ("train-recipe-unknown", train("--recipe", "no-such-recipe"), DATA, 2, "no recipe 'no-such-recipe'", None),
    ("train-recipe-bad-yaml", train("--recipe", "{T}/r.yaml"), {**DATA, "r.yaml": b"lr: [\n"}, 2, "invalid YAML", None),
    (
        "train-recipe-latin1",
        train("--recipe", "{T}/r.yaml"),
        {**DATA, "r.yaml": b"lr: 1\n# \xe9\n"},
        2,
        "r.yaml:2: not UTF-8",
        None,
    ),
    (
        "train-recipe-nan",
        train("--recipe", "{T}/r.yaml"),
        {**DATA, "r.yaml": b"lr: .nan\n"},
        2,
        "key 'lr' must be a finite number",
        None,
    ),
    ("train-output-is-file", train(), {**DATA, "run": b"x"}, 2, "is a file", None),
    ("train-output-not-empty", train(), {**DATA, "run/keep.txt": b"mine"}, 2, "already exists and is not empty", None),
    (
        "train-output-under-a-file",
        ["train", "--model", "{B}", "--data", "{T}/d.jsonl", "--output", "{T}/d.jsonl/run"],
        DATA,
        2,
        "is not a writable folder",
        None,
    ),
    ("train-resume-nothing", train("--resume"), DATA, 2, "nothing to resume", None),
    (
        "train-resume-no-complete-checkpoint",
        ["train", "--output", "{T}/run", "--resume"],
        {
            **DATA,
            "run/trainer/run.json": '{{"config": {{"model": "{B}", "data": "{T}/d.jsonl"}}}}',
            "run/trainer/checkpoint-2/x": b"",
        },
        2,
        "no complete checkpoint",
        None,
    ),
    ("train-threads-zero", train("--threads", "0"), DATA, 2, "key 'threads' must be >= 1", None),
    ("train-grad-accum-zero", train("--grad-accum", "0"), DATA, 2, "key 'grad_accum' must be >= 1", None),
    # ---- eval
    ("eval-task-unknown", evaluate()[:2] + ["nosuch-task"] + evaluate()[3:], {}, 2, "nosuch-task", None),
    ("eval-alpha-nan", evaluate("--alpha", "nan"), QA, 2, "--alpha", None),
    ("eval-alpha-empty", evaluate("--alpha", ""), QA, 2, "--alpha: empty", None),
    ("eval-limit-zero", evaluate("--limit", "0"), QA, 2, "--limit must be >= 1", None),
    ("eval-few-shot-negative", evaluate("--few-shot", "-1"), QA, 2, "--few-shot must be >= 0", None),
    ("eval-batch-zero", evaluate("--batch-size", "0"), QA, 2, "--batch-size must be >= 1", None),
    ("eval-device-bogus", evaluate("--device", "npu"), QA, 2, "--device must be", None),
    (
        "eval-expert-empty",
        ["eval", "--task", "{T}/qa.jsonl", "--base", "{B}", "--expert", ""],
        QA,
        2,
        "--expert must not be empty",
        None,
    ),
    (
        "eval-task-latin1",
        evaluate(),
        {"qa.jsonl": b'{"question": "\xe9", "answer": "1"}\n'},
        2,
        "qa.jsonl:1: not UTF-8",
        None,
    ),
    (
        "eval-humaneval-needs-opt-in",
        evaluate()[:2] + ["humaneval"] + evaluate()[3:] + ["--data-dir", "{T}/sets"],
        {"sets/humaneval/HumanEval.jsonl.gz": gzip.compress(json.dumps(HUMANEVAL).encode() + b"\n")},
        2,
        "--allow-code-execution",
        None,
    ),
    # ---- models registry
    ("models-show-unknown", ["models", "show", "nosuch"], {}, 2, "unknown model 'nosuch'", None),
    ("models-show-empty", ["models", "show", ""], {}, 2, "empty model name", None),
    ("models-add-empty-name", ["models", "add", "", "{B}"], {}, 2, "the name is empty", None),
    ("models-add-space-name", ["models", "add", "my model", "{B}"], {}, 2, "contains whitespace", None),
    (
        "models-add-hub-shadow",
        ["models", "add", "meta-llama/Llama-2-7b-hf", "{B}"],
        {},
        2,
        "would shadow a hub id",
        None,
    ),
    ("models-add-missing-source", ["models", "add", "x", "{T}/nowhere"], {}, 2, "nowhere", None),
    ("models-add-bad-format", ["models", "add", "x", "{B}", "--prompt-format", "fancy"], {}, 2, "prompt_format", None),
    ("models-add-bad-dtype", ["models", "add", "x", "{B}", "--dtype", "float8"], {}, 2, "dtype", None),
    (
        "models-add-unknown-base",
        ["models", "add", "x", "{B}", "--base", "nosuch"],
        {},
        2,
        "unknown model 'nosuch'",
        None,
    ),
    (
        "models-remove-unknown",
        ["models", "remove", "nosuch"],
        {REGISTRY: b'[models.a]\nsource = "x/y"\n'},
        2,
        "no user model named 'nosuch'",
        None,
    ),
    ("models-remove-no-registry", ["models", "remove", "nosuch"], {}, 2, "no user model named 'nosuch'", None),
    (
        "registry-latin1",
        ["models", "list"],
        {REGISTRY: b'[models.a]\nsource = "caf\xe9"\n'},
        2,
        "models.toml:2: not UTF-8",
        None,
    ),
    ("registry-bad-toml", ["models", "list"], {REGISTRY: b"[models\n"}, 2, "models.toml: invalid TOML", None),
    ("registry-is-folder", ["models", "list"], {REGISTRY + "/": None}, 2, "models.toml: is not a file", None),
    (
        "registry-models-not-table",
        ["models", "list"],
        {REGISTRY: b"models = 3\n"},
        2,
        "key 'models' must be a table",
        None,
    ),
    ("registry-entry-not-table", ["models", "list"], {REGISTRY: b"[models]\na = 3\n"}, 2, "key 'models.a'", None),
    (
        "registry-source-int",
        ["models", "show", "a"],
        {REGISTRY: b"[models.a]\nsource = 3\n"},
        2,
        "field 'source' must be a string",
        None,
    ),
    (
        "registry-bad-format",
        ["models", "list"],
        {REGISTRY: b'[models.a]\nsource = "x/y"\nprompt_format = "z"\n'},
        2,
        "field 'prompt_format'",
        None,
    ),
    (
        "registry-unknown-key",
        ["models", "list"],
        {REGISTRY: b'[models.a]\nsource = "x/y"\ncolour = "red"\n'},
        2,
        "unknown key 'colour'",
        None,
    ),
    (
        "registry-base-cycle",
        ["models", "show", "a"],
        {REGISTRY: b'[models.a]\nsource = "x/a"\nbase = "b"\n[models.b]\nsource = "x/b"\nbase = "a"\n'},
        2,
        "cycle",
        None,
    ),
    ("registry-corrupt-breaks-decode", decode()[:-1] + ["a"], {REGISTRY: b"models = [1]\n"}, 2, "key 'models'", None),
    # ---- bench, merge, recipes
    (
        "bench-batch-sizes-words",
        ["bench", "--base", "{B}", "--expert", "{E}", "--batch-sizes", "a,b"],
        {},
        2,
        "--batch-sizes",
        None,
    ),
    ("bench-modes-bogus", ["bench", "--base", "{B}", "--expert", "{E}", "--modes", "fast"], {}, 2, "--modes", None),
    ("bench-device-bogus", ["bench", "--base", "{B}", "--expert", "{E}", "--device", "x"], {}, 2, "--device", None),
    ("bench-threads-zero", ["bench", "--base", "{B}", "--expert", "{E}", "--threads", "0"], {}, 2, "--threads", None),
    (
        "bench-output-folder",
        ["bench", "--base", "{B}", "--expert", "{E}", "--anti-expert", "{A}", "--output", "{T}"],
        {},
        2,
        "is a folder",
        None,
    ),
    ("merge-unknown", ["merge", "nosuch"], {}, 2, "unknown model 'nosuch'", None),
    ("recipes-show-unknown", ["recipes", "show", "nosuch"], {}, 2, "no recipe 'nosuch'", None),
]


def _write(root: Path, files: dict, names: dict) -> None:
    for name, content in files.items():
        path = root / name.rstrip("/")
        if isinstance(content, str):  # a template naming the models or the test folder
            content = content.format(**names).encode()
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)


def snapshot(root: Path) -> dict:
    """Every path under ``root`` with a hash of its content (folders as None)."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def check_one_line_error(code: int, err: str, expected_code: int, contains: str) -> None:
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert code == expected_code, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert contains in lines[0], err


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_input(case, tiny_models, tmp_path):
    _, argv, files, expected_code, contains, stdin = case
    (tmp_path / "p.jsonl").write_bytes(GOOD)
    names = {"B": tiny_models["base"], "E": tiny_models["expert"], "A": tiny_models["anti"], "T": tmp_path}
    _write(tmp_path, files, names)
    args = [a.format(**names) for a in argv]
    before = snapshot(tmp_path)
    code, out, err = run_cli(*args, stdin=stdin)
    check_one_line_error(code, err, expected_code, contains)
    assert snapshot(tmp_path) == before, "a failed command changed files"


def test_there_are_enough_cases():
    assert len(CASES) >= 80 and len({c[0] for c in CASES}) == len(CASES)
