"""LoRA adapters on row groups through PEFT's plain forward: the same logits as PEFT's mixed batch."""

import pytest
import torch
from engine_helpers import ids, random_prompts, setup
from reference import load
from tiny import save_adapter

from proxytool.models.lora_rows import RowGroupAdapters


@pytest.fixture(scope="module")
def adapter(tiny_models, tmp_path_factory):
    return save_adapter(tmp_path_factory.mktemp("lora") / "adapter", tiny_models["anti"], seed=5)


def _peft(tiny_models, adapter, name="e"):
    from peft import PeftModel

    return PeftModel.from_pretrained(load(tiny_models["anti"]), adapter, adapter_name=name).eval()


@pytest.mark.parametrize("groups", [("e", None), (None, "e"), ("e", "__base__", "e")])
def test_rows_equal_peft_mixed_batch_and_base_rows_equal_the_base_exactly(tiny_models, adapter, groups):
    model = _peft(tiny_models, adapter)
    per_group = 3
    tokens = torch.randint(3, 300, (per_group, 7), generator=torch.Generator().manual_seed(0)).repeat(len(groups), 1)
    names = [g or "__base__" for g in groups for _ in range(per_group)]
    rows = RowGroupAdapters.fit(model, groups)
    assert rows is not None
    with torch.inference_mode():
        mixed = model(input_ids=tokens, adapter_names=names).logits
        with rows.rows(per_group, tokens.device):
            hooked = model(input_ids=tokens).logits
        on = model(input_ids=tokens).logits  # outside ``rows`` the hooks do nothing: the adapter on every row
        with model.disable_adapter():
            base = model(input_ids=tokens).logits
    torch.testing.assert_close(hooked, mixed)
    for i, name in enumerate(names):
        if name == "__base__":
            assert torch.equal(hooked[i], base[i])  # B·A·0 added to the base layer's output: exactly it
        else:
            torch.testing.assert_close(hooked[i], on[i])
    assert not torch.allclose(on, base)  # the adapter changes the logits (else the test proves nothing)


def test_only_plain_active_lora_fits(tiny_models, adapter, tmp_path):
    from peft import LoraConfig, get_peft_model

    model = _peft(tiny_models, adapter)
    assert RowGroupAdapters.fit(model, ["other", None]) is None  # not the active adapter
    assert RowGroupAdapters.fit(model, [None]) is None  # no adapter asked for
    assert RowGroupAdapters.fit(load(tiny_models["anti"]), ["e", None]) is None  # not a PeftModel
    for extra in ({"use_dora": True}, {"lora_bias": True}):
        config = LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False, **extra)
        assert RowGroupAdapters.fit(get_peft_model(load(tiny_models["anti"]), config), ["default", None]) is None
    merged = _peft(tiny_models, adapter)
    merged.merge_adapter()
    assert RowGroupAdapters.fit(merged, ["e", None]) is None


def test_shared_pair_runs_without_peft_mixed_batch(tiny_models, adapter, monkeypatch):
    """The shared LoRA pair decodes, with PEFT's mixed batch forbidden, the tokens of the merged expert."""
    from peft.tuners.lora import Linear

    prompts = random_prompts(6, seed=3)
    separate = ids(setup(tiny_models, experts=[str(adapter)], share_weights=False), prompts)

    def forbidden(*args, **kwargs):
        raise AssertionError("PEFT's mixed-adapter batch ran")

    monkeypatch.setattr(Linear, "_mixed_batch_forward", forbidden)
    assert ids(setup(tiny_models, experts=[str(adapter)]), prompts) == separate
