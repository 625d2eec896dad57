"""One model's decode step with torch's own linear kernels and with laid-out weights (--pack-weights).

For each row count: prefill a random 42-token prompt per row, then time single-token decode steps
(median), first with the model as loaded, then reloaded and laid out by ``pack_linears`` in each of
``--layouts`` (every layer, or with ``--min-weights 524288`` the ones ``--pack-weights auto``
times); also checks that both decode the same greedy tokens. Run on a quiet machine:

    python benchmarks/packed_steps.py qwen2.5-coder-0.5b-instruct --threads 1 --rows 1,2,8 --layouts on,transposed
"""

import argparse
import json
import statistics
import time

import torch


def decode_steps(model, rows: int, steps: int, seed: int) -> tuple[float, list[list[int]]]:
    """Median seconds of one decode step for ``rows`` rows, and the greedy tokens."""
    from transformers import DynamicCache

    vocab = min(model.config.vocab_size, 5000)
    ids = torch.randint(0, vocab, (rows, 42), generator=torch.Generator().manual_seed(seed))
    times, tokens = [], []
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        out = model(ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        for _ in range(steps):
            start = time.perf_counter()
            out = model(token, past_key_values=cache, use_cache=True)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            times.append(time.perf_counter() - start)
            tokens.append(token)
    return statistics.median(times), torch.cat(tokens, dim=1).tolist()


def main() -> None:
    from proxytool.models.loading import load_model
    from proxytool.models.packed import UNSIZED_LAYOUTS, pack_linears
    from proxytool.models.registry import resolve

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a registry name or model folder")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rows", default="1,2,8")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--min-weights", type=int, default=0, help="lay out layers this large (auto: 524288)")
    parser.add_argument("--layouts", default="on", help="comma-separated: on (oneDNN-packed), blocked, transposed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [int(r) for r in args.rows.split(",")]
    model = load_model(resolve(args.model), dtype=args.dtype, device="cpu").eval()
    plain = {r: decode_steps(model, r, args.steps, seed=r) for r in rows}
    for layout in args.layouts.split(","):
        model = None
        for r in rows:
            if model is None or layout not in UNSIZED_LAYOUTS:  # ``blocked`` lays weights out for a row count
                model = load_model(resolve(args.model), dtype=args.dtype, device="cpu").eval()
                if not pack_linears(model, min_weights=args.min_weights, layout=layout, rows=r):
                    raise SystemExit(f"no layer of {args.model} has {args.min_weights} weights")
            seconds, tokens = decode_steps(model, r, args.steps, seed=r)
            line = {
                "model": args.model, "dtype": args.dtype, "threads": args.threads, "rows": r, "layout": layout,
                "torch_ms": round(plain[r][0] * 1e3, 1), "layout_ms": round(seconds * 1e3, 1),
                "speedup": round(plain[r][0] / seconds, 2), "same_tokens": tokens == plain[r][1],
            }  # fmt: skip
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
