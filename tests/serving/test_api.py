"""The OpenAI-compatible API against a live server on tiny models, through the official openai client."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from proxytool.decoding.formats import TokenPrompt
from proxytool.decoding.generate import complete
from proxytool.decoding.sampling import SamplingConfig
from proxytool.decoding.scoring import continuation_logprobs, prompt_logprobs

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who leads the poll?"}]
PROMPTS = ["Who leads the poll?", "A sample of adults", "def add(a, b):", "Hello! How can", "Janet has 3", "The answer"]


def test_health_and_models(server, client):
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    assert [m.id for m in client.models.list()] == ["tiny"]


def test_chat_greedy_equals_complete(client, proxy_models):
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, temperature=0)
    expected = complete(proxy_models, [MESSAGES], max_new_tokens=8)[0]
    choice = reply.choices[0]
    assert choice.message.content == expected.text
    assert choice.finish_reason == expected.finish_reason
    assert reply.usage.completion_tokens == len(expected.token_ids)
    assert reply.usage.prompt_tokens > 0


def test_chat_streaming_equals_non_streaming(client):
    kwargs = dict(model="tiny", messages=MESSAGES, max_tokens=10, temperature=0)
    whole = client.chat.completions.create(**kwargs).choices[0]
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.finish_reason
    assert chunks[-1].usage.completion_tokens == 10 or whole.finish_reason == "stop"


def test_chat_logprobs_and_trace(server, client, proxy_models):
    reply = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        extra_body={"proxy_trace": True},
    )
    choice = reply.choices[0]
    content = choice.logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.logprob - 1e-6  # greedy picks the top token
    ids = choice.model_extra["token_ids"]
    expected = continuation_logprobs(proxy_models, [MESSAGES], [ids])[0]
    assert [e.logprob for e in content] == pytest.approx(expected, abs=1e-4)
    trace = choice.model_extra["proxy_trace"]
    assert [t["token_id"] for t in trace] == ids and all(t["base_logprob"] <= 0 for t in trace)


def test_completions_echo_logprobs_equal_scoring(client, proxy_models):
    tokenizer = proxy_models.tokenizer
    prompt = "Who leads the national poll?"
    ids = tokenizer(prompt)["input_ids"]
    reply = client.completions.create(model="tiny", prompt=prompt, max_tokens=5, temperature=0, echo=True, logprobs=3)
    choice = reply.choices[0]
    lp = choice.logprobs
    generated = choice.model_extra["token_ids"]
    assert choice.text.startswith(prompt)
    assert len(lp.tokens) == len(ids) + len(generated) == len(lp.text_offset)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    expected_prompt = prompt_logprobs(proxy_models, [TokenPrompt(tuple(ids))])[0]
    assert lp.token_logprobs[1 : len(ids)] == pytest.approx(expected_prompt[1:], abs=1e-4)
    expected_gen = continuation_logprobs(proxy_models, [TokenPrompt(tuple(ids))], [generated])[0]
    assert lp.token_logprobs[len(ids) :] == pytest.approx(expected_gen, abs=1e-4)
    assert generated == complete(proxy_models, [TokenPrompt(tuple(ids))], max_new_tokens=5)[0].token_ids


def test_completions_token_ids_max_tokens_zero(client, proxy_models):
    """lm-eval's log-likelihood request: token-id prompt, echo, logprobs, max_tokens 0; keys as token ids."""
    ids = proxy_models.tokenizer("A sample of 1,200 adults")["input_ids"]
    reply = client.completions.create(
        model="tiny", prompt=ids, max_tokens=0, echo=True, logprobs=2, extra_body={"return_tokens_as_token_ids": True}
    )
    lp = reply.choices[0].logprobs
    assert lp.tokens == [f"token_id:{t}" for t in ids]
    assert all(all(k.startswith("token_id:") for k in top) for top in lp.top_logprobs[1:])
    expected = prompt_logprobs(proxy_models, [TokenPrompt(tuple(ids))])[0]
    assert lp.token_logprobs[1:] == pytest.approx(expected[1:], abs=1e-4)
    for t, top in zip(ids[1:], lp.top_logprobs[1:]):
        assert f"token_id:{t}" in top
    assert reply.usage.completion_tokens == 0 and reply.usage.prompt_tokens == len(ids)


