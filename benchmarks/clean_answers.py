"""Junk glued to proxy-tuned answers: how often, why, and what the plausibility filter does to it.

Loads base, expert and anti-expert once and decodes the polls questions (every split of eval.jsonl and
the dev phrasings of eval_dev.jsonl) with the proxy at each (alpha, --plausible) setting, greedy, the
eval's 16 tokens and newline stop. For each setting: accuracy and junk rate (metrics.junk_in) per file;
for the unfiltered runs, every generated token of a junk answer with its log-probability and rank under
base, expert and anti-expert, and whether the filter at each ratio keeps it (the "why").

Run (offline packs installed, the polls expert trained; about 2 minutes per setting and file on 2 idle cores):
  PYTHONPATH=. python benchmarks/clean_answers.py --base qwen2.5-coder-1.5b-instruct \
      --expert runs/demo/polls-expert --data-dir work/polls-demo --alphas 1 --plausible 0,0.01 \
      --threads 2 --output runs/clean_answers.json
"""

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--expert", required=True)
    parser.add_argument("--anti-expert", default=None, help="default: the model the expert was tuned from")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--files", default="eval,eval_dev", help="comma list of file stems in --data-dir")
    parser.add_argument("--alphas", default="1")
    parser.add_argument("--plausible", default="0,0.01", help="comma list of ratios (0 = off)")
    parser.add_argument("--batch-size", type=int, default=18)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()

    import torch

    from proxytool.decoding.combine import plausible_mask
    from proxytool.decoding.config import LoadingOptions, ProxySetup
    from proxytool.decoding.generate import completion_of, generate
    from proxytool.decoding.setup import load_proxy_models
    from proxytool.evaluation import metrics
    from proxytool.evaluation.tasks import load_task

    torch.set_num_threads(args.threads)
    loading = LoadingOptions(
        dtype="float32", device="cpu", base_format="raw", expert_format="raw", anti_expert_format="raw"
    )
    models = load_proxy_models(
        ProxySetup(
            base=args.base,
            experts=[args.expert],
            anti_experts=[args.anti_expert] if args.anti_expert else [],
            loading=loading,
        )
    )
    tokenizer = models.tokenizer
    ratios = [float(r) for r in args.plausible.split(",")]
    probe = sorted({r for r in ratios if r > 0} | {0.001, 0.01, 0.1})
    results = {"settings": [], "junk_tokens": []}

    for stem in args.files.split(","):
        task = load_task(f"{args.data_dir}/{stem}.jsonl")
        for alpha in (float(a) for a in args.alphas.split(",")):
            for ratio in ratios:
                system = models.with_alphas([alpha]).with_plausible(ratio)
                start, records = time.perf_counter(), []
                for i in range(0, len(task.examples), args.batch_size):
                    batch = task.examples[i : i + args.batch_size]
                    per_row: list[list[dict]] = [[] for _ in batch]

                    def observe(stepper, scores, tokens, per_row=per_row, ratio=ratio):
                        if ratio > 0:
                            return
                        logits = {k: v if v.dim() == 2 else v[:, -1] for k, v in stepper.role_logits().items()}
                        width = scores.shape[-1]
                        lp = {k: torch.log_softmax(v[..., :width].float(), -1) for k, v in logits.items()}
                        for r, token in enumerate(tokens.tolist()):
                            entry = {"token": tokenizer.decode([token])}
                            for role in ("base", "expert", "anti-expert"):
                                row = lp[role][r]
                                entry[f"{role}_logprob"] = round(float(row[token]), 2)
                                entry[f"{role}_rank"] = int((row > row[token]).sum())
                            for role in ("base", "expert"):  # what the model itself wanted there
                                entry[f"{role}_top"] = tokenizer.decode([int(lp[role][r].argmax())])
                            eos = sorted(i for i in models.eos_ids if i < width)
                            entry["expert_eos_logprob"] = round(float(lp["expert"][r, eos].max()), 2) if eos else None
                            newline = tokenizer.encode("\n", add_special_tokens=False)
                            if len(newline) == 1:
                                entry["expert_newline_logprob"] = round(float(lp["expert"][r, newline[0]]), 2)
                            for p in probe:
                                keep = plausible_mask([logits["base"][r, :width], logits["expert"][r, :width]], p)
                                entry[f"kept_at_{p:g}"] = bool(keep[token])
                            per_row[r].append(entry)

                    rows = []
                    for rows in generate(  # noqa: B007 (the last yield is the result)
                        system, [e.prompt for e in batch], max_new_tokens=task.max_new_tokens, stop=task.stop,
                        observe=observe,
                    ):  # fmt: skip
                        pass
                    for example, row, trace in zip(batch, rows, per_row):
                        text = completion_of(row, tokenizer).text
                        trace = trace[: len(row.token_ids)]  # a finished row runs on with its batch
                        junk = metrics.junk_in(text, example.meta.get("question") or example.prompt, example.answer)
                        records.append(
                            {
                                "id": example.id,
                                "split": example.meta.get("split"),
                                "fact": example.meta.get("fact"),
                                "completion": text,
                                "answer": example.answer,
                                "score": task.score(example, text),
                                "junk": junk,
                                "finish": row.finish_reason,
                            }
                        )
                        if junk and trace:
                            results["junk_tokens"].append(
                                {"file": stem, "alpha": alpha, "id": example.id, "completion": text, "tokens": trace}
                            )
                seconds = time.perf_counter() - start
                n = len(records)
                by_split = {}
                for r in records:
                    s = by_split.setdefault(r["split"], {"n": 0, "score": 0.0, "junk": 0})
                    s["n"] += 1
                    s["score"] += r["score"]
                    s["junk"] += int(r["junk"])
                setting = {
                    "file": stem,
                    "alpha": alpha,
                    "plausible": ratio,
                    "n": n,
                    "accuracy": sum(r["score"] for r in records) / n,
                    "junk_rate": sum(r["junk"] for r in records) / n,
                    "by_split": by_split,
                    "seconds": round(seconds, 1),
                    "records": records,
                }
                results["settings"].append(setting)
                print(
                    f"{stem} alpha={alpha:g} plausible={ratio:g}: accuracy {100 * setting['accuracy']:.1f}% "
                    f"junk {100 * setting['junk_rate']:.1f}% ({n} questions, {seconds:.0f} s)",
                    flush=True,
                )
                with open(args.output, "w") as f:  # after every setting: a partial run is still read
                    json.dump(results, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
