"""Static KV caches (one shape per decode step, for CUDA graphs) give exactly what dynamic caches give."""

import os

import pytest
from engine_helpers import random_prompts, setup
from tiny import save_adapter

from proxytool.decoding.generate import complete
from proxytool.decoding.sampling import SamplingConfig
from proxytool.errors import ProxyToolError


@pytest.fixture(scope="module")
def adapter(tiny_models, tmp_path_factory):
    return save_adapter(tmp_path_factory.mktemp("lora") / "adapter", tiny_models["anti"], seed=5)


def wirings(tiny_models, adapter, **kwargs):
    """A separate pair and a shared-LoRA pair (two row groups of one model)."""
    return {
        "separate": setup(
            tiny_models, experts=[str(tiny_models["expert"])], anti_experts=[str(tiny_models["anti"])], **kwargs
        ),
        "shared-lora": setup(tiny_models, experts=[str(adapter)], **kwargs),
    }


def ids(completions):
    return [c.token_ids for c in completions]


@pytest.mark.parametrize("wiring", ["separate", "shared-lora"])
def test_static_cache_decodes_exactly_as_the_dynamic_one(tiny_models, adapter, wiring):
    dynamic = wirings(tiny_models, adapter, alphas=[1.5])[wiring]
    static = wirings(tiny_models, adapter, alphas=[1.5], kv_cache="static")[wiring]
    assert static.base.source.kv_cache == "static"
    prompts = random_prompts(6, seed=31)
    sampled = SamplingConfig(temperature=1.1, top_k=20, seed=2)
    for kwargs in (
        dict(max_new_tokens=12),  # greedy, one left-padded batch
        dict(max_new_tokens=12, sampling=sampled),
        dict(max_new_tokens=12, speculative=3),  # rejected drafts roll the static caches back
        dict(max_new_tokens=12, speculative=2, sampling=sampled),
        dict(max_new_tokens=12, stop=["e"]),
    ):
        assert ids(complete(static, prompts, **kwargs)) == ids(complete(dynamic, prompts, **kwargs)), kwargs


def test_static_cache_is_refused_across_tokenizers(tiny_models, tmp_path):
    from tiny import OTHER_CORPUS, build_tokenizer, save_model

    other = save_model(tmp_path / "other", seed=5, tokenizer=build_tokenizer(vocab_size=300, corpus=OTHER_CORPUS))
    with pytest.raises(ProxyToolError, match="--kv-cache static is not available across tokenizers"):
        setup(tiny_models, experts=[str(other)], anti_experts=[str(other)], kv_cache="static")


@pytest.mark.compile
@pytest.mark.skipif(
    not os.environ.get("PROXYTOOL_TEST_COMPILE"), reason="set PROXYTOOL_TEST_COMPILE=1 (minutes on a CPU)"
)
def test_compiled_static_cache_equals_eager(tiny_models, adapter):
    eager = wirings(tiny_models, adapter, alphas=[1.5], kv_cache="static")["separate"]
    compiled = wirings(tiny_models, adapter, alphas=[1.5], kv_cache="static", compile="on")["separate"]
    prompts = random_prompts(4, seed=37)
    assert ids(complete(compiled, prompts, max_new_tokens=8)) == ids(complete(eager, prompts, max_new_tokens=8))
