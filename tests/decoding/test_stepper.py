"""The stepping API: per-call state over shared loaded models, multi-token extend, truncate, scoring."""

import torch
from engine_helpers import N, random_prompts, setup
from reference import load, reference_scores, tokenizer_of

from proxytool.decoding.formats import TokenPrompt
from proxytool.decoding.generate import complete, generate
from proxytool.decoding.sampling import SamplingConfig
from proxytool.decoding.scoring import continuation_logprobs, prompt_logprobs
from proxytool.decoding.stepper import Stepper


def pair(tiny_models, **kwargs):
    return setup(tiny_models, experts=[str(tiny_models["expert"])], anti_experts=[str(tiny_models["anti"])], **kwargs)


def test_two_interleaved_generations_each_equal_their_solo_run(tiny_models):
    """Two generators over the same loaded models, stepped alternately, with different alphas and sampling."""
    models = pair(tiny_models)
    first, second = random_prompts(3, seed=11), random_prompts(2, seed=12)
    sampled = SamplingConfig(temperature=0.8, top_p=0.9, seed=3)
    solo_a = [c.token_ids for c in complete(models, first, max_new_tokens=N, alphas=[0.5])]
    solo_b = [c.token_ids for c in complete(models, second, max_new_tokens=N, sampling=sampled, alphas=[2.0])]
    a = generate(models, first, max_new_tokens=N, alphas=[0.5])
    b = generate(models, second, max_new_tokens=N, sampling=sampled, alphas=[2.0])
    rows_a = rows_b = None
    while a is not None or b is not None:
        for name in ("a", "b"):
            gen = a if name == "a" else b
            if gen is None:
                continue
            try:
                rows = next(gen)
            except StopIteration:
                if name == "a":
                    a = None
                else:
                    b = None
                continue
            if name == "a":
                rows_a = rows
            else:
                rows_b = rows
    assert [r.token_ids for r in rows_a] == solo_a
    assert [r.token_ids for r in rows_b] == solo_b
    assert models.alphas == (1.0,)  # nothing was written on the loaded models


def test_extend_by_k_equals_k_steps_and_truncate_rewinds(tiny_models):
    models = pair(tiny_models, alphas=[1.5])
    prompts = random_prompts(3, seed=13)
    tokens = torch.randint(5, 300, (3, 4))
    with Stepper(models) as one_by_one:
        one_by_one.prefill(prompts)
        stepped = torch.stack([one_by_one.step(tokens[:, i]) for i in range(4)], dim=1)
    with Stepper(models) as at_once:
        at_once.prefill(prompts)
        extended = at_once.extend(tokens)
        torch.testing.assert_close(extended, stepped, rtol=1e-4, atol=1e-4)
        at_once.truncate(3)  # keep only the first of the four tokens
        again = at_once.extend(tokens[:, 1:])
    torch.testing.assert_close(again, stepped[:, 1:], rtol=1e-4, atol=1e-4)


def test_scoring_matches_full_recomputation(tiny_models):
    """Teacher-forced continuation and prompt log-probs equal the slow reference's proxy distribution."""
    models = pair(tiny_models, alphas=[1.5])
    tok = tokenizer_of(tiny_models["base"])
    base, expert, anti = (load(tiny_models[k]) for k in ("base", "expert", "anti"))
    prompts = random_prompts(3, seed=14)
    continuations = [tok(" the poll", add_special_tokens=False)["input_ids"], [7], [9, 10, 11, 12, 13]]
    got = continuation_logprobs(models, prompts, continuations)
    for prompt, cont, values in zip(prompts, continuations, got):
        head = tok(prompt)["input_ids"]
        ref = torch.log_softmax(reference_scores(base, [(1.5, expert, anti)], head + cont, tok), dim=-1)
        want = [ref[len(head) - 1 + t, token].item() for t, token in enumerate(cont)]
        assert torch.allclose(torch.tensor(values), torch.tensor(want), atol=1e-4)
    ids = [tok(p)["input_ids"] for p in prompts]
    echoed = prompt_logprobs(models, [TokenPrompt(tuple(i)) for i in ids])
    for row, values in zip(ids, echoed):
        ref = torch.log_softmax(reference_scores(base, [(1.5, expert, anti)], row, tok), dim=-1)
        assert values[0] is None and len(values) == len(row)
        want = [ref[t - 1, row[t]].item() for t in range(1, len(row))]
        assert torch.allclose(torch.tensor(values[1:]), torch.tensor(want), atol=1e-4)


def test_token_prompts_decode_like_their_text(tiny_models):
    models = pair(tiny_models)
    tok = tokenizer_of(tiny_models["base"])
    prompts = random_prompts(2, seed=15)
    by_text = complete(models, prompts, max_new_tokens=N)
    by_ids = complete(models, [TokenPrompt(tuple(tok(p)["input_ids"])) for p in prompts], max_new_tokens=N)
    assert [c.token_ids for c in by_ids] == [c.token_ids for c in by_text]
