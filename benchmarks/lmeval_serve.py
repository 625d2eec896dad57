"""lm-eval's loglikelihood phase through `proxytool serve` vs lm-eval's `hf` backend in process.

Same machine, same run, same requests, same thread count. The requests are built at run time from
this repository's docs/*.md: each item is a passage (the context, ``--context-words`` words on
average) and 4 choices (the true next words and the continuations of 3 other passages, 3-25 words),
so ``--requests 300`` is 75 multiple-choice items of realistic length (~100-300 tokens each).

1. ``hf``: lm-eval's ``HFLM(pretrained=<folder>)`` in this process, ``loglikelihood(requests)``.
2. ``serve``: ``proxytool serve --base <folder>`` in a subprocess (a free port on 127.0.0.1, always
   stopped), lm-eval's ``local-completions`` in this process with ``tokenizer_backend`` at its default
   (the server's /tokenize and /detokenize), ``loglikelihood(requests)``.

Model loading and one warm-up request each are not timed. Prints both wall times, the ratio
serve / hf and the largest |difference| between the two backends' log-likelihoods, then the same as
one JSON object (also written to ``--json``). Needs ``pip install -e '.[lmeval]'``.

    # tiny random models (seconds):
    PYTHONPATH=. python benchmarks/lmeval_serve.py --tiny --threads 1
    # the offline Qwen 0.5B pack (a few minutes on 2 cores):
    python benchmarks/lmeval_serve.py --base qwen2.5-coder-0.5b-instruct --threads 2 --requests 300
"""

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def passages(words_per_passage: int) -> list[list[str]]:
    """Runs of words from the repository's docs, code blocks and tables left out, in a fixed order."""
    words = []
    for path in sorted((REPO / "docs").glob("*.md")):
        text = re.sub(r"```.*?```", " ", path.read_text(encoding="utf-8"), flags=re.S)
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith(("|", "<!--", "#", "!"))]
        words += " ".join(lines).split()
    step = words_per_passage + 30
    return [words[i : i + step] for i in range(0, len(words) - step, step)]


