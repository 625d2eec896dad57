"""How often bf16 decoding gives the same greedy tokens as fp32, with the same models and prompts.

Loads the proxy-tuned setup in float32 and in bfloat16 (one after the other), decodes every prompt
greedily in both, and reports: prompts whose tokens are identical, the mean share of each row's
tokens before the first difference, and where rows first differ. Speed is `proxytool bench
--dtype …`'s job; this is the quality side of choosing bf16 on a CPU.

    python benchmarks/dtype_agreement.py --base B --expert E [--anti-expert A] --prompts P.jsonl
        [--n-prompts 16] [--new-tokens 32] [--threads 2] [--json]

P.jsonl: one {"prompt": ...} per line (the format `proxytool decode` reads).
"""

import argparse
import json
from pathlib import Path

from proxytool.api import ProxyTuned
from proxytool.data.jsonl import read_jsonl
from proxytool.decoding.speed import machine


def tokens(dtype: str, args, prompts: list[str]) -> list[list[int]]:
    anti = args.anti_expert or None
    tuned = ProxyTuned.from_pretrained(
        args.base, args.expert, anti, alpha=args.alpha, dtype=dtype, device="cpu", threads=args.threads
    )
    results = tuned.generate(prompts, max_new_tokens=args.new_tokens, batch_size=args.batch_size)
    return [r.token_ids for r in results]


def first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--expert", required=True)
    parser.add_argument("--anti-expert")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--n-prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    prompts = [row["prompt"] for _, row in read_jsonl(Path(args.prompts))][: args.n_prompts]
    fp32, bf16 = tokens("float32", args, prompts), tokens("bfloat16", args, prompts)
    firsts = [first_difference(a, b) for a, b in zip(fp32, bf16)]
    same = sum(a == b for a, b in zip(fp32, bf16))
    report = {
        "machine": machine(),
        "prompts": len(prompts),
        "identical_rows": same,
        "mean_agreeing_prefix": sum(f / max(len(a), 1) for f, a in zip(firsts, fp32)) / len(prompts),
        "first_difference": firsts,
    }
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"bf16 == fp32 on {same}/{len(prompts)} prompts; mean agreeing prefix "
        f"{100 * report['mean_agreeing_prefix']:.1f}% of {args.new_tokens} tokens; first differences at {firsts}"
    )


if __name__ == "__main__":
    main()
