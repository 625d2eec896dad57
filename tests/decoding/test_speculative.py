"""Speculative proxy decoding: greedy output equals plain decoding; sampling draws the proxy distribution."""

import dataclasses
import math
from collections import Counter

import pytest
import torch
from engine_helpers import random_prompts, setup
from tiny import save_adapter

from proxytool.decoding.generate import complete, generate
from proxytool.decoding.sampling import SamplingConfig
from proxytool.decoding.speculative import _verify_sampled
from proxytool.decoding.stepper import Stepper
from proxytool.errors import ProxyToolError


@pytest.fixture(scope="module")
def adapter(tiny_models, tmp_path_factory):
    return save_adapter(tmp_path_factory.mktemp("lora") / "adapter", tiny_models["anti"], seed=5)


def _pairs(tiny_models, adapter):
    """Three wirings: separate models; anti-expert == base (one source, high acceptance); a shared LoRA pair."""
    expert, anti, base = (str(tiny_models[k]) for k in ("expert", "anti", "base"))
    return {
        "separate": lambda a: setup(tiny_models, experts=[expert], anti_experts=[anti], alphas=[a]),
        "anti-is-base": lambda a: setup(tiny_models, experts=[expert], anti_experts=[base], alphas=[a]),
        "shared-lora": lambda a: setup(tiny_models, experts=[str(adapter)], alphas=[a]),
    }


def _by_batches(models, prompts, batch, **kwargs):
    out = []
    for start in range(0, len(prompts), batch):
        out += complete(models, prompts[start : start + batch], **kwargs)
    return out


@pytest.mark.parametrize("wiring", ["separate", "anti-is-base", "shared-lora"])
def test_greedy_speculative_is_token_identical_to_plain(tiny_models, adapter, wiring):
    prompts = random_prompts(6, seed=21)
    accepted = 0
    for alpha in (0.0, 0.8, 2.0):
        models = _pairs(tiny_models, adapter)[wiring](alpha)
        plain = complete(models, prompts, max_new_tokens=10)
        for k, batch in ((1, 6), (2, 1), (4, 4)):
            fast = _by_batches(models, prompts, batch, max_new_tokens=10, speculative=k)
            assert fast == plain, (alpha, k, batch)
        stats = {}
        for _ in generate(models, prompts, speculative=3, max_new_tokens=10, stats=stats):
            pass
        accepted += stats["accepted"]
    if wiring == "anti-is-base":  # unrelated random models never agree; here p leans on the expert
        assert accepted > 0  # the accepting path ran, not only corrections


def test_stop_strings_eos_and_lengths_behave_as_plain(tiny_models, adapter):
    models = _pairs(tiny_models, adapter)["anti-is-base"](0.8)
    prompts = random_prompts(4, seed=22)
    free = complete(models, prompts, max_new_tokens=12)
    stop = free[1].text[3:6]  # a stop string in the middle of one row's text
    eos = dataclasses.replace(models, eos_ids=frozenset({free[2].token_ids[4]}))  # one row ends on EOS
    for k in (1, 2, 4):
        for n in (0, 1, 2, 5, 12):
            assert complete(models, prompts, max_new_tokens=n, speculative=k) == complete(
                models, prompts, max_new_tokens=n
            )
        cut = complete(models, prompts, max_new_tokens=12, stop=[stop], speculative=k)
        assert cut == complete(models, prompts, max_new_tokens=12, stop=[stop])
        assert cut[1].finish_reason == "stop"
        ended = complete(eos, prompts, max_new_tokens=12, speculative=k)
        assert ended == complete(eos, prompts, max_new_tokens=12)
        assert ended[2].finish_reason == "stop" and len(ended[2].token_ids) <= 5
        assert complete(eos, prompts, max_new_tokens=12, speculative=k, ignore_eos=True) == complete(
            eos, prompts, max_new_tokens=12, ignore_eos=True
        )


def test_speculative_needs_a_pair_and_a_known_drafter(tiny_models, adapter):
    alone = setup(tiny_models)
    with pytest.raises(ProxyToolError, match="--speculative needs an expert"):
        complete(alone, ["hi"], max_new_tokens=3, speculative=2)
    models = _pairs(tiny_models, adapter)["separate"](1.0)
    with pytest.raises(ProxyToolError, match="--draft"):
        complete(models, ["hi"], max_new_tokens=3, speculative=2, draft="oracle")
    with pytest.raises(ProxyToolError, match="observe"):
        complete(models, ["hi"], max_new_tokens=3, speculative=2, observe=lambda *a: None)


