"""Calls per token and tokens/s of a remote base steered by a local pair, one prompt at a time.

    python benchmarks/remote_calls.py --base http://127.0.0.1:8931/v1 --expert runs/demo/polls-expert \
        --prompts work/polls-demo/eval_unseen.jsonl --n-prompts 8 --new-tokens 24 --lookahead 0,8

    python benchmarks/remote_calls.py --base http://127.0.0.1:8931/v1 --expert runs/demo/gsm8k-expert \
        --prompts ../shared/data/evalsets/gsm8k/test.jsonl --format chat --new-tokens 128 --lookahead 8

--prompts: JSONL with a "prompt" field, or a "question" field (asked as the evaluations ask it,
"Question: ...\nAnswer:"). Prints one JSON line per (lookahead, prompt) and a summary line per
lookahead (docs/remote.md).
"""

import argparse
import json
import time

from proxytool.decoding.generate import complete
from proxytool.decoding.setup import LoadingOptions, ProxySetup, load_proxy_models
from proxytool.runtime import prepare_runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="http(s)://HOST:PORT/v1[#MODEL]")
    parser.add_argument("--expert", required=True)
    parser.add_argument("--prompts", required=True, help="JSONL with a 'prompt' or 'question' field")
    parser.add_argument("--n-prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--lookahead", default="0,8", help="comma list of --remote-lookahead values")
    parser.add_argument("--draft", default="pair", choices=("base", "pair"))
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--format", default="raw", choices=("raw", "chat"), help="prompt format of every role")
    parser.add_argument("--extra", type=int, default=5, help="--remote-extra (0 = the top K alone)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    prepare_runtime(args.threads)
    with open(args.prompts, encoding="utf-8") as f:
        records = [json.loads(line) for line in f][: args.n_prompts]
    prompts = [r["prompt"] if "prompt" in r else f"Question: {r['question'].strip()}\nAnswer:" for r in records]
    for lookahead in (int(x) for x in args.lookahead.split(",")):
        loading = LoadingOptions(
            dtype="float32",
            base_format=args.format,
            expert_format=args.format,
            anti_expert_format=args.format,
            remote_lookahead=lookahead,
            remote_draft=args.draft,
            remote_extra=args.extra,
        )
        setup = ProxySetup(base=args.base, experts=[args.expert], alphas=[args.alpha], loading=loading)
        models = load_proxy_models(setup)
        calls = models.base.source.client.calls
        tokens, seconds = 0, 0.0
        start_calls = calls.completions
        for i, prompt in enumerate(prompts):
            before, started = calls.completions, time.perf_counter()
            [done] = complete(models, [prompt], max_new_tokens=args.new_tokens)
            took = time.perf_counter() - started
            tokens, seconds = tokens + len(done.token_ids), seconds + took
            row = {"lookahead": lookahead, "prompt": i, "tokens": len(done.token_ids)}
            print(json.dumps({**row, "calls": calls.completions - before, "seconds": round(took, 2)}), flush=True)
        used = calls.completions - start_calls
        summary = {"lookahead": lookahead, "extra": models.base.source.extra_top, "tokens": tokens, "calls": used}
        summary["calls_per_token"] = used / max(tokens, 1)
        print(json.dumps({**summary, "tokens_per_s": tokens / max(seconds, 1e-9)}), flush=True)


if __name__ == "__main__":
    main()
