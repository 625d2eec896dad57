"""Requests arriving over time against `proxytool serve`: continuous batching vs alternating batches.

Loads the models once, then for each ``--batching`` mode starts a server in-process on 127.0.0.1 (a free
port) and sends ``--requests`` streaming greedy completions (``ignore_eos``: each generates exactly
``--max-tokens`` tokens) that arrive over time: every ``--interval`` seconds (``--arrival fixed``) or
with exponential gaps of that mean (``--arrival poisson``, seeded by ``--seed``, the same arrivals for
every mode). Prompts of several lengths take turns. Reports per mode: generated tokens/s over the whole
run (first send to last token), mean and p95 end-to-end latency, mean and p95 time to first token, the
most rows one forward carried, and whether every answer equals the first mode's (greedy: they must).

    # tiny random models (seconds):
    PYTHONPATH=. python benchmarks/serve_staggered.py --tiny --threads 1
    # the offline Qwen pair (a few minutes on 2 CPU cores):
    PYTHONPATH=. python benchmarks/serve_staggered.py --base qwen2.5-coder-1.5b-instruct \\
        --expert qwen2.5-coder-0.5b-instruct --anti-expert qwen2.5-coder-0.5b-instruct \\
        --expert-format chat --anti-expert-format raw --max-tokens 8 --interval 1.0 --threads 2

``--batching separate`` is today's behaviour before continuous batching (``proxytool serve --batching
separate``): a request that arrives while a batch runs starts its own, and the batches' steps alternate.
"""

import argparse
import json
import random
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import PROMPTS, percentile, tiny_setup  # noqa: E402

PROMPTS = PROMPTS + ["Question: In which state did Harris lead by three points in October, and by how much?\nAnswer:"]


def one_request(url: str, prompt: str, max_tokens: int, sent: float) -> dict:
    body = {"model": "proxytool", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    body.update(stream=True, ignore_eos=True)
    first, text = None, []
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=3600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {"):
                if first is None:
                    first = time.perf_counter() - sent
                choices = json.loads(line[len("data: ") :])["choices"]
                text += [c["text"] for c in choices]
    return {"latency": time.perf_counter() - sent, "ttft": first, "tokens": max_tokens, "text": "".join(text)}


def arrivals(n: int, interval: float, kind: str, seed: int) -> list[float]:
    """Send times in seconds after the start: fixed steps, or a Poisson process of that mean gap."""
    rng = random.Random(seed)
    times, t = [], 0.0
    for _ in range(n):
        times.append(t)
        t += interval if kind == "fixed" else rng.expovariate(1 / interval)
    return times


def run_mode(server, schedule: list[float], max_tokens: int) -> dict:
    results: dict[int, dict] = {}
    widest = [0]
    done = threading.Event()

    def watch():  # the most rows one batch's forward carried (continuous) or all batches together (separate)
        while not done.is_set():
            widest[0] = max(widest[0], server.scheduler.stats.batch_rows)
            time.sleep(0.002)

    def send(i: int, at: float):
        time.sleep(max(0.0, start + at - time.perf_counter()))
        results[i] = one_request(server.url, PROMPTS[i % len(PROMPTS)], max_tokens, time.perf_counter())

    start = time.perf_counter()
    threads = [threading.Thread(target=send, args=(i, at)) for i, at in enumerate(schedule)]
    watcher = threading.Thread(target=watch)
    for t in [watcher, *threads]:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    done.set()
    watcher.join()
    latencies = [r["latency"] for r in results.values()]
    ttfts = [r["ttft"] for r in results.values()]
    return {
        "requests": len(results),
        "tokens": sum(r["tokens"] for r in results.values()),
        "wall_s": round(wall, 2),
        "tokens_per_s": round(sum(r["tokens"] for r in results.values()) / wall, 2),
        "latency_mean_s": round(statistics.mean(latencies), 2),
        "latency_p95_s": round(percentile(latencies, 0.95), 2),
        "ttft_mean_s": round(statistics.mean(ttfts), 2),
        "ttft_p95_s": round(percentile(ttfts, 0.95), 2),
        "most_rows": widest[0],
        "texts": [results[i]["text"] for i in range(len(results))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="Tiny random models (no downloads).")
    parser.add_argument("--base")
    parser.add_argument("--expert", action="append", default=[])
    parser.add_argument("--anti-expert", action="append", default=[])
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--format", default="raw", help="Prompt format of every role (raw or chat).")
    parser.add_argument("--expert-format", help="The experts' prompt format (default: --format).")
    parser.add_argument("--anti-expert-format", help="The anti-experts' prompt format (default: --format).")
    parser.add_argument("--batching", nargs="+", default=["separate", "continuous"], choices=["separate", "continuous"])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--arrival", choices=["fixed", "poisson"], default="poisson")
    parser.add_argument("--interval", type=float, default=0.1, help="Seconds between arrivals (the mean for poisson).")
    parser.add_argument("--seed", type=int, default=0, help="Seeds the Poisson arrivals.")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()

    from proxytool.decoding.setup import LoadingOptions, ProxySetup, load_proxy_models
    from proxytool.runtime import prepare_runtime
    from proxytool.serving.app import ServerConfig
    from proxytool.serving.server import BackgroundServer

    prepare_runtime(args.threads)
    base, experts, antis = tiny_setup() if args.tiny else (args.base, args.expert, args.anti_expert)
    formats = {
        "base_format": args.format,
        "expert_format": args.expert_format or args.format,
        "anti_expert_format": args.anti_expert_format or args.format,
    }
    alphas = [args.alpha] * len(experts)
    setup = ProxySetup(base=base, experts=experts, anti_experts=antis, alphas=alphas, loading=LoadingOptions(**formats))
    started = time.perf_counter()
    models = load_proxy_models(setup)
    print(f"loaded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    schedule = arrivals(args.requests, args.interval, args.arrival, args.seed)
    report = {}
    for mode in args.batching:
        config = ServerConfig(max_batch=args.max_batch, max_queue=256, batching=mode)
        with BackgroundServer(models, config) as server:
            one_request(server.url, PROMPTS[0], 2, time.perf_counter())  # warm-up
            report[mode] = run_mode(server, schedule, args.max_tokens)
        print(json.dumps({k: v for k, v in report[mode].items() if k != "texts"}), file=sys.stderr)
    first = report[args.batching[0]]["texts"]
    print(
        f"{args.requests} requests, {args.arrival} arrivals every {args.interval:g} s (mean), "
        f"{args.max_tokens} tokens each (greedy, ignore_eos), --max-batch {args.max_batch}"
    )
    columns = ["batching", "tokens/s", "mean latency (s)", "p95 latency (s)", "mean first token (s)"]
    columns += ["p95 first token (s)", "most rows held", "same text"]
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    for mode, r in report.items():
        same = sum(a == b for a, b in zip(r["texts"], first))
        print(
            f"| {mode} | {r['tokens_per_s']} | {r['latency_mean_s']} | {r['latency_p95_s']} | {r['ttft_mean_s']} "
            f"| {r['ttft_p95_s']} | {r['most_rows']} | {same}/{len(first)} |"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
