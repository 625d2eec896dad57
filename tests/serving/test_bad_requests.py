"""Malformed requests get a 400 naming their field (never a 500), the server stays up, and a bad
request batched with valid ones changes nothing for them."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
USER = [{"role": "user", "content": "Who leads the poll?"}]
OK_CHAT = {"model": "tiny", "messages": USER, "max_tokens": 2}
OK_COMPLETION = {"model": "tiny", "prompt": "Hello", "max_tokens": 2}

RAW_BODIES = [  # (route, raw body, param named); bodies the JSON parser itself refuses
    (COMPLETIONS, b'{"model": "tiny", "prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),
    (COMPLETIONS, b'{"model": "tiny", "prompt": "x", "max_tokens": 1' + b"0" * 5000 + b"}", None),
    (COMPLETIONS, b'{"model": "tiny", "prompt": "x", "temperature": 1e400}', None),
    (COMPLETIONS, b'{"model": "tiny", "prompt": "x", "alpha": NaN}', None),
    (COMPLETIONS, b'{"model": "tiny", "prompt": "\\ud800"}', "prompt"),
    (CHAT, b'{"model": "tiny", "messages": [{"role": "user", "content": "a\\udfffb"}]}', "messages.0.content"),
    (COMPLETIONS, b'{"model": "tiny", "prompt": "x", "stop": ["\\ud800"]}', "stop.0"),
    ("/tokenize", b'{"model": "tiny", "prompt": "\\ud800"}', "prompt"),
]

FIELDS = [  # (route, body, param named)
    (COMPLETIONS, {**OK_COMPLETION, "seed": 2**64}, "seed"),
    (COMPLETIONS, {**OK_COMPLETION, "seed": -(2**63) - 1}, "seed"),
    (COMPLETIONS, {**OK_COMPLETION, "alpha": 1e30}, "alpha"),
    (COMPLETIONS, {**OK_COMPLETION, "alpha": [1e30]}, "alpha"),
    (COMPLETIONS, {**OK_COMPLETION, "best_of": 3}, "best_of"),
    (COMPLETIONS, {**OK_COMPLETION, "suffix": "end"}, "suffix"),
    (CHAT, {**OK_CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages.0.content"),
    (CHAT, {**OK_CHAT, "messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content"),
    (CHAT, {**OK_CHAT, "messages": [{"role": "user", "content": ["just a string"]}]}, "messages.0.content"),
]


@pytest.mark.parametrize("route, raw, param", RAW_BODIES)
def test_bodies_the_parser_refuses_get_400(server, route, raw, param):
    reply = httpx.post(server.url + route, content=raw, headers={"content-type": "application/json"}, timeout=30)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert "\n" not in error["message"] and error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param, error
    assert httpx.post(server.url + COMPLETIONS, json=OK_COMPLETION, timeout=30).status_code == 200


@pytest.mark.parametrize("route, body, param", FIELDS)
def test_bad_fields_get_400_naming_the_field(server, route, body, param):
    reply = httpx.post(server.url + route, json=body, timeout=30)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param, reply.json()
    assert param.split(".")[0] in reply.json()["error"]["message"]


@pytest.mark.parametrize("seed", [2**53, 2**63 - 1, -(2**63), -1])
def test_the_whole_signed_64_bit_seed_range_is_accepted(server, seed):
    body = {**OK_COMPLETION, "temperature": 1.0, "seed": seed}
    first = httpx.post(server.url + COMPLETIONS, json=body, timeout=30)
    assert first.status_code == 200, first.text
    again = httpx.post(server.url + COMPLETIONS, json=body, timeout=30).json()
    assert again["choices"][0]["text"] == first.json()["choices"][0]["text"]


def test_an_empty_message_is_answered_alone_and_with_others(server):
    for messages in (
        [{"role": "user", "content": ""}],
        [{"role": "system", "content": "Hi"}, {"role": "user", "content": ""}],
    ):
        body = {**OK_CHAT, "messages": messages, "temperature": 0}
        reply = httpx.post(server.url + CHAT, json=body, timeout=30)
        assert reply.status_code == 200, reply.text


def test_a_bad_request_batched_with_valid_ones_changes_nothing_for_them(server):
    """Sampled with one seed, the valid requests are batched together with a bad one (same settings)."""
    valid = [{**OK_COMPLETION, "prompt": p, "temperature": 0.9, "seed": 7, "max_tokens": 6} for p in ("A poll", "B")]
    alone = [httpx.post(server.url + COMPLETIONS, json=b, timeout=30).json()["choices"][0]["text"] for b in valid]
    bad = {**valid[0], "seed": 2**64}
    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda b: httpx.post(server.url + COMPLETIONS, json=b, timeout=30), [bad, *valid]))
    assert replies[0].status_code == 400
    assert [r.json()["choices"][0]["text"] for r in replies[1:]] == alone
