"""lm-eval-harness end to end (opt-in: ``pytest -m lmeval``, needs ``pip install -e '.[lmeval]'``).

lm-eval's ``local-completions`` model against ``proxytool serve`` (its default ``tokenizer_backend``:
the server's /tokenizer_info, /tokenize, /detokenize) and lm-eval's own ``hf`` backend in this process,
on the same tiny model folder and the same requests: log-likelihoods equal to 1e-4 (the same is-greedy
flags), greedy generations identical. Served twice: the base alone, and a proxy whose expert is its
anti-expert (the proxy's distribution is then the base's). Also the benchmark script's smoke run.
"""

import math
import runpy
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lmeval
pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install -e '.[lmeval]')")
pytest.importorskip("tenacity", reason="lm-eval's local-completions needs lm-eval[api] (tenacity)")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.models.openai_completions import LocalCompletionsAPI  # noqa: E402
from tiny import CORPUS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-4
CONTEXT = 256  # the tiny models' max_position_embeddings


def loglikelihood_requests() -> list[Instance]:
    """Every split of each corpus line at a word boundary (short and long contexts), plus a
    multiple-choice shape (one context, the other lines' endings as wrong choices) and an empty context."""
    pairs = []
    for line in CORPUS:
        words = line.split(" ")
        for k in range(1, len(words), 3):
            pairs.append((" ".join(words[:k]), " " + " ".join(words[k:])))
    context = "Question: Who leads the national poll?\nAnswer:"
    pairs += [(context, " " + line.split(" ")[-1]) for line in CORPUS]
    pairs.append(("", CORPUS[0]))  # lm-eval puts the EOS token in front
    return [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]


def generation_requests() -> list[Instance]:
    stops = [["\n"], ["."], [" poll", "\n"], ["<|endoftext|>"]]
    return [
        Instance("generate_until", {}, (line[: 12 + 5 * i], {"until": stops[i % 4], "max_gen_toks": 16}), i)
        for i, line in enumerate(CORPUS)
    ]


@pytest.fixture(scope="module")
def hf_results(tiny_models):
    # logits_cache=False: lm-eval 0.4.13's hf backend scores requests whose context + continuation[:-1] are equal
    # (the splits of one line below) from one forward, but gathers a shorter continuation's log-probabilities
    # at the first positions of the longest one's slice instead of the last (wrong sums; its default is True)
    hf = HFLM(pretrained=str(tiny_models["base"]), device="cpu", batch_size=1, dtype="float32", logits_cache=False)
    return hf.loglikelihood(loglikelihood_requests()), hf.generate_until(generation_requests())


def serve(models, **client_args):
    """(loglikelihoods, generations) of lm-eval's local-completions against a server over ``models``."""
    from proxytool.serving.app import ServerConfig
    from proxytool.serving.server import BackgroundServer

    with BackgroundServer(models, ServerConfig(model_name="tiny")) as server:
        lm = LocalCompletionsAPI(
            base_url=server.url + "/v1/completions", model="tiny", max_length=CONTEXT + 1, max_retries=1, **client_args
        )
        assert lm.tokenizer_backend == "remote"  # found the server's tokenizer routes
        scores = lm.loglikelihood(loglikelihood_requests())
        assert server.scheduler.stats.batches_started == 0  # every one answered from one prefill (no generation)
        return scores, lm.generate_until(generation_requests())


def load(base, experts=(), antis=()):
    from proxytool.decoding.setup import LoadingOptions, ProxySetup, load_proxy_models

    setup = ProxySetup(
        base=str(base),
        experts=[str(e) for e in experts],
        anti_experts=[str(a) for a in antis],
        alphas=[1.0] * len(experts),
        loading=LoadingOptions(overlap="off"),
    )
    return load_proxy_models(setup)


def check_equal(served, in_process) -> float:
    (ll, gen), (ref_ll, ref_gen) = served, in_process
    assert len(ll) == len(ref_ll) > 30
    diffs = [abs(a - b) for (a, _), (b, _) in zip(ll, ref_ll)]
    assert all(math.isfinite(a) for a, _ in ll)
    assert max(diffs) < TOLERANCE, max(diffs)
    assert [g for _, g in ll] == [g for _, g in ref_ll]
    assert gen == ref_gen
    print(f"{len(ll)} loglikelihoods, max |diff| {max(diffs):.2e}; {len(gen)} generations identical")
    return max(diffs)


@pytest.mark.parametrize("client_args", [{}, {"batch_size": 4, "num_concurrent": 2}], ids=["one-by-one", "batched"])
def test_base_through_serve_equals_hf(tiny_models, hf_results, client_args):
    """One prompt per request, one at a time (lm-eval's defaults), and 4 prompts per request, 2 at once."""
    check_equal(serve(load(tiny_models["base"]), **client_args), hf_results)


def test_proxy_with_expert_equal_to_anti_expert_equals_hf_on_the_base(tiny_models, hf_results):
    anti = tiny_models["anti"]
    check_equal(serve(load(tiny_models["base"], [anti], [anti])), hf_results)


def test_benchmark_script_tiny(capsys, tmp_path):
    """benchmarks/lmeval_serve.py end to end on tiny shapes (a server subprocess, lm-eval both ways)."""
    out = tmp_path / "result.json"
    argv = sys.argv
    sys.argv = ["lmeval_serve.py", "--tiny", "--requests", "24", "--threads", "1", "--json", str(out)]
    try:
        runpy.run_path(str(REPO / "benchmarks" / "lmeval_serve.py"), run_name="__main__")
    finally:
        sys.argv = argv
    assert "| serve / hf |" in capsys.readouterr().out
    assert out.is_file()