def test_completions_greedy_equals_complete_with_stop_and_batch(client, proxy_models):
    reply = client.completions.create(model="tiny", prompt=PROMPTS[:3], max_tokens=8, temperature=0)
    expected = complete(proxy_models, PROMPTS[:3], max_new_tokens=8)  # raw formats: the same ids
    assert [c.text for c in sorted(reply.choices, key=lambda c: c.index)] == [e.text for e in expected]
    stop = expected[0].text[2:4]
    if stop:
        cut = client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=8, temperature=0, stop=[stop])
        assert cut.choices[0].text == expected[0].text[: expected[0].text.find(stop)]
        assert cut.choices[0].finish_reason == "stop"


def test_alpha_zero_is_base_alone(client, proxy_models):
    base_alone = complete(proxy_models.with_base(proxy_models.base), [PROMPTS[0]], max_new_tokens=8)[0].text
    proxy = complete(proxy_models, [PROMPTS[0]], max_new_tokens=8)[0].text
    kwargs = dict(model="tiny", prompt=PROMPTS[0], max_tokens=8, temperature=0)
    assert client.completions.create(**kwargs, extra_body={"alpha": 0}).choices[0].text == base_alone
    assert client.completions.create(**kwargs, extra_body={"experts": []}).choices[0].text == base_alone
    assert client.completions.create(**kwargs, extra_body={"alpha": [1.0]}).choices[0].text == proxy
    with pytest.raises(openai.BadRequestError):
        client.completions.create(**kwargs, extra_body={"alpha": [1.0, 2.0]})
    with pytest.raises(openai.BadRequestError):
        client.completions.create(**kwargs, extra_body={"experts": ["nope"]})


def test_concurrent_requests_equal_sequential(client):
    """Greedy and seeded sampling: N at once (batched / interleaved) == one at a time."""

    def ask(i):
        sampling = {"temperature": 0} if i % 2 == 0 else {"temperature": 0.9, "top_p": 0.9, "seed": i}
        reply = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": PROMPTS[i]}], max_tokens=8, **sampling
        )
        return reply.choices[0].message.content

    sequential = [ask(i) for i in range(len(PROMPTS))]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        concurrent = list(pool.map(ask, range(len(PROMPTS))))
    assert concurrent == sequential


def test_seeded_sampling_equals_decode_seed(client, proxy_models):
    reply = client.completions.create(model="tiny", prompt=PROMPTS[1], max_tokens=8, temperature=0.8, seed=3)
    expected = complete(proxy_models, [PROMPTS[1]], max_new_tokens=8, sampling=SamplingConfig(temperature=0.8, seed=3))[
        0
    ].text
    assert reply.choices[0].text == expected


def test_disconnect_stops_generation(server):
    before = httpx.get(server.url + "/health").json()
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 200,
        "stream": True,
        "ignore_eos": True,
        "temperature": 0,
    }
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        got = [next(lines) for _ in range(6)]
    assert any(line.startswith("data: {") for line in got)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        after = httpx.get(server.url + "/health").json()
        if after["active_rows"] == 0 and after["cancelled"] > before["cancelled"]:
            break
        time.sleep(0.05)
    assert after["active_rows"] == 0 and after["cancelled"] == before["cancelled"] + 1
    assert after["tokens_generated"] - before["tokens_generated"] < 200


def test_bad_requests_get_4xx_in_openai_shape(server, client):
    url = server.url + "/v1/chat/completions"
    bad_json = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and set(bad_json.json()["error"]) == {"message", "type", "param", "code"}
    wrong_field = httpx.post(url, json={"model": "tiny", "messages": [], "max_tokens": 2})
    assert wrong_field.status_code == 400 and wrong_field.json()["error"]["param"] == "messages"
    bad_value = httpx.post(url, json={"model": "tiny", "messages": MESSAGES, "temperature": -1})
    assert bad_value.status_code == 400
    too_long = httpx.post(url, json={"model": "tiny", "messages": MESSAGES, "max_tokens": 10_000})
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "max_tokens"
    bad_ids = httpx.post(server.url + "/v1/completions", json={"model": "tiny", "prompt": [1, 10**9]})
    assert bad_ids.status_code == 400
    huge = httpx.post(url, content=b'{"model": "tiny", "x": "' + b"a" * (5 * 1024 * 1024) + b'"}')
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "body_too_large"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=MESSAGES, max_tokens=2)
    assert client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2, temperature=0).choices


