"""lm-eval's log-likelihood request (echo + logprobs + max_tokens 1) is scored from one prefill, and
answers exactly what the general path (a prefill to score the prompt, another to generate) answers."""

import httpx
import pytest

from proxytool.decoding.stepper import Stepper

PROMPTS = ["Who leads the national poll?", "A sample of adults", "def add(a, b):"]


@pytest.fixture
def prefills(monkeypatch):
    calls = []
    original = Stepper.prefill

    def counting(self, prompts, all_positions=False):
        calls.append(all_positions)
        return original(self, prompts, all_positions)

    monkeypatch.setattr(Stepper, "prefill", counting)
    return calls


def both_paths(server, body, prefills):
    """The reply of the one-prefill path and of the general one (proxy_trace forces it), prefills counted."""
    prefills.clear()
    one = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
    assert one.status_code == 200, one.text
    assert prefills == [True]
    prefills.clear()
    two = httpx.post(server.url + "/v1/completions", json={**body, "proxy_trace": True}, timeout=60)
    assert two.status_code == 200, two.text
    assert prefills[0] is True and len(prefills) >= 2  # 2, or more when the rows exceed --max-batch
    return one.json(), two.json()


def assert_same(one, two):
    assert len(one["choices"]) == len(two["choices"])
    for a, b in zip(one["choices"], two["choices"]):
        assert a["token_ids"] == b["token_ids"]
        assert (a["text"], a["finish_reason"]) == (b["text"], b["finish_reason"])
        la, lb = a["logprobs"], b["logprobs"]
        assert la["tokens"] == lb["tokens"] and la["text_offset"] == lb["text_offset"]
        assert la["token_logprobs"][0] is None and lb["token_logprobs"][0] is None
        assert la["token_logprobs"][1:] == pytest.approx(lb["token_logprobs"][1:], abs=1e-5)
        for ta, tb in zip(la["top_logprobs"][1:], lb["top_logprobs"][1:]):
            assert list(ta) == list(tb) and list(ta.values()) == pytest.approx(list(tb.values()), abs=1e-5)
    assert one["usage"] == two["usage"]


def test_lm_eval_request_is_one_prefill_and_equals_two(server, proxy_models, prefills):
    """What lm-eval 0.4.13 sends: token-id prompts, echo, logprobs 1, max_tokens 1, temperature 0, seed."""
    ids = [proxy_models.tokenizer(p)["input_ids"] for p in PROMPTS]
    body = {"prompt": ids, "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0, "seed": 1234}
    one, two = both_paths(server, body, prefills)
    assert_same(one, two)
    assert [len(c["logprobs"]["tokens"]) for c in one["choices"]] == [len(i) + 1 for i in ids]


@pytest.mark.parametrize(
    "extra",
    [
        {"temperature": 0.9, "seed": 7, "n": 3},
        {"temperature": 0.7, "top_k": 5, "top_p": 0.9, "seed": 3, "logprobs": 5},
        {"logit_bias": {"42": 100}},
        {"return_tokens_as_token_ids": True, "logprobs": 4, "logprob_token_ids": [5, 9]},
        {"ignore_eos": True, "alpha": 0.5},
    ],
)
def test_one_prefill_equals_two_with_other_settings(server, prefills, extra):
    body = {"prompt": PROMPTS, "echo": True, "logprobs": 2, "max_tokens": 1, "temperature": 0, **extra}
    one, two = both_paths(server, body, prefills)
    assert_same(one, two)
    if "logit_bias" in extra:
        assert all(c["token_ids"] == [42] for c in one["choices"])


def test_one_prefill_eos_and_stop_end_the_row_as_generation_does(server, proxy_models, prefills):
    eos = min(proxy_models.eos_ids)
    body = {"prompt": PROMPTS[:1], "echo": True, "logprobs": 1, "max_tokens": 1, "logit_bias": {str(eos): 100}}
    one, two = both_paths(server, body, prefills)
    assert_same(one, two)
    assert one["choices"][0]["finish_reason"] == "stop" and one["choices"][0]["token_ids"] == [eos]
    text = proxy_models.tokenizer.decode([42])
    body = {"prompt": PROMPTS[:1], "echo": True, "logprobs": 1, "max_tokens": 1, "logit_bias": {"42": 100}}
    one, two = both_paths(server, {**body, "stop": [text[-1:]]}, prefills)
    assert_same(one, two)
    assert one["choices"][0]["finish_reason"] == "stop"


def test_a_prompt_of_the_whole_context_is_scored(server, proxy_models):
    """One prefill feeds the prompt only, so a prompt as long as the context fits with max_tokens 1 (what
    lm-eval sends with max_length = context + 1); one token more is refused, and so is generating after it."""
    from proxytool.decoding.formats import TokenPrompt
    from proxytool.decoding.scoring import prompt_logprobs

    limit = proxy_models.base.source.max_length
    ids = (proxy_models.tokenizer(" ".join(PROMPTS))["input_ids"] * limit)[:limit]
    body = {"prompt": ids, "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0}
    reply = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    got = reply.json()["choices"][0]["logprobs"]["token_logprobs"]
    assert len(got) == limit + 1
    assert got[1:limit] == pytest.approx(prompt_logprobs(proxy_models, [TokenPrompt(tuple(ids))])[0][1:], abs=1e-4)
    for refused in ({**body, "prompt": ids + ids[:1]}, {**body, "max_tokens": 2}, {**body, "echo": False}):
        reply = httpx.post(server.url + "/v1/completions", json=refused, timeout=60)
        assert reply.status_code == 400 and reply.json()["error"]["param"] == "max_tokens"
