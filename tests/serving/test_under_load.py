"""Serving under load keeps its promises, with several requests in flight at once (continuous batching),
through the real server and real clients (openai, httpx):

- /health counts the rows in flight while they run, returns to 0 after, and its counters add up;
- bad requests sent while others run get a one-line 400 and the running answers are unchanged;
- a request over any model's context is refused at admission, not failed mid-batch with the others;
- a request that fails inside the worker fails alone: the rows it ran with answer as they do alone.
"""

import threading
import time

import httpx
import openai
import pytest

from proxytool.decoding.formats import TokenPrompt
from proxytool.decoding.generate import complete

PROMPTS = ["Who leads the poll?", "def add(a, b):", "A sample of adults", "Hello! How can"]


def health(server) -> dict:
    return httpx.get(server.url + "/health", timeout=10).json()


def wait_for(predicate, timeout: float = 30.0):
    """Poll until ``predicate()`` returns something true (and return it); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError("timed out")


def solo(models, prompt, max_tokens) -> str:
    """The greedy text of ``prompt`` decoded alone (what the server answers for it in any company)."""
    return complete(models, [prompt], max_new_tokens=max_tokens, ignore_eos=True)[0].text


class Streams:
    """Greedy completion streams (``ignore_eos``: each runs exactly ``max_tokens`` tokens) in threads."""

    def __init__(self, client, prompts, max_tokens):
        self.texts, self.usage, self.errors = {}, {}, {}
        self.ended = [threading.Event() for _ in prompts]
        self.threads = [
            threading.Thread(target=self._run, args=(client, i, p, max_tokens)) for i, p in enumerate(prompts)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, client, i, prompt, max_tokens):
        try:
            stream = client.completions.create(
                model="tiny", prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True,
                stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
            )  # fmt: skip
            pieces = []
            for chunk in stream:
                if chunk.choices:
                    pieces.append(chunk.choices[0].text)
                if chunk.usage is not None:
                    self.usage[i] = chunk.usage.completion_tokens
            self.texts[i] = "".join(pieces)
        except Exception as err:  # noqa: BLE001 (reported by the test's assertions)
            self.errors[i] = err
        finally:
            self.ended[i].set()

    def join(self):
        for thread in self.threads:
            thread.join(timeout=120)
        return [self.texts.get(i, self.errors.get(i)) for i in range(len(self.threads))]


def hold_worker(server):
    """Park the worker thread between two steps (nothing moves); returns the release event."""
    entered, release = threading.Event(), threading.Event()
    server.scheduler.call(lambda: (entered.set(), release.wait(60)))
    assert entered.wait(30)
    return release


def test_health_counts_the_rows_in_flight_and_its_counters_add_up(server, client, proxy_models):
    """4 streams run in one batch: while the worker is held between two steps /health shows 4 active rows,
    4 in the batch's forwards and none waiting; a fifth request being prepared shows as waiting; after
    all end, nothing is active or waiting, 5 rows more are completed (none failed or cancelled) and
    tokens_generated grew by exactly the tokens the clients were sent (usage)."""
    max_tokens = 60
    before = health(server)
    streams = Streams(client, PROMPTS, max_tokens)
    wait_for(lambda: health(server)["active_rows"] == len(PROMPTS))
    release = hold_worker(server)
    try:
        during = health(server)
        extra = {}
        body = {"model": "tiny", "prompt": "The margin", "max_tokens": 3, "temperature": 0, "ignore_eos": True}
        late = threading.Thread(
            target=lambda: extra.update(reply=httpx.post(server.url + "/v1/completions", json=body, timeout=60))
        )
        late.start()
        queued = wait_for(lambda: (h := health(server))["waiting"] == 1 and h)
    finally:
        release.set()
    texts = streams.join()
    late.join(timeout=60)
    after = wait_for(lambda: (h := health(server))["active_rows"] == 0 and h["waiting"] == 0 and h)

    assert (during["active_rows"], during["batch_rows"], during["waiting"]) == (4, 4, 0), during
    assert (queued["active_rows"], queued["batch_rows"], queued["waiting"]) == (4, 4, 1), queued
    assert (after["active_rows"], after["batch_rows"], after["waiting"]) == (0, 0, 0), after
    assert texts == [solo(proxy_models, p, max_tokens) for p in PROMPTS]
    assert extra["reply"].status_code == 200
    delta = {key: after[key] - before[key] for key in ("completed", "failed", "cancelled", "tokens_generated")}
    sent = sum(streams.usage.values()) + extra["reply"].json()["usage"]["completion_tokens"]
    assert sent == 4 * max_tokens + 3
    assert delta == {"completed": 5, "failed": 0, "cancelled": 0, "tokens_generated": sent}, delta


BAD = [  # (route, body, param): sent while the streams run; each must be a one-line 400
    ("/v1/completions", {"prompt": "poll " * 300, "max_tokens": 4}, "max_tokens"),  # the prompt alone overflows
    ("/v1/completions", {"prompt": "Who leads?", "max_tokens": 10_000}, "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10_000}, "max_tokens"),
    ("/v1/completions", {"prompt": "Who leads?", "max_tokens": 4, "temperature": -1}, "temperature"),
    ("/v1/completions", {"prompt": "Who leads?", "max_tokens": 4, "seed": 2**64}, "seed"),
    ("/v1/completions", {"prompt": "Who leads?", "max_tokens": 4, "logprobs": 50}, "logprobs"),
    ("/v1/completions", {"prompt": "Who leads?", "max_tokens": 4, "n": 100}, "n"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content"),
]


def test_bad_requests_in_the_middle_get_one_line_400s_and_the_running_answers_are_unchanged(
    server, client, proxy_models
):
    max_tokens = 150
    before = health(server)
    streams = Streams(client, PROMPTS[:3], max_tokens)
    wait_for(lambda: health(server)["active_rows"] == 3)
    replies = [httpx.post(server.url + route, json={"model": "tiny", **body}, timeout=30) for route, body, _ in BAD]
    with pytest.raises(openai.BadRequestError, match="exceed the context"):  # a stream refused before it starts
        client.completions.create(model="tiny", prompt="Who leads?", max_tokens=10_000, stream=True)
    still_running = [not ended.is_set() for ended in streams.ended]
    texts = streams.join()

    for (route, _, param), reply in zip(BAD, replies):
        assert reply.status_code == 400, (route, param, reply.text)
        error = reply.json()["error"]
        assert error["param"] == param and "\n" not in error["message"], error
    assert still_running == [True] * 3  # the 400s came while every stream was mid-generation
    assert texts == [solo(proxy_models, p, max_tokens) for p in PROMPTS[:3]]
    after = wait_for(lambda: (h := health(server))["active_rows"] == 0 and h)
    assert (after["completed"] - before["completed"], after["failed"] - before["failed"]) == (3, 0)


@pytest.fixture(scope="module")
def chat_expert(tiny_models, tmp_path_factory):
    """The base in raw format with an expert that reads its chat template (more prompt tokens than the base
    sees) and has learned positions (GPT-2: a position past its context is an error, not a guess)."""
    from tiny import save_model

    from proxytool.decoding.setup import LoadingOptions, ProxySetup, load_proxy_models
    from proxytool.serving.app import ServerConfig
    from proxytool.serving.server import BackgroundServer

    expert = save_model(tmp_path_factory.mktemp("gpt2_chat"), arch="gpt2", seed=4, chat=True)
    formats = {"base_format": "raw", "expert_format": "chat", "anti_expert_format": "raw"}
    setup = ProxySetup(
        base=str(tiny_models["base"]),
        experts=[str(expert)],
        anti_experts=[str(expert)],
        alphas=[1.0],
        loading=LoadingOptions(overlap="off", **formats),
    )
    models = load_proxy_models(setup)
    with BackgroundServer(models, ServerConfig(model_name="tiny")) as running:
        yield running, models


def test_a_request_over_a_pair_models_context_is_refused_and_the_batch_runs_on(chat_expert):
    """The base sees 8 tokens of this conversation, the chat-format expert 22. max_tokens that fits the base
    but not the expert gets 400 at once: admitted, the row would outgrow the expert's 256 positions mid-batch
    and fail the request running beside it too (it did, before the check covered every model)."""
    server, models = chat_expert
    messages = [{"role": "user", "content": "Who leads the poll?"}]
    sizes = {role: len(m.source.groups[m.group].prompt_format.encode(messages)) for role, m in models.roles().items()}
    assert (sizes["base"], sizes["expert"]) == (8, 22) and models.pairs[0].expert.source.max_length == 256
    running = {}
    body = {"prompt": "A sample", "max_tokens": 240, "temperature": 0, "ignore_eos": True}
    first = threading.Thread(
        target=lambda: running.update(reply=httpx.post(server.url + "/v1/completions", json=body, timeout=120))
    )
    first.start()
    wait_for(lambda: health(server)["active_rows"] == 1)
    chat = {"messages": messages, "temperature": 0, "ignore_eos": True}
    over = httpx.post(server.url + "/v1/chat/completions", json={**chat, "max_tokens": 248}, timeout=60)
    fits = httpx.post(server.url + "/v1/chat/completions", json={**chat, "max_tokens": 234}, timeout=120)
    first.join(timeout=120)

    assert over.status_code == 400, over.text
    error = over.json()["error"]
    assert error["param"] == "max_tokens" and "\n" not in error["message"]
    assert error["message"] == (
        "prompt (22 tokens in the expert's format) + max_tokens (248) exceed the expert's context (256)"
    )
    assert fits.status_code == 200 and fits.json()["usage"]["completion_tokens"] == 234
    assert running["reply"].status_code == 200, running["reply"].text
    ids = TokenPrompt(tuple(models.tokenizer("A sample")["input_ids"]))  # completions: every role sees these ids
    assert running["reply"].json()["choices"][0]["text"] == solo(models, ids, 240)


@pytest.mark.parametrize("where", ["prefill", "its text"])
def test_a_request_that_fails_in_the_worker_fails_alone(server, client, proxy_models, monkeypatch, where):
    """Three streams run in one batch; a fourth request arrives and fails inside the worker: in its prefill
    (before it joins), or once it runs in the shared batch, where decoding its tokens to text raises (a
    tokenizer that cannot decode what one request generated). It gets a one-line 500; the three others
    answer exactly as alone, and /health counts one failed row and three completed."""
    from proxytool.decoding.generate import Decoding

    max_tokens, target = 120, "The margin of error"
    expected = [solo(proxy_models, p, max_tokens) for p in PROMPTS[:3]]
    target_ids = tuple(proxy_models.tokenizer(target)["input_ids"])
    if where == "prefill":
        start = Decoding.start

        def failing_start(self, prompts):
            if any(getattr(p, "ids", None) == target_ids for p in prompts):
                raise RuntimeError("injected prefill failure")
            return start(self, prompts)

        monkeypatch.setattr(Decoding, "start", failing_start)
    else:
        own = complete(proxy_models, [TokenPrompt(target_ids)], max_new_tokens=2, ignore_eos=True)[0].token_ids
        others = [complete(proxy_models, [p], max_new_tokens=max_tokens, ignore_eos=True)[0] for p in PROMPTS[:3]]
        assert all(o.token_ids[:2] != own for o in others)  # the failure can only be the target's
        decode = proxy_models.tokenizer.decode

        def failing_decode(ids, *args, **kwargs):
            if list(ids[:2]) == own:
                raise RuntimeError("injected decoding failure\nsecond line")
            return decode(ids, *args, **kwargs)

        monkeypatch.setattr(proxy_models.tokenizer, "decode", failing_decode)
    before = health(server)
    streams = Streams(client, PROMPTS[:3], max_tokens)
    wait_for(lambda: health(server)["active_rows"] == 3)
    body = {"model": "tiny", "prompt": target, "max_tokens": 20, "temperature": 0, "ignore_eos": True}
    failed = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
    still_running = [not ended.is_set() for ended in streams.ended]
    texts = streams.join()
    after = wait_for(lambda: (h := health(server))["active_rows"] == 0 and h["waiting"] == 0 and h)

    assert failed.status_code == 500, failed.text
    message = failed.json()["error"]["message"]
    assert message.startswith("generation failed: injected") and "\n" not in message, message
    assert still_running == [True] * 3
    assert texts == expected
    assert (after["failed"] - before["failed"], after["completed"] - before["completed"]) == (1, 3)
    if where == "its text":
        assert after["rows_joined"] > before["rows_joined"]  # it had joined the running batch