def test_api_key(proxy_models):
    from openai import OpenAI

    from proxytool.serving.app import ServerConfig
    from proxytool.serving.server import BackgroundServer

    with BackgroundServer(proxy_models, ServerConfig(model_name="tiny", api_key="sekret")) as running:
        wrong = OpenAI(base_url=running.url + "/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        right = OpenAI(base_url=running.url + "/v1", api_key="sekret", max_retries=0)
        assert right.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2).choices
        assert httpx.get(running.url + "/health").status_code == 200  # health needs no key


def test_queue_full_answers_429(proxy_models):
    from proxytool.serving.app import ServerConfig
    from proxytool.serving.server import BackgroundServer

    config = ServerConfig(model_name="tiny", max_batch=1, max_queue=1)
    body = {"model": "tiny", "prompt": "Hello", "max_tokens": 4}
    with BackgroundServer(proxy_models, config) as running:
        url = running.url + "/v1/completions"
        release = threading.Event()
        running.scheduler.call(lambda: release.wait(30))  # hold the worker: requests stay queued
        with ThreadPoolExecutor(2) as pool:
            admitted = [pool.submit(httpx.post, url, json=body, timeout=60) for _ in range(2)]  # 1 running + 1 queued
            deadline = time.monotonic() + 10
            while running.scheduler.stats.waiting < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            third = httpx.post(url, json=body)
            release.set()
            assert third.status_code == 429 and third.json()["error"]["type"] == "rate_limit_error"
            assert [f.result().status_code for f in admitted] == [200, 200]
        assert httpx.post(url, json=body).status_code == 200


def test_sse_wire_format(server):
    body = {"model": "tiny", "prompt": "Hello", "max_tokens": 3, "stream": True, "temperature": 0, "logprobs": 1}
    with httpx.stream("POST", server.url + "/v1/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[len("data: ") :]) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_n_choices_and_experts_by_name(client, proxy_models):
    """n seeded choices equal decoding the prompt n times with row seeds S·1000003 + i."""
    reply = client.completions.create(
        model="tiny", prompt=PROMPTS[2], max_tokens=6, temperature=1.0, seed=5, n=2,
        extra_body={"experts": ["tiny-expert"]},
    )  # fmt: skip
    texts = [c.text for c in sorted(reply.choices, key=lambda c: c.index)]
    expected = complete(
        proxy_models, [PROMPTS[2]] * 2, max_new_tokens=6, sampling=SamplingConfig(temperature=1.0, seed=5)
    )
    assert texts == [e.text for e in expected]
    assert reply.usage.completion_tokens == sum(len(e.token_ids) for e in expected)


def test_running_rows_do_not_fill_the_queue_and_an_impossible_request_gets_400(proxy_models):
    """--max-queue bounds waiting rows only: with 2 rows running (--max-batch 2) and an empty queue a
    third request is queued (/health shows it waiting), a fourth gets 429, and more rows than the server
    ever holds get 400 (a 429 would be retried forever)."""
    from proxytool.serving.app import ServerConfig
    from proxytool.serving.server import BackgroundServer

    body = {"model": "tiny", "prompt": "Hello", "max_tokens": 200, "ignore_eos": True, "temperature": 0}
    with BackgroundServer(proxy_models, ServerConfig(model_name="tiny", max_batch=2, max_queue=1)) as running:
        url, stats = running.url + "/v1/completions", running.scheduler.stats
        too_many = httpx.post(url, json={**body, "n": 4})
        assert too_many.status_code == 400 and "--max-batch 2 + --max-queue 1" in too_many.json()["error"]["message"]
        release = threading.Event()
        with ThreadPoolExecutor(3) as pool:
            first = [pool.submit(httpx.post, url, json={**body, "prompt": p}, timeout=60) for p in ("A", "B")]
            while stats.active_rows < 2:
                time.sleep(0.005)
            running.scheduler.call(lambda: release.wait(30))  # the two rows stay running, nothing else starts
            third = pool.submit(httpx.post, url, json=body, timeout=60)
            while stats.waiting < 1 and not third.done():
                time.sleep(0.01)
            health = httpx.get(running.url + "/health").json()
            fourth = httpx.post(url, json=body)
            release.set()
            assert health["waiting"] == 1 and health["active_rows"] == 2, health
            assert fourth.status_code == 429
            assert [f.result().status_code for f in (*first, third)] == [200, 200, 200]