def test_small_proxy_drafter_is_exact_too(tiny_models, adapter):
    models = _pairs(tiny_models, adapter)["shared-lora"](1.5)
    prompts = random_prompts(4, seed=23)
    plain = complete(models, prompts, max_new_tokens=10)
    assert complete(models, prompts, max_new_tokens=10, speculative=3, draft="small-proxy") == plain


def _chi_square(counts: Counter, probs: dict, n: int) -> tuple[float, int]:
    """Pearson's statistic over cells with expected count >= 5 (the rest pooled into one cell)."""
    stat, pooled_obs, pooled_exp, cells = 0.0, 0, 0.0, 0
    for cell, p in probs.items():
        if n * p >= 5:
            stat += (counts[cell] - n * p) ** 2 / (n * p)
            cells += 1
        else:
            pooled_obs, pooled_exp = pooled_obs + counts[cell], pooled_exp + n * p
    unexpected = sum(c for cell, c in counts.items() if cell not in probs)
    pooled_obs += unexpected
    if pooled_exp > 0:
        stat += (pooled_obs - pooled_exp) ** 2 / pooled_exp
        cells += 1
    elif unexpected:
        stat = math.inf
    return stat, cells - 1


def _chi_square_limit(df: int) -> float:
    """About the 99.9% quantile of chi-square(df) (Wilson-Hilferty)."""
    z = 3.09
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def _exact_joint(models, prompt, sampling, length=3):
    """The proxy distribution of the first ``length`` tokens after the same warpers, by enumeration."""
    warpers = sampling.warpers()

    def probs(scores):
        return torch.softmax(warpers(None, scores.reshape(-1, scores.shape[-1]).float()), -1)

    joint = {}
    with Stepper(models) as stepper:
        first = probs(stepper.prefill([prompt]))[0]
    frontier = [((int(t),), float(first[t])) for t in first.nonzero().flatten()]
    for _ in range(length - 1):
        grown = []
        for prefix, p in frontier:
            with Stepper(models) as stepper:
                stepper.prefill([prompt])
                nxt = probs(stepper.extend(torch.tensor([prefix]))[:, -1])[0]
            grown += [(prefix + (int(t),), p * float(nxt[t])) for t in nxt.nonzero().flatten()]
        frontier = grown
    joint.update(frontier)
    return joint


def test_speculative_sampling_draws_the_proxy_distribution(tiny_models):
    """First three tokens (the 2nd and 3rd from the accept / reject rule) against the exact joint."""
    models = setup(tiny_models, experts=[str(tiny_models["expert"])], anti_experts=[str(tiny_models["base"])])
    models = models.with_alphas([0.8])
    sampling = SamplingConfig(temperature=1.3, top_k=3, seed=7)
    prompt = "Who leads the poll?"
    exact = _exact_joint(models, prompt, sampling)
    counts, stats_total, n, batch = Counter(), Counter(), 0, 8
    for call in range(300):
        stats = {}
        seeds = list(range(call * batch, (call + 1) * batch))
        for rows in generate(  # noqa: B007 (the last yield is the result)
            models,
            [prompt] * batch,
            speculative=2,
            max_new_tokens=3,
            sampling=sampling,
            row_seeds=seeds,
            stats=stats,
            ignore_eos=True,
        ):
            pass
        counts.update(tuple(r.token_ids) for r in rows)
        stats_total.update(stats)
        n += batch
    stat, df = _chi_square(counts, exact, n)
    assert stat < _chi_square_limit(df), (stat, df)
    assert 0 < stats_total["accepted"] < stats_total["drafted"]  # both accept and reject ran
    # the test can tell: the expert's own first-token distribution is far from the proxy's
    expert_alone = _exact_joint(models.with_base(models.pairs[0].expert), prompt, sampling, length=1)
    first = Counter()
    for cells, p in exact.items():
        first[cells[:1]] += p
    assert sum(abs(first[c] - expert_alone.get(c, 0.0)) for c in set(first) | set(expert_alone)) / 2 > 0.2


