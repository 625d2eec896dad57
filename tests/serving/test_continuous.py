"""Continuous batching through the real server and the openai client: requests that arrive while others
are mid-generation join the running batch and answer exactly as alone; a client that leaves takes its
row out of the batch at once."""

import threading
import time

import httpx
import pytest

from proxytool.decoding.generate import complete
from proxytool.decoding.sampling import SamplingConfig

LONG = "Who leads the national poll? Trump leads by two points among registered voters in the poll"
# (prompt, max_tokens, sampling): greedy rows join one batch; the two sampled rows share another
REQUESTS = [
    ("Who leads the poll?", 40, {"temperature": 0}),
    ("def add(a, b):", 25, {"temperature": 0}),
    (LONG, 12, {"temperature": 0}),
    ("A sample of adults", 20, {"temperature": 0.9, "top_p": 0.95, "seed": 4}),
    ("Hello! How can", 18, {"temperature": 0.9, "top_p": 0.95, "seed": 5}),
    ("A", 30, {"temperature": 0}),
]
LAUNCH_AFTER = {1: 3, 2: 8, 3: 8, 4: 8, 5: 15}  # request i starts once request 0 has streamed this many chunks


def solo(proxy_models, prompt, max_tokens, sampling):
    config = SamplingConfig(temperature=sampling["temperature"], top_p=sampling.get("top_p", 1.0))
    config = SamplingConfig(**{**config.__dict__, "seed": sampling.get("seed", 0)})
    return complete(proxy_models, [prompt], max_new_tokens=max_tokens, sampling=config, ignore_eos=True)[0].text


def stream_text(client, prompt, max_tokens, sampling, on_chunk=None) -> str:
    pieces = []
    stream = client.completions.create(
        model="tiny", prompt=prompt, max_tokens=max_tokens, stream=True, extra_body={"ignore_eos": True}, **sampling
    )
    for n, chunk in enumerate(stream, start=1):
        pieces.append(chunk.choices[0].text if chunk.choices else "")
        if on_chunk is not None:
            on_chunk(n)
    return "".join(pieces)


@pytest.fixture(params=["continuous", "separate"], scope="module")
def batching_server(request, proxy_models):
    from proxytool.serving.app import ServerConfig
    from proxytool.serving.server import BackgroundServer

    config = ServerConfig(model_name="tiny", max_batch=8, max_queue=8, batching=request.param)
    with BackgroundServer(proxy_models, config) as running:
        yield running


def test_staggered_arrivals_equal_each_request_alone(batching_server, proxy_models):
    from openai import OpenAI

    client = OpenAI(base_url=batching_server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    stats = batching_server.scheduler.stats
    joined_before, widest = stats.rows_joined, 0
    answers: dict[int, str] = {}
    threads = []

    def run(i):
        answers[i] = stream_text(client, *REQUESTS[i])

    def on_chunk(n):
        nonlocal widest
        widest = max(widest, stats.batch_rows)
        for i, after in LAUNCH_AFTER.items():
            if after == n:
                threads.append(threading.Thread(target=run, args=(i,)))
                threads[-1].start()

    answers[0] = stream_text(client, *REQUESTS[0], on_chunk=on_chunk)
    for t in threads:
        t.join(timeout=60)
    assert [answers[i] for i in range(len(REQUESTS))] == [solo(proxy_models, *r) for r in REQUESTS]
    if batching_server.scheduler.continuous:
        assert stats.rows_joined - joined_before >= 3  # newcomers joined running batches mid-generation
        assert widest >= 3  # and shared their forwards
    else:
        assert stats.rows_joined == joined_before


def test_a_client_that_leaves_takes_its_row_out_of_the_batch(server, client, proxy_models):
    """Two streams share one batch; one client disconnects: its row leaves the batch's state at once
    (``batch_rows`` drops to the one row left while that row still runs) and the other answer is unchanged."""
    stats = server.scheduler.stats
    assert server.scheduler.continuous
    before = stats.cancelled
    kept_prompt, kept_tokens = "A sample of adults", 200
    started, kept = threading.Event(), {}

    def keep():
        kept["text"] = stream_text(
            client, kept_prompt, kept_tokens, {"temperature": 0}, on_chunk=lambda n: n == 2 and started.set()
        )

    body = {"model": "tiny", "prompt": "Who", "max_tokens": 200, "stream": True, "ignore_eos": True, "temperature": 0}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("data: {"))
        other = threading.Thread(target=keep)
        other.start()
        assert started.wait(30)
        shared = stats.batch_rows
        for _ in range(3):
            next(lines)
    seen = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and other.is_alive():
        seen = (stats.cancelled - before, stats.active_rows, stats.batch_rows)
        if seen == (1, 1, 1):
            break
        time.sleep(0.005)
    other.join(timeout=60)
    assert shared == 2  # both rows were in one batch
    assert seen == (1, 1, 1), seen  # cancelled, and only the kept row is left in the batch while it runs
    assert kept["text"] == solo(proxy_models, kept_prompt, kept_tokens, {"temperature": 0})
