"""The engine on the real offline Qwen pair (skipped unless `proxytool models install` ran).

proxytool models install qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct
"""

import pytest

from proxytool.errors import ProxyToolError
from proxytool.models.registry import resolve


def _installed(name: str) -> str | None:
    """The local folder of an installed pack (a bare name would resolve to its hub id)."""
    from pathlib import Path

    try:  # at import time: the user's registry, not the per-test one conftest installs
        source = resolve(name).source
    except ProxyToolError:
        return None
    return source if Path(source).is_dir() else None


SMALL, LARGE = _installed("qwen2.5-coder-0.5b-instruct"), _installed("qwen2.5-coder-1.5b-instruct")
pytestmark = [
    pytest.mark.real_models,
    pytest.mark.slow,
    pytest.mark.skipif(not (SMALL and LARGE), reason="offline Qwen packs not installed"),
]
PROMPT = "Write a Python function that returns the larger of two numbers."


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    """A random, non-zero LoRA adapter on the 0.5B (a stand-in for a trained expert)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(SMALL, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    path = tmp_path_factory.mktemp("real") / "lora"
    get_peft_model(model, config).save_pretrained(path)
    return path


def load(**kwargs):
    from engine_helpers import proxy_setup

    from proxytool.decoding.setup import load_proxy_models

    return load_proxy_models(proxy_setup(LARGE, **kwargs))


def test_qwen_pair_shares_a_tokenizer_with_padded_logits():
    models = load(
        experts=[SMALL], anti_experts=[SMALL], formats={"base": "chat", "expert": "chat", "anti-expert": "chat"}
    )
    assert models.base.source.model.config.vocab_size == 151936
    from proxytool.decoding.generate import complete

    [proxied] = complete(models, [PROMPT], max_new_tokens=8)
    [alone] = complete(load(formats={"base": "chat"}), [PROMPT], max_new_tokens=8)
    assert proxied.token_ids == alone.token_ids  # expert == anti-expert ⇒ the base alone
    assert "def" in alone.text or alone.text.strip()


def test_cached_proxy_decoding_equals_full_recomputation_on_the_real_pair(lora):
    import torch
    from peft import PeftModel
    from reference import reference_greedy, tokenizer_of
    from transformers import AutoModelForCausalLM

    from proxytool.decoding.generate import complete

    models = load(experts=[str(lora)], formats={"base": "raw", "expert": "raw", "anti-expert": "raw"})
    [fast] = complete(models, [PROMPT], max_new_tokens=6)
    base = models.base.source.model
    anti = AutoModelForCausalLM.from_pretrained(SMALL, dtype=torch.float32).eval()
    expert = (
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(SMALL, dtype=torch.float32), lora)
        .merge_and_unload()
        .eval()
    )
    slow = reference_greedy(base, [(1.0, expert, anti)], PROMPT, 6, tokenizer_of(LARGE), eos_id=-1)
    assert fast.token_ids == slow
