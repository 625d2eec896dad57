"""The engine against the slow reference, the proxy identities, batching and sampling."""

import pytest
import torch
from engine_helpers import N, ids, random_prompts, setup
from reference import load, reference_greedy, tokenizer_of

from proxytool.decoding.combine import Steer, proxy_scores
from proxytool.decoding.generate import complete
from proxytool.decoding.sampling import SamplingConfig


def test_proxy_scores_is_the_formula_on_the_shared_vocabulary():
    base, expert, anti = torch.randn(2, 10), torch.randn(2, 12), torch.randn(2, 11)
    scores = proxy_scores(base, [Steer(0.5, expert, anti)])
    assert torch.allclose(scores, base + 0.5 * (expert[:, :10] - anti[:, :10]))


def test_cached_decoding_equals_full_recomputation(tiny_models):
    """22 random prompts, the expert's logits padded beyond the tokenizer (336 vs 320)."""
    prompts = random_prompts(22)
    models = setup(
        tiny_models, experts=[str(tiny_models["expert"])], anti_experts=[str(tiny_models["anti"])], alphas=[1.5]
    )
    fast = ids(models, prompts, n=10)
    base, expert, anti = (load(tiny_models[k]) for k in ("base", "expert", "anti"))
    tok = tokenizer_of(tiny_models["base"])
    slow = [reference_greedy(base, [(1.5, expert, anti)], p, 10, tok) for p in prompts]
    assert fast == slow


def test_two_experts_with_their_own_alpha_equal_the_reference(tiny_models):
    prompts = random_prompts(4, seed=1)
    t = tiny_models
    models = setup(
        t, experts=[str(t["expert"]), str(t["gpt2"])], anti_experts=[str(t["anti"]), str(t["anti"])], alphas=[1.0, 0.5]
    )
    base, expert, anti, gpt2 = (load(t[k]) for k in ("base", "expert", "anti", "gpt2"))
    tok = tokenizer_of(t["base"])
    slow = [reference_greedy(base, [(1.0, expert, anti), (0.5, gpt2, anti)], p, N, tok) for p in prompts]
    assert ids(models, prompts) == slow


def test_alpha_zero_is_the_base_alone(tiny_models):
    prompts = random_prompts(6)
    alone = ids(setup(tiny_models), prompts)
    steered = setup(
        tiny_models, experts=[str(tiny_models["expert"])], anti_experts=[str(tiny_models["anti"])], alphas=[0.0]
    )
    assert ids(steered, prompts) == alone


def test_expert_equal_to_anti_expert_is_the_base_alone(tiny_models):
    prompts = random_prompts(6)
    alone = ids(setup(tiny_models), prompts)
    same = setup(
        tiny_models, experts=[str(tiny_models["expert"])], anti_experts=[str(tiny_models["expert"])], alphas=[2.0]
    )
    assert len(same.sources) == 2  # the repeated model is loaded once
    assert ids(same, prompts) == alone


def test_base_equal_to_anti_expert_with_alpha_one_is_the_expert_alone(tiny_models):
    prompts = random_prompts(6)
    expert_alone = ids(setup(tiny_models, base=tiny_models["expert"]), prompts)
    proxied = setup(
        tiny_models, experts=[str(tiny_models["expert"])], anti_experts=[str(tiny_models["base"])], alphas=[1.0]
    )
    assert ids(proxied, prompts) == expert_alone


@pytest.mark.parametrize("share", [True, False])
def test_a_batch_equals_each_prompt_alone(tiny_models, share):
    prompts = random_prompts(7, seed=3)
    models = setup(
        tiny_models, experts=[str(tiny_models["expert"])], anti_experts=[str(tiny_models["anti"])], share_weights=share
    )
    batched = ids(models, prompts)
    alone = [ids(models, [p])[0] for p in prompts]
    assert batched == alone


