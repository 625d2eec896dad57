import pytest
import torch


@pytest.fixture(scope="module")
def base_model(tiny_models):
    """The tiny base as vLLM's stand-in: the fake drivers take its logits as vLLM's raw logits."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_models["base"], dtype=torch.float32).eval()
