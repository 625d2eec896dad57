"""Time spent per decode step outside the model forwards: sampling, stops, candidate sets,
bookkeeping (issue: under 2% of a step).

Every model forward is timed (each source's run is wrapped); the rest of the step is overhead. The
sources run one after another (``--overlap off``) so forward times add up to wall time. Prefill
and the first token are left out.

    python benchmarks/step_overhead.py --base B --expert E [--anti-expert A] [--batch-sizes 1,8]
        [--new-tokens 32] [--threads 2] [--dtype float32] [--json]

Smoke run: tests/docs/test_docs_scripts.py (tiny models, where the forwards are so small that the
overhead share is large; the target is for real models).
"""

import argparse
import json
import time

from proxytool.decoding.config import LoadingOptions, ProxySetup
from proxytool.decoding.generate import generate
from proxytool.decoding.setup import load_proxy_models
from proxytool.decoding.speed import _prompts, machine
from proxytool.runtime import prepare_runtime


def timed_forwards(models) -> list[float]:
    """Wrap every source's forward (``ModelSource._forward``: the model call and its cache bookkeeping);
    returns the list the forwards' seconds accumulate into."""
    spent = [0.0]
    for source in {id(s): s for s in models.sources}.values():
        run = source._forward

        def wrapped(*args, _run=run, **kwargs):
            start = time.perf_counter()
            try:
                return _run(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start

        source._forward = wrapped
    return spent


def measure(models, prompts: list[str], new_tokens: int, spent: list[float]) -> dict:
    """Per-step wall time and forward time of one generation (``spent``: from :func:`timed_forwards`)."""
    steps = generate(models, prompts, max_new_tokens=new_tokens, ignore_eos=True)
    next(steps)  # prefill and the first token
    spent[0], start = 0.0, time.perf_counter()
    for _ in steps:
        pass
    total = time.perf_counter() - start
    n = new_tokens - 1
    return {
        "batch": len(prompts),
        "ms_per_step": 1000 * total / n,
        "forward_ms_per_step": 1000 * spent[0] / n,
        "overhead_ms_per_step": 1000 * (total - spent[0]) / n,
        "overhead_pct": 100 * (total - spent[0]) / total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--expert", required=True)
    parser.add_argument("--anti-expert")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    prepare_runtime(args.threads)
    loading = LoadingOptions(dtype=args.dtype, device="cpu", overlap="off", threads=args.threads)
    anti = [args.anti_expert] if args.anti_expert else []
    models = load_proxy_models(ProxySetup(base=args.base, experts=[args.expert], anti_experts=anti, loading=loading))
    spent, rows = timed_forwards(models), []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        prompts = _prompts(models.tokenizer, batch, args.prompt_tokens)
        measure(models, prompts, 3, spent)  # warm-up
        rows.append(measure(models, prompts, args.new_tokens, spent))
    if args.json:
        print(json.dumps({"machine": machine(), "results": rows}))
        return
    print("| batch | ms/step | forwards ms/step | other ms/step | other % |")
    print("|---|---|---|---|---|")
    for r in rows:
        cells = (r["ms_per_step"], r["forward_ms_per_step"], r["overhead_ms_per_step"], r["overhead_pct"])
        print(f"| {r['batch']} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
