"""The plausibility filter next to the formula (combine.py): the unfiltered formula wherever it does not
bind, a constructed junk token removed, the expert's end of answer kept, and the engine applying it."""

import math

import pytest
import torch
from engine_helpers import proxy_setup

from proxytool.decoding.combine import Steer, plausible_mask, proxy_scores
from proxytool.decoding.setup import load_proxy_models
from proxytool.decoding.stepper import Stepper

# token:     0 "45"  1 "%"  2 " to"  3 EOS  4 "ucha" (junk)
BASE = torch.tensor([2.0, 1.5, 0.0, -3.0, -6.0])
EXPERT = torch.tensor([0.0, 3.0, -1.0, 2.5, -9.0])
ANTI = torch.tensor([0.0, 0.0, -1.0, -2.0, -21.0])  # both small models find "ucha" implausible...


def test_a_junk_token_from_the_difference_of_two_implausible_logits_is_removed():
    steer = [Steer(1.0, EXPERT, ANTI)]
    plain = proxy_scores(BASE, steer)
    assert int(plain.argmax()) == 4  # ...but expert - anti = +12 there: the unfiltered formula picks the junk
    filtered = proxy_scores(BASE, steer, plausible=0.01)
    assert filtered[4] == float("-inf") and int(filtered.argmax()) == 1
    kept = filtered != float("-inf")
    assert torch.equal(filtered[kept], plain[kept])  # kept tokens keep the formula's value


def test_the_union_keeps_the_experts_end_of_answer_that_the_base_finds_implausible():
    # the base alone (DExperts-style) would drop EOS (-3 vs its top 2: ratio e^-5); the expert ranks it second
    assert not bool(plausible_mask([BASE], 0.01)[3])
    assert bool(plausible_mask([BASE, EXPERT], 0.01)[3])
    assert proxy_scores(BASE, [Steer(1.0, EXPERT, ANTI)], plausible=0.01)[3] == BASE[3] + EXPERT[3] - ANTI[3]


@pytest.mark.parametrize("seed", range(5))
def test_equal_to_the_unfiltered_formula_wherever_it_does_not_bind(seed):
    g = torch.Generator().manual_seed(seed)
    base, expert, anti = (torch.randn(3, 7, 50, generator=g) * 3 for _ in range(3))
    steers = [Steer(1.5, expert, anti)]
    plain = proxy_scores(base, steers)
    assert torch.equal(proxy_scores(base, steers, plausible=0.0), plain)  # off
    assert torch.equal(proxy_scores(base, steers, plausible=1e-30), plain)  # a threshold no logit reaches
    filtered = proxy_scores(base, steers, plausible=0.05)
    keep = plausible_mask([base, expert], 0.05)
    assert torch.equal(filtered[keep], plain[keep]) and bool((filtered[~keep] == float("-inf")).all())
    # where the formula's best token is plausible, greedy decoding is unchanged
    best = plain.argmax(-1, keepdim=True)
    binds = ~keep.gather(-1, best).squeeze(-1)
    assert torch.equal(filtered.argmax(-1)[~binds], plain.argmax(-1)[~binds])


def test_alpha_zero_is_still_the_base_alone_and_raw_logits_equal_log_probs():
    g = torch.Generator().manual_seed(0)
    base, expert, anti = (torch.randn(2, 30, generator=g) for _ in range(3))
    assert torch.equal(proxy_scores(base, [Steer(0.0, expert, anti)], plausible=0.5), base)
    shifted = [torch.log_softmax(t, -1) for t in (base, expert)]
    assert torch.equal(plausible_mask([base, expert], 0.1), plausible_mask(shifted, 0.1))
    assert math.isclose(math.log(0.1), -2.302585092994046)


def test_minus_infinity_is_never_plausible():
    base = torch.tensor([0.0, float("-inf"), -1.0])  # a remote base: -inf outside its top K
    expert = torch.tensor([0.0, -50.0, -1.0])
    assert plausible_mask([base, expert], 0.1).tolist() == [True, False, True]


def test_the_engine_applies_the_filter_through_the_stepper(tiny_models):
    t = tiny_models
    roles = dict(experts=[str(t["expert"])], anti_experts=[str(t["anti"])], alphas=[2.0])
    plain = load_proxy_models(proxy_setup(t["base"], **roles))
    models = load_proxy_models(proxy_setup(t["base"], plausible=0.2, **roles))
    assert models.plausible == 0.2 and plain.plausible == 0.0
    with Stepper(plain) as a, Stepper(models) as b:
        unfiltered = a.prefill(["Who leads the poll?"])
        filtered = b.prefill(["Who leads the poll?"])
        logits = b.role_logits()
    width = filtered.shape[-1]
    keep = plausible_mask([logits["base"][..., :width], logits["expert"][..., :width]], 0.2)
    assert bool((~keep).any()) and bool(keep.any())
    assert torch.equal(filtered[keep], unfiltered[keep])
    assert bool((filtered[~keep] == float("-inf")).all())
    assert models.with_alphas([1.0]).plausible == 0.2 and models.with_base(models.base).plausible == 0.2


def test_the_flag_on_decode_and_its_check(tiny_models, tmp_path):
    import json

    from cli_runner import run_cli

    t = tiny_models
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "p", "prompt": "Who leads the poll?"}) + "\n")
    common = ["decode", "--base", t["base"], "--expert", t["expert"], "--anti-expert", t["anti"], "--alpha", "2"]
    common += ["--prompts", prompts, "--max-new-tokens", "4", "--device", "cpu", "--threads", "1"]
    code, _, err = run_cli(*common, "--output", tmp_path / "a.jsonl", "--plausible", "0.2")
    assert code == 0, err
    code, _, err = run_cli(*common, "--output", tmp_path / "b.jsonl", "--plausible", "2")
    assert code == 2 and "--plausible must be <= 1" in err
