"""Shared helpers for tests that decode with the engine on the tiny models."""

import random

from tiny import CORPUS

from proxytool.decoding.generate import complete
from proxytool.decoding.setup import ProxySetup, load_proxy_models

N = 12


def random_prompts(n, seed=0):
    rng = random.Random(seed)
    words = " ".join(CORPUS).split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def setup(tiny_models, **kwargs):
    base = kwargs.pop("base", tiny_models["base"])
    return load_proxy_models(ProxySetup(base=str(base), dtype="float32", device="cpu", **kwargs))


def ids(models, prompts, **kwargs):
    return [c.token_ids for c in complete(models, prompts, max_new_tokens=kwargs.pop("n", N), **kwargs)]