def test_sampling_is_seeded_per_prompt(tiny_models):
    prompts = random_prompts(5, seed=4)
    models = setup(tiny_models, experts=[str(tiny_models["expert"])], anti_experts=[str(tiny_models["anti"])])
    sampling = SamplingConfig(temperature=0.9, top_k=50, top_p=0.95, seed=7)
    batched = ids(models, prompts, sampling=sampling, row_seeds=range(5))
    alone = [ids(models, [p], sampling=sampling, row_seeds=[i])[0] for i, p in enumerate(prompts)]
    assert batched == alone
    other_seed = ids(models, prompts, sampling=SamplingConfig(temperature=0.9, seed=8), row_seeds=range(5))
    assert other_seed != batched


def test_stop_strings_and_eos_end_a_row(tiny_models):
    models = setup(tiny_models)
    [free] = complete(models, ["Who leads the poll?"], max_new_tokens=N)
    assert free.finish_reason == "length" and len(free.token_ids) == N
    cut_at = free.text[3:6]
    [stopped] = complete(models, ["Who leads the poll?"], max_new_tokens=N, stop=[cut_at])
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.find(cut_at)]
    models.eos_ids = frozenset({free.token_ids[2]})
    [eos] = complete(models, ["Who leads the poll?"], max_new_tokens=N)
    assert eos.token_ids == free.token_ids[:3] and eos.finish_reason == "stop"


def test_chat_formats_follow_the_role(tiny_models):
    """Each role sees its own prompt: chat template for the expert, raw text for the others."""
    prompts = random_prompts(3, seed=5)
    t = tiny_models
    models = setup(t, experts=[str(t["expert"])], anti_experts=[str(t["anti"])], formats={"expert": "chat"})
    base, expert, anti = (load(t[k]) for k in ("base", "expert", "anti"))
    slow = [
        reference_greedy(base, [(1.0, expert, anti)], p, N, tokenizer_of(t["base"]), styles={"expert": "chat"})
        for p in prompts
    ]
    assert ids(models, prompts) == slow


@pytest.mark.parametrize("share", [True, False])
def test_overlapped_lanes_decode_the_same_tokens(tiny_models, share):
    from tiny import save_adapter

    prompts = random_prompts(8, seed=12)
    t = tiny_models
    expert = save_adapter(t["anti"].parent / f"lane_adapter_{share}", t["anti"], seed=2) if share else t["expert"]
    kwargs = dict(experts=[str(expert)], anti_experts=[str(t["anti"])], share_weights=share)
    sequential = setup(t, overlap="off", **kwargs)
    overlapped = setup(t, overlap="on", **kwargs)
    assert sequential.lanes is None and overlapped.lanes is not None
    assert ids(overlapped, prompts) == ids(sequential, prompts)
    sampling = SamplingConfig(temperature=1.0, seed=3)
    assert ids(overlapped, prompts, sampling=sampling) == ids(sequential, prompts, sampling=sampling)


def test_bad_overlap_value_is_an_error(tiny_models):
    from proxytool.errors import ProxyToolError

    with pytest.raises(ProxyToolError, match="--overlap"):
        setup(tiny_models, overlap="sometimes")


def test_plausible_only_masks_tokens_the_base_finds_implausible():
    from proxytool.decoding.combine import Steer, plausible_only, proxy_scores

    base = torch.tensor([[4.0, 3.0, -6.0, -1.0]])
    expert = torch.tensor([[0.0, 2.0, 9.0, 0.0]])
    anti = torch.tensor([[0.0, 0.0, -9.0, 0.0]])  # token 2: a huge, noisy expert - anti difference
    scores = proxy_scores(base, [Steer(2.0, expert, anti)])
    assert scores.argmax().item() == 2  # over-steered onto a token the base rules out
    kept = plausible_only(scores, base, 0.01)
    assert kept.argmax().item() == 1  # steering still moves the choice among the base's candidates
    assert torch.isinf(kept[0, 2]) and torch.isinf(kept[0, 3])  # p(3)/p(0) = e^-5 < 0.01
    assert torch.equal(plausible_only(scores, base, 0.0), scores)
    wide = torch.cat([base, torch.full((1, 2), 50.0)], dim=-1)  # padded base logits are trimmed
    assert torch.equal(plausible_only(scores, wide, 0.01), kept)
    with pytest.raises(ValueError):
        plausible_only(scores, base, 1.5)
