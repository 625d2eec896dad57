"""logit_bias, presence_penalty and frequency_penalty on the steered scores, against a step-by-step reference."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from proxytool.decoding.formats import TokenPrompt
from proxytool.decoding.generate import complete
from proxytool.decoding.stepper import Stepper

PROMPT = "Who leads the national poll?"
N = 16


def reference(models, prompt_ids, n, bias=None, presence=0.0, frequency=0.0):
    """Greedy, no KV cache: the proxy's scores for the whole sequence so far, changed as OpenAI defines."""
    ids, out = list(prompt_ids), []
    for _ in range(n):
        with Stepper(models) as stepper:
            scores = stepper.prefill([TokenPrompt(tuple(ids))])[0].float().clone()
        for token, value in (bias or {}).items():
            scores[token] += value
        for token in set(out):
            scores[token] -= out.count(token) * frequency + presence
        out.append(int(scores.argmax()))
        ids.append(out[-1])
    return out


def ask(client, **extra):
    reply = client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=N, temperature=0, extra_body={"ignore_eos": True, **extra}
    )
    return reply.choices[0].model_extra["token_ids"]


@pytest.fixture(scope="module")
def prompt_ids(proxy_models):
    return proxy_models.tokenizer(PROMPT)["input_ids"]


@pytest.fixture(scope="module")
def plain(proxy_models, prompt_ids):
    return complete(proxy_models, [TokenPrompt(tuple(prompt_ids))], max_new_tokens=N, ignore_eos=True)[0].token_ids


def test_logit_bias_equals_the_reference(client, proxy_models, prompt_ids, plain):
    bias = {plain[0]: -100.0, plain[1]: 3.5, 7: 2.0}
    got = ask(client, logit_bias={str(t): v for t, v in bias.items()})
    assert got == reference(proxy_models, prompt_ids, N, bias)
    assert got[0] != plain[0]
    assert ask(client, logit_bias={}) == plain == reference(proxy_models, prompt_ids, N)


@pytest.mark.parametrize("presence, frequency", [(1.5, 0.0), (0.0, 2.0), (0.7, 0.9), (-2.0, 0.0)])
def test_penalties_equal_the_reference(client, proxy_models, prompt_ids, plain, presence, frequency):
    got = ask(client, presence_penalty=presence, frequency_penalty=frequency)
    assert got == reference(proxy_models, prompt_ids, N, presence=presence, frequency=frequency)


def test_penalties_change_the_run(client, proxy_models, prompt_ids, plain):
    """Not vacuous: negative penalties favour tokens already generated and change the greedy run here."""
    got = ask(client, presence_penalty=-2.0, frequency_penalty=-2.0)
    assert got != plain and len(set(got)) < len(set(plain))
    assert got == reference(proxy_models, prompt_ids, N, presence=-2.0, frequency=-2.0)


def test_bias_forces_a_token_when_sampling_and_on_chat(client):
    reply = client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=5, temperature=1.0, seed=3, logit_bias={"42": 100}
    )
    assert reply.choices[0].model_extra["token_ids"] == [42] * 5
    chat = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0, logit_bias={"42": 100}
    )
    assert chat.choices[0].model_extra["token_ids"] == [42] * 4


def test_logprobs_stay_those_of_the_proxy(client, proxy_models, prompt_ids, plain):
    """The returned log-probabilities are the proxy's, before bias and penalties (vLLM's raw logprobs)."""
    reply = client.completions.create(
        model="tiny", prompt=PROMPT, max_tokens=1, temperature=0, logprobs=1, logit_bias={str(plain[0]): -100}
    )
    with Stepper(proxy_models) as stepper:
        logp = torch.log_softmax(stepper.prefill([TokenPrompt(tuple(prompt_ids))])[0].float(), -1)
    chosen = reply.choices[0].model_extra["token_ids"][0]
    assert chosen != plain[0]
    assert reply.choices[0].logprobs.token_logprobs[0] == pytest.approx(logp[chosen].item(), abs=1e-4)


def test_rows_with_different_changes_batched_together_equal_their_solo_runs(client):
    variants = [{}, {"logit_bias": {"42": 5.0}}, {"frequency_penalty": 1.0}, {"presence_penalty": 2.0}] * 2
    solo = [ask(client, **v) for v in variants]
    with ThreadPoolExecutor(len(variants)) as pool:
        together = list(pool.map(lambda v: ask(client, **v), variants))
    assert together == solo


@pytest.mark.parametrize(
    "field, value",
    [
        ("logit_bias", {"abc": 1}),
        ("logit_bias", {"5": 101}),
        ("logit_bias", {"-1": 1}),
        ("logit_bias", {"999999999": 1}),
        ("logit_bias", [1, 2]),
        ("presence_penalty", 2.5),
        ("frequency_penalty", -3),
    ],
)
@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_bad_values_get_400_naming_the_field(server, route, field, value):
    body = {"prompt": PROMPT} if "chat" not in route else {"messages": [{"role": "user", "content": "Hi"}]}
    reply = httpx.post(server.url + route, json={**body, "max_tokens": 2, field: value}, timeout=30)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"].startswith(field)


def test_null_values_are_accepted(server):
    body = {"prompt": PROMPT, "max_tokens": 2, "logit_bias": None, "presence_penalty": None, "frequency_penalty": None}
    assert httpx.post(server.url + "/v1/completions", json=body, timeout=30).status_code == 200