def test_accept_reject_rule_is_exact_at_every_position():
    """The rule alone, on fixed distributions: the token at position j (when reached) follows p_j."""
    torch.manual_seed(0)
    vocab, k, trials = 5, 3, 6000
    p = torch.softmax(torch.randn(1, k + 1, vocab) * 1.5, -1)
    q = [torch.softmax(torch.randn(1, vocab) * 1.5, -1) for _ in range(k)]
    q[1][0, 2] = 0.0  # a token p allows but q never drafts
    q[1] = q[1] / q[1].sum()
    generator = torch.Generator().manual_seed(1)
    seen = [Counter() for _ in range(k + 1)]
    for _ in range(trials):
        proposed = torch.stack([torch.multinomial(q[j][0], 1, generator=generator) for j in range(k)], dim=1)
        tokens, kept = _verify_sampled(p, proposed, q, [generator], torch.tensor([True]))
        for j in range(kept):
            seen[j][int(tokens[0, j])] += 1
    for j in range(k + 1):
        total = sum(seen[j].values())
        assert total > 200
        stat, df = _chi_square(seen[j], {(t): float(p[0, j, t]) for t in range(vocab)}, total)
        assert stat < _chi_square_limit(df), (j, stat, df)


@pytest.mark.parametrize("wiring", ["separate", "anti-is-base", "shared-lora"])
def test_auto_speculation_measures_both_ways_and_keeps_the_tokens(tiny_models, adapter, wiring):
    models = _pairs(tiny_models, adapter)[wiring](0.8)
    prompts = random_prompts(4, seed=23)
    plain = complete(models, prompts, max_new_tokens=24)
    for batch in (1, 4):
        assert _by_batches(models, prompts, batch, max_new_tokens=24, speculative="auto") == plain, batch
    few = prompts[:3]  # a batch size not seen yet, whose first rounds all have one token left (plain, timed so)
    for n in (1, 2, 2, 3):
        assert complete(models, few, max_new_tokens=n, speculative="auto") == complete(models, few, max_new_tokens=n)
    timed = models.speculation.summary()
    assert set(timed["1"]) == set(timed["4"]) == {"plain", "speculative"}  # both ways ran, timed per batch size


def test_auto_speculation_decodes_with_the_faster_way(tiny_models, adapter, monkeypatch):
    """Made slow on purpose, each way loses the choice; the tokens never change."""
    import time

    from proxytool.decoding import generate as loop

    prompts = random_prompts(2, seed=24)
    for slow, fast in (("speculative", "plain"), ("plain", "speculative")):
        models = _pairs(tiny_models, adapter)["anti-is-base"](0.8)
        plain = complete(models, prompts, max_new_tokens=60)
        cls = loop.SpeculativeRounds if slow == "speculative" else loop.StepRounds
        real_next, real_record, rounds = cls.next, models.speculation.record, []

        def slowed(self, *args, _real=real_next):
            time.sleep(0.05)
            return _real(self, *args)

        def record(batch, way, seconds, tokens, _real=real_record, rounds=rounds):
            rounds.append(way)
            _real(batch, way, seconds, tokens)

        with monkeypatch.context() as patch:
            patch.setattr(cls, "next", slowed)
            patch.setattr(models.speculation, "record", record)
            assert complete(models, prompts, max_new_tokens=60, speculative="auto") == plain
        timed = models.speculation.summary()["2"]
        assert timed[fast] < timed[slow], timed
        after_trials = rounds[8:]
        assert after_trials.count(fast) > 2 * after_trials.count(slow), rounds


def test_auto_speculation_steps_plainly_where_it_could_change_tokens(tiny_models, adapter):
    models = _pairs(tiny_models, adapter)["shared-lora"](0.8)
    prompts = random_prompts(3, seed=25)
    sampled = SamplingConfig(temperature=0.9, seed=3)
    assert complete(models, prompts, max_new_tokens=12, sampling=sampled, speculative="auto") == complete(
        models, prompts, max_new_tokens=12, sampling=sampled
    )  # same random stream: sampling never speculates under auto
    seen = []
    complete(models, prompts, max_new_tokens=6, speculative="auto", observe=lambda *a: seen.append(a))
    assert len(seen) == 6  # every token observed, one by one (no rounds of several tokens)
    assert models.speculation.summary() == {}


def test_way_timings_choose_the_lower_seconds_per_token_and_keep_exploring():
    from proxytool.decoding.way_timings import WayTimings

    timings, ways = WayTimings(), []
    cost = {"plain": (1.0, 1), "speculative": (1.2, 3)}  # speculative: 0.4 s per token
    for _ in range(40):
        way = timings.way(8)
        ways.append(way)
        timings.record(8, way, *cost[way])
    assert ways[:8] == ["plain", "plain", "speculative", "speculative", "plain", "speculative", "plain", "speculative"]
    later = ways[8:]
    assert later.count("plain") == sum(1 for i in range(9, 41) if i % WayTimings.EXPLORE == 0)
    assert timings.summary()["8"] == {"plain": 1.0, "speculative": pytest.approx(0.4)}
    assert timings.way(1) == "plain"  # another batch size measures on its own
