"""Load test for `proxytool serve`: tokens/s and latency percentiles at 1, 4 and 16 concurrent clients.

Starts a server in-process on 127.0.0.1 (a free port) over the models you name, then, for each
concurrency C, runs C client threads that each send ``--requests`` streaming completions with greedy
decoding and ``ignore_eos`` (every request generates exactly ``--max-tokens`` tokens). Reports the
aggregate generated tokens/s, p50/p95 end-to-end latency and p50 time to first token.

    # tiny random models (seconds):
    PYTHONPATH=. python benchmarks/serve_load.py --tiny
    # the offline Qwen pair (see docs/serving.md):
    PYTHONPATH=. python benchmarks/serve_load.py --base qwen2.5-coder-1.5b-instruct \\
        --expert polls-demo-expert --max-tokens 16 --requests 1 --concurrency 1 4 16
    # a server already running (proxytool serve, proxytool vllm, vLLM): --url, its model name, and
    # fields added to every request (docs/vllm.md "Measured"):
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --model base --concurrency 16 \\
        --requests 1 --extra '{"vllm_xargs": {"proxytool_alpha": 1}}'
"""

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

PROMPTS = [
    "Question: Who led the latest poll in Pennsylvania?\nAnswer:",
    "def fibonacci(n):",
    "The capital of France is",
    "Question: What was the sample size of the poll?\nAnswer:",
]


def tiny_setup():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny import save_model

    root = Path(tempfile.mkdtemp(prefix="serve-load-"))
    base = save_model(root / "base", seed=1, hidden=48)
    anti = save_model(root / "anti", seed=2)
    expert = save_model(root / "expert", seed=3, vocab_size=336)
    return str(base), [str(expert)], [str(anti)]


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def one_request(url: str, prompt: str, max_tokens: int, model: str = "proxytool", extra: dict | None = None) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    body.update(stream=True, ignore_eos=True, **(extra or {}))
    start = time.perf_counter()
    first, chunks = None, 0
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=3600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                chunks += 1
                if first is None:
                    first = time.perf_counter() - start
    return {"latency": time.perf_counter() - start, "ttft": first, "tokens": max_tokens}


def run_level(url: str, concurrency: int, requests: int, max_tokens: int, **request) -> dict:
    results, lock = [], threading.Lock()

    def client(i):
        for r in range(requests):
            out = one_request(url, PROMPTS[(i + r) % len(PROMPTS)], max_tokens, **request)
            with lock:
                results.append(out)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies = [r["latency"] for r in results]
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "tokens": sum(r["tokens"] for r in results),
        "wall_s": round(wall, 2),
        "tokens_per_s": round(sum(r["tokens"] for r in results) / wall, 2),
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(percentile(latencies, 0.95), 2),
        "ttft_p50_s": round(statistics.median(r["ttft"] for r in results), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="Tiny random models (no downloads).")
    parser.add_argument("--base")
    parser.add_argument("--expert", action="append", default=[])
    parser.add_argument("--anti-expert", action="append", default=[])
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--format", default="raw", help="Prompt format of every role (raw or chat).")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=2, help="Requests per client.")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    parser.add_argument("--url", help="Measure this running server (http://HOST:PORT) instead of starting one.")
    parser.add_argument("--model", default="proxytool", help="The model name requests ask for (with --url).")
    parser.add_argument("--extra", type=json.loads, default={}, help="JSON fields added to every request.")
    args = parser.parse_args()
    if args.url:
        rows = measure(args.url.rstrip("/").removesuffix("/v1"), args, model=args.model, extra=args.extra)
        report(rows, args.json)
        return

    from proxytool.decoding.setup import LoadingOptions, ProxySetup, load_proxy_models
    from proxytool.runtime import prepare_runtime
    from proxytool.serving.app import ServerConfig
    from proxytool.serving.server import BackgroundServer

    prepare_runtime(args.threads)
    if args.tiny:
        base, experts, antis = tiny_setup()
    else:
        base, experts, antis = args.base, args.expert, args.anti_expert
    formats = {"base_format": args.format, "expert_format": args.format, "anti_expert_format": args.format}
    setup = ProxySetup(
        base=base, experts=experts, anti_experts=antis, alphas=[args.alpha], loading=LoadingOptions(**formats)
    )
    started = time.perf_counter()
    models = load_proxy_models(setup)
    print(f"loaded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    config = ServerConfig(max_batch=args.max_batch, max_queue=256)
    with BackgroundServer(models, config) as server:
        rows = measure(server.url, args)
    report(rows, args.json)


def measure(url: str, args, **request) -> list[dict]:
    one_request(url, PROMPTS[0], 2, **request)  # warm-up
    rows = []
    for c in args.concurrency:
        rows.append(run_level(url, c, args.requests, args.max_tokens, **request))
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def report(rows: list[dict], path: Path | None) -> None:
    print("| clients | requests | tokens/s | p50 latency (s) | p95 latency (s) | p50 first token (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['concurrency']} | {r['requests']} | {r['tokens_per_s']} | {r['p50_s']} | {r['p95_s']} "
            f"| {r['ttft_p50_s']} |"
        )
    if path:
        path.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
