"""Speculative proxy decoding on real models: how often each small model's greedy choice agrees with the
proxy's, the exact acceptance that gives for each k, and timed runs (batch 1, greedy).

Acceptance is exact from one plain run: a kept draft is always the token plain decoding picks, so a
draft at step t is conditioned on the plain prefix and is kept iff the drafter's argmax there equals
the proxy's. A round starting at step t keeps the run of agreeing steps from t (at most k) plus one.

Run (offline packs installed, one trained expert):
  PYTHONPATH=. python benchmarks/speculative_cpu.py --base qwen2.5-coder-1.5b-instruct \
      --expert runs/polls-expert --prompts polls_unseen.jsonl --n-prompts 4 --new-tokens 32 --threads 2 \
      --ks 2,4,6 --time-ks 2,4 --output docs/bench/cpu_speculative.json
"""

import argparse
import json
import time


def rounds_for(agree: list[bool], k: int) -> tuple[int, int]:
    """(rounds, tokens) of speculative decoding over a greedy path whose step t agrees iff agree[t].

    The first token comes from the prefill (as in proxytool.decoding.speculative); rounds cover the rest.
    """
    t, rounds, n = 1, 0, len(agree)
    while t < n:
        budget = min(k, n - t - 1)
        kept = 0
        while kept < budget and agree[t + kept]:
            kept += 1
        t += kept + 1
        rounds += 1
    return rounds, n - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--expert", required=True)
    parser.add_argument("--prompts", required=True, help="JSONL with a 'prompt' field")
    parser.add_argument("--n-prompts", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ks", default="1,2,3,4,6,8")
    parser.add_argument("--time-ks", default="2,4")
    parser.add_argument("--format", default="raw", help="prompt format of every role")
    parser.add_argument("--output")
    args = parser.parse_args()

    from proxytool.runtime import prepare_runtime

    prepare_runtime(args.threads)
    import torch

    from proxytool.decoding.generate import complete, generate
    from proxytool.decoding.setup import LoadingOptions, ProxySetup, load_proxy_models

    with open(args.prompts) as f:
        prompts = [json.loads(line)["prompt"] for line in f][: args.n_prompts]
    formats = {f"{role}_format": args.format for role in ("base", "expert", "anti_expert")}
    started = time.perf_counter()
    models = load_proxy_models(
        ProxySetup(
            base=args.base,
            experts=[args.expert],
            alphas=[args.alpha],
            loading=LoadingOptions(dtype="float32", **formats),
        )
    )
    load_s = time.perf_counter() - started
    base_alone = models.with_base(models.base)
    n = args.new_tokens
    ks = [int(k) for k in args.ks.split(",")]
    drafters = ("expert", "anti-expert", "base")
    complete(models, prompts[:1], max_new_tokens=2)  # warm-up
    complete(base_alone, prompts[:1], max_new_tokens=2)
    per_prompt = []
    for prompt in prompts:
        agree = {d: [] for d in drafters}

        def observe(stepper, scores, tokens, agree=agree):
            roles = stepper.role_logits()
            width = scores.shape[-1]
            for name in drafters:
                logits = roles[name]
                last = logits.reshape(logits.shape[0], -1, logits.shape[-1])[:, -1, :width]
                agree[name].append(bool(last.argmax(-1)[0] == tokens[0]))

        timed = {}
        t0 = time.perf_counter()
        [plain] = complete(models, [prompt], max_new_tokens=n, ignore_eos=True, observe=observe)
        timed["proxy"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        complete(base_alone, [prompt], max_new_tokens=n, ignore_eos=True)
        timed["base"] = time.perf_counter() - t0
        measured = {}
        for k in (int(k) for k in args.time_ks.split(",")):
            stats = {}
            t0 = time.perf_counter()
            rows = None
            for rows in generate(models, [prompt], speculative=k, max_new_tokens=n, ignore_eos=True, stats=stats):  # noqa: B007
                pass
            timed[f"speculative k={k}"] = time.perf_counter() - t0
            assert rows[0].token_ids == plain.token_ids, "speculative output differs from plain decoding"
            simulated = rounds_for(agree["expert"], k)[0]
            measured[k] = {"rounds": stats["rounds"], "accepted": stats["accepted"], "simulated_rounds": simulated}
        acceptance = {
            d: {k: dict(zip(("rounds", "tokens"), rounds_for(agree[d], k), strict=True)) for k in ks} for d in drafters
        }
        per_prompt.append(
            {
                "prompt": prompt,
                "completion": plain.text,
                "agreement": {d: sum(a) / len(a) for d, a in agree.items()},
                "acceptance": acceptance,
                "measured": measured,
                "seconds": timed,
            }
        )
        print(json.dumps(per_prompt[-1]["agreement"]), json.dumps(timed), flush=True)

    summary = {"acceptance": {}, "seconds": {}}
    for d in drafters:
        for k in ks:
            rounds = sum(p["acceptance"][d][k]["rounds"] for p in per_prompt)
            tokens = sum(p["acceptance"][d][k]["tokens"] for p in per_prompt)
            summary["acceptance"][f"{d} k={k}"] = {
                "tokens_per_round": tokens / rounds,
                "drafts_kept_per_round": tokens / rounds - 1,
            }
        summary["agreement_" + d] = sum(p["agreement"][d] for p in per_prompt) / len(per_prompt)
    for mode in per_prompt[0]["seconds"]:
        summary["seconds"][mode] = sum(p["seconds"][mode] for p in per_prompt)
        summary["seconds"][mode + " ms/token"] = 1000 * summary["seconds"][mode] / (len(per_prompt) * n)
    report = {
        "args": vars(args),
        "load_s": load_s,
        "threads": torch.get_num_threads(),
        "summary": summary,
        "per_prompt": per_prompt,
    }
    print(json.dumps(summary, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
