"""A LoRA expert on its anti-expert's weights: one model, one batched forward, the same tokens."""

import pytest
import torch
from engine_helpers import N, ids, random_prompts, setup
from reference import load, reference_greedy, tokenizer_of
from tiny import save_adapter


@pytest.fixture(scope="module")
def adapter(tiny_models, tmp_path_factory):
    return save_adapter(tmp_path_factory.mktemp("lora") / "adapter", tiny_models["anti"], seed=5)


def test_adapter_expert_implies_its_base_as_anti_expert_and_shares_it(tiny_models, adapter):
    models = setup(tiny_models, experts=[str(adapter)])
    assert len(models.sources) == 2  # base + one small model for expert and anti-expert
    pair = models.pairs[0]
    assert pair.expert.source is pair.anti_expert.source


def test_shared_pair_equals_separate_models_and_the_reference(tiny_models, adapter):
    from peft import PeftModel

    prompts = random_prompts(20, seed=9)
    shared = ids(setup(tiny_models, experts=[str(adapter)]), prompts)
    separate = ids(setup(tiny_models, experts=[str(adapter)], share_weights=False), prompts)
    expert = PeftModel.from_pretrained(load(tiny_models["anti"]), adapter).merge_and_unload().eval()
    slow = [
        reference_greedy(
            load(tiny_models["base"]),
            [(1.0, expert, load(tiny_models["anti"]))],
            p,
            N,
            tokenizer_of(tiny_models["base"]),
        )
        for p in prompts
    ]
    assert shared == slow
    assert separate == slow


def test_everything_on_one_model_when_base_is_the_anti_expert(tiny_models, adapter):
    """base == anti-expert, α = 1 ⇒ the expert alone; all three roles share one loaded model."""
    prompts = random_prompts(5, seed=2)
    models = setup(tiny_models, base=tiny_models["anti"], experts=[str(adapter)])
    assert len(models.sources) == 1
    expert_alone = ids(setup(tiny_models, base=adapter), prompts)
    assert ids(models, prompts) == expert_alone


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-9), (torch.float32, 1e-3)])
def test_mixed_adapter_drift_is_rounding_not_a_bug(tiny_models, adapter, dtype, tolerance):
    """Shared rows (base weights + LoRA delta) vs a merged expert, 16 cached steps: in float64 they
    agree to 1e-9, so the float32 difference is summation order, not different maths."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from proxytool.decoding.formats import PromptFormat
    from proxytool.decoding.sources import Group, ModelSource

    tok = tokenizer_of(tiny_models["anti"])
    fmt = PromptFormat(tok, "raw")

    def small():
        return AutoModelForCausalLM.from_pretrained(tiny_models["anti"], dtype=dtype).eval()

    shared = ModelSource(
        PeftModel.from_pretrained(small(), adapter, adapter_name="e").eval(), [Group("e", fmt), Group(None, fmt)]
    )
    merged = ModelSource(PeftModel.from_pretrained(small(), adapter).merge_and_unload().eval(), [Group(None, fmt)])
    prompts = random_prompts(3, seed=4)
    worst = 0.0
    (shared_state, [a, _]), (merged_state, [b]) = shared.prefill(prompts), merged.prefill(prompts)
    for _ in range(16):
        worst = max(worst, (a - b).abs().max().item())
        token = a.argmax(-1)
        a, b = shared.step(shared_state, token)[0], merged.step(merged_state, token)[0]
    print(f"max |shared - merged| over 16 steps, {dtype}: {worst:.2e}")
    assert worst < tolerance