def build_requests(count: int, context_words: int, seed: int = 0) -> list[tuple[str, str]]:
    """``count`` (context, continuation) pairs: items of one context and 4 choices, as a multiple-choice task."""
    rng = random.Random(seed)
    runs = passages(context_words)
    pairs = []
    for item in range(count // 4 + 1):
        run = runs[item % len(runs)]
        n = max(4, min(len(run) - 26, int(context_words * rng.uniform(0.5, 1.5))))
        context = " ".join(run[:n])
        choices = [run[n : n + rng.randint(3, 25)]]
        for other in rng.sample([r for j, r in enumerate(runs) if j != item % len(runs)], 3):
            start = rng.randrange(len(other) - 26)
            choices.append(other[start : start + rng.randint(3, 25)])
        pairs += [(context, " " + " ".join(c)) for c in choices]
    return pairs[:count]


def tiny_base() -> str:
    sys.path.insert(0, str(REPO / "tests"))
    from tiny import save_model

    return str(save_model(Path(tempfile.mkdtemp(prefix="lmeval-serve-")) / "base", seed=1, hidden=48))


def model_folder(name: str) -> str:
    """A registry name or a folder: the folder lm-eval's hf backend loads (transformers weights)."""
    from proxytool.models.registry import resolve

    spec = resolve(name)
    if spec.kind != "hf" or not Path(spec.source).is_dir():
        raise SystemExit(f"{name}: needs a local transformers folder (got {spec.kind} {spec.source})")
    return spec.source


def instances(pairs):
    from lm_eval.api.instance import Instance

    return [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]


def timed_hf(folder: str, pairs, args) -> tuple[list, float, float]:
    from lm_eval.models.huggingface import HFLM

    started = time.perf_counter()
    lm = HFLM(pretrained=folder, device="cpu", batch_size=args.batch_size, dtype=args.dtype)
    loaded = time.perf_counter() - started
    lm.loglikelihood(instances(pairs[:1]))  # warm-up
    started = time.perf_counter()
    results = lm.loglikelihood(instances(pairs))
    return results, time.perf_counter() - started, loaded


def start_server(folder: str, port: int, args) -> subprocess.Popen:
    command = [sys.executable, "-m", "proxytool", "serve", "--base", folder, "--base-format", "raw"]
    command += ["--port", str(port), "--model-name", "bench", "--dtype", args.dtype, "--threads", str(args.threads)]
    command += ["--max-batch", str(max(8, args.num_concurrent * args.batch_size))]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_healthy(server: subprocess.Popen, url: str, timeout: float = 600) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if server.poll() is not None:
            raise SystemExit(f"proxytool serve exited {server.returncode}:\n{server.stderr.read()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"proxytool serve did not answer /health within {timeout:g} s")


def timed_serve(folder: str, pairs, args) -> tuple[list, float, float]:
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    from proxytool.serving.server import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(folder, port, args)
    try:
        loaded = wait_healthy(server, url)
        context = httpx.get(url + "/tokenizer_info", timeout=10).json()["model_max_length"]
        extra = {} if args.tokenizer_backend == "auto" else {"tokenizer_backend": "huggingface", "tokenizer": folder}
        lm = LocalCompletionsAPI(
            base_url=url + "/v1/completions",
            model="bench",
            max_length=context + 1,
            max_retries=1,
            timeout=3600,
            batch_size=args.batch_size,
            num_concurrent=args.num_concurrent,
            **extra,
        )
        lm.loglikelihood(instances(pairs[:1]))  # warm-up
        started = time.perf_counter()
        results = lm.loglikelihood(instances(pairs))
        return results, time.perf_counter() - started, loaded
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def machine() -> str:
    import torch

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()[0]
    return (
        f"{os.cpu_count()} cores, {memory:.0f} GiB RAM, torch {torch.__version__}, "
        f"Python {platform.python_version()}, load average {load:.1f} at the start"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="A tiny random model built now (no downloads).")
    parser.add_argument("--base", help="Registry name or transformers folder of the model (both backends load it).")
    parser.add_argument("--requests", type=int, default=300, help="Log-likelihood requests (4 per item).")
    parser.add_argument("--context-words", type=int, default=None, help="Mean context words (default 120; tiny 12).")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, in this process and the server.")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=1, help="lm-eval's batch_size, for both backends.")
    parser.add_argument("--num-concurrent", type=int, default=1, help="local-completions' num_concurrent.")
    parser.add_argument(
        "--tokenizer-backend",
        choices=["auto", "huggingface"],
        default="auto",
        help="local-completions': auto (the server's /tokenize; the default) or huggingface (the folder's).",
    )
    parser.add_argument("--json", type=Path, help="Also write the result here.")
    args = parser.parse_args()
    if args.tiny == bool(args.base):
        parser.error("give --tiny or --base")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from proxytool.runtime import prepare_runtime

    prepare_runtime(args.threads)
    folder = tiny_base() if args.tiny else model_folder(args.base)
    pairs = build_requests(args.requests, args.context_words or (12 if args.tiny else 120))
    hf, hf_s, hf_load = timed_hf(folder, pairs, args)
    served, serve_s, serve_load = timed_serve(folder, pairs, args)
    diff = max(abs(a - b) for (a, _), (b, _) in zip(served, hf))
    result = {
        "model": "tiny" if args.tiny else args.base,
        "requests": len(pairs),
        "threads": args.threads,
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "num_concurrent": args.num_concurrent,
        "tokenizer_backend": args.tokenizer_backend,
        "hf_s": round(hf_s, 2),
        "serve_s": round(serve_s, 2),
        "ratio": round(serve_s / hf_s, 3),
        "max_abs_diff": diff,
        "greedy_flags_equal": [g for _, g in served] == [g for _, g in hf],
        "hf_load_s": round(hf_load, 1),
        "serve_load_s": round(serve_load, 1),
        "machine": machine(),
    }
    print(f"\n{machine()}\n{len(pairs)} loglikelihood requests, {args.threads} threads, {args.dtype}")
    print("| backend | wall (s) | requests/s |")
    print("|---|---|---|")
    print(f"| hf in process | {hf_s:.2f} | {len(pairs) / hf_s:.1f} |")
    print(f"| local-completions through serve | {serve_s:.2f} | {len(pairs) / serve_s:.1f} |")
    print(f"| serve / hf | {serve_s / hf_s:.2f}x | max abs diff {diff:.1e} |")
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
