"""Continuous batching at the engine's level: generations that join a running batch between steps and
rows that leave it at once each decode exactly as they would alone (Stepper.join / drop, Decoding)."""

import pytest
import torch
from engine_helpers import random_prompts, setup
from tiny import save_adapter

from proxytool.decoding.generate import Decoding, complete
from proxytool.decoding.sampling import SamplingConfig
from proxytool.decoding.stepper import Stepper
from proxytool.errors import ProxyToolError


@pytest.fixture(scope="module")
def adapter(tiny_models, tmp_path_factory):
    return save_adapter(tmp_path_factory.mktemp("lora") / "adapter", tiny_models["anti"], seed=5)


def staggered(models, prompts, arrivals, budgets, sampling=SamplingConfig(), seeds=None):
    """Drive one running Decoding: prompt i joins before step ``arrivals[i]`` (its own prefill first);
    rows leave as soon as they end. Returns each prompt's tokens and the most rows ever stepped at once."""
    seeds = seeds or list(range(len(prompts)))
    running, order, done, widest, step = None, [], {}, 0, 0
    while len(done) < len(prompts):
        for i in [i for i, t in enumerate(arrivals) if t == step]:
            new = Decoding(models, 1, max_new_tokens=budgets[i], sampling=sampling, row_seeds=[seeds[i]])
            new.start([prompts[i]])
            if running is None:
                running, order = new, [i]
            else:
                running.join(new)
                order.append(i)
        if running is not None:
            if not running.rows.over:
                running.step()
                widest = max(widest, len(order))
            ended = {r for r, row in enumerate(running.rows.rows) if row.done}
            for r in ended:
                done[order[r]] = running.rows.rows[r].token_ids
            if len(ended) == len(order):
                running.close()
                running, order = None, []
            else:
                running.drop(ended)
                order = [o for r, o in enumerate(order) if r not in ended]
        step += 1
    return [done[i] for i in range(len(prompts))], widest


def solo(models, prompts, budgets, sampling=SamplingConfig(), seeds=None):
    seeds = seeds or list(range(len(prompts)))
    return [
        complete(models, [p], max_new_tokens=b, sampling=sampling, row_seeds=[s])[0].token_ids
        for p, b, s in zip(prompts, budgets, seeds)
    ]


PROMPTS = random_prompts(6, seed=21) + ["A", "Who leads the national poll? Trump leads by two points among voters"]
ARRIVALS = [0, 0, 2, 3, 3, 7, 9, 10]
BUDGETS = [12, 5, 9, 14, 1, 8, 6, 10]


@pytest.mark.parametrize("kind", ["pair", "lora", "base-only"])
def test_staggered_joins_and_early_leaves_equal_solo_greedy(tiny_models, adapter, kind):
    if kind == "pair":
        models = setup(tiny_models, experts=[str(tiny_models["expert"])], anti_experts=[str(tiny_models["anti"])])
    elif kind == "lora":
        models = setup(tiny_models, experts=[str(adapter)], alphas=[1.5])
        assert len(models.sources[-1].groups) == 2  # expert and anti-expert: two row groups of one model
    else:
        models = setup(tiny_models)
    got, widest = staggered(models, PROMPTS, ARRIVALS, BUDGETS)
    assert widest >= 4  # rows of different lengths really shared steps
    assert got == solo(models, PROMPTS, BUDGETS)


def test_staggered_seeded_sampling_equals_solo(tiny_models):
    models = setup(tiny_models, experts=[str(tiny_models["expert"])], anti_experts=[str(tiny_models["anti"])])
    sampling = SamplingConfig(temperature=0.9, top_p=0.95, seed=7)
    seeds = [5, 3, 11, 2, 8, 1, 0, 4]
    got, _ = staggered(models, PROMPTS, ARRIVALS, BUDGETS, sampling, seeds)
    assert got == solo(models, PROMPTS, BUDGETS, sampling, seeds)


def test_stepper_join_and_drop_scores_equal_solo(tiny_models):
    """After a join the scores of every row equal its own stepper's; after a drop the state shrinks,
    including columns only padding was left in."""
    models = setup(tiny_models, experts=[str(tiny_models["expert"])], anti_experts=[str(tiny_models["anti"])])
    prompts = ["Hello! How can I help you today? The answer is 42.", "Who", "def add(a, b):"]
    tokens = torch.tensor([[7], [40], [100]])
    alone = []
    for i, p in enumerate(prompts):
        with Stepper(models) as one:
            one.prefill([p])
            alone.append(one.step(tokens[i]))
    joined = Stepper(models)
    joined.prefill(prompts[:1])
    for p in prompts[1:]:
        other = Stepper(models)
        other.prefill([p])
        joined.join(other)
    assert joined.joinable
    torch.testing.assert_close(joined.step(tokens[:, 0]), torch.cat(alone), rtol=1e-4, atol=1e-4)
    base = models.base.source
    assert joined._states[id(base)].mask.shape[0] == 3
    long = joined._states[id(base)].length
    joined.drop({0})  # the long prompt leaves: its padding-only columns go too
    state = joined._states[id(base)]
    assert state.mask.shape[0] == 2 and state.length < long
    assert state.cache.get_seq_length() == state.length
    again = joined.step(torch.tensor([5, 6]))
    for i, p in enumerate(prompts[1:], start=1):
        with Stepper(models) as one:
            one.prefill([p])
            one.step(tokens[i])
            torch.testing.assert_close(again[i - 1 : i], one.step(torch.tensor([5 + i - 1])), rtol=1e-4, atol=1e-4)
    joined.close()


def test_static_cache_and_mismatched_settings_cannot_join(tiny_models):
    static = setup(tiny_models, kv_cache="static")
    a, b = (Decoding(static, 1, max_new_tokens=3) for _ in range(2))
    assert not a.joinable
    a.start(["x"]), b.start(["y"])
    with pytest.raises(ProxyToolError):
        a.join(b)
    models = setup(tiny_models)
    greedy = Decoding(models, 1, max_new_tokens=3)
    sampled = Decoding(models, 1, max_new_tokens=3, sampling=SamplingConfig(temperature=0.5))
    greedy.start(["x"]), sampled.start(["y"])
    with pytest.raises(ProxyToolError):
        greedy.join(sampled)
