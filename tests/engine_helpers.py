"""Shared helpers for tests that decode with the engine on the tiny models."""

import random

from tiny import CORPUS

from proxytool.decoding.generate import complete
from proxytool.decoding.setup import LoadingOptions, ProxySetup, load_proxy_models

N = 12


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
