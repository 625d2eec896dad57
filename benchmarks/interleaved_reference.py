"""proxytool's decoding against the paper's reference loop in one process, interleaved.

``proxytool bench`` runs each mode in its own process, minutes apart; on a machine whose speed drifts
over minutes the ratio between two such runs moves with it (docs/performance.md saw 1.05x and 1.23x for
one shape). Here both are loaded at once (memory: both setups together) and timed in turns (A B, B A,
A B, ...), each turn ``--tokens`` decode steps after the prefill and first token, so both see the same machine:

    python benchmarks/interleaved_reference.py --base qwen2.5-coder-1.5b-instruct --expert ADAPTER \
        --threads 1 --batch 1 --turns 6 --json
"""

import argparse
import json
import statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--expert", required=True)
    parser.add_argument("--anti-expert", default=None, help="default: the expert's base (a shared LoRA pair)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=42)
    parser.add_argument("--tokens", type=int, default=8, help="decode steps timed per turn (after the first token)")
    parser.add_argument("--turns", type=int, default=6, help="turns of each, alternating who goes first")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = measure(args)
    print(json.dumps(report) if args.json else _text(report))


def measure(args) -> dict:
    from proxytool.decoding.config import LoadingOptions, ProxySetup
    from proxytool.decoding.speed import BenchConfig, _prompts, _Proxy, _Reference, machine
    from proxytool.runtime import prepare_runtime

    prepare_runtime(args.threads)
    loading = LoadingOptions(dtype="float32", device="cpu", threads=args.threads, expected_batch=args.batch)
    anti = [args.anti_expert] if args.anti_expert else []
    config = BenchConfig(setup=ProxySetup(base=args.base, experts=[args.expert], anti_experts=anti, loading=loading))
    runners = {"proxy": _Proxy(config), "reference": _Reference(config)}
    prompts = _prompts(runners["proxy"].tokenizer, args.batch, args.prompt_tokens)
    ms: dict[str, list[float]] = {name: [] for name in runners}
    tokens = {}
    for turn in range(args.turns):
        for name in ("proxy", "reference") if turn % 2 == 0 else ("reference", "proxy"):
            first, total, tokens[name] = runners[name].timed(prompts, args.tokens + 1)
            ms[name].append(1000 * (total - first) / args.tokens)
    median = {name: statistics.median(times) for name, times in ms.items()}
    return {
        "machine": machine(),
        "threads": args.threads,
        "batch": args.batch,
        "weights": runners["proxy"]._how_ran().get("weights"),
        "ms_per_step": ms,
        "median_ms_per_step": median,
        "proxy_vs_reference": median["reference"] / median["proxy"],
        "per_turn": [r / p for p, r in zip(ms["proxy"], ms["reference"])],
        "same_tokens": tokens["proxy"] == tokens["reference"],
    }


def _text(report: dict) -> str:
    median = report["median_ms_per_step"]
    return (
        f"proxy {median['proxy']:.1f} ms/step, reference {median['reference']:.1f}: "
        f"{report['proxy_vs_reference']:.2f}x (turns {', '.join(f'{r:.2f}' for r in report['per_turn'])}); "
        f"same tokens: {report['same_tokens']}"
    )


if __name__ == "__main__":
    main()
