"""What real clients send: lm-eval's remote tokenizer routes, `model` left out, usage on completion streams."""

import httpx
import pytest

PROMPT = "Who leads the national poll?"


def post(server, route, body):
    return httpx.post(server.url + route, json=body, timeout=60)


def test_tokenizer_info_has_what_lm_eval_reads(server, proxy_models):
    info = httpx.get(server.url + "/tokenizer_info").json()
    tok = proxy_models.tokenizer
    assert info["eos_token"] == tok.eos_token  # lm-eval's check_remote_tokenizer_support needs the key
    assert info["bos_token"] == (tok.bos_token if isinstance(tok.bos_token, str) else None)
    assert info["model_max_length"] == proxy_models.base.source.max_length
    assert info["vocab_size"] == len(tok)


def test_tokenize_and_detokenize_without_model_round_trip(server, proxy_models):
    """lm-eval's RemoteTokenizer: /tokenize and /detokenize with no `model` field."""
    tok = proxy_models.tokenizer
    reply = post(server, "/tokenize", {"prompt": PROMPT, "add_special_tokens": False})
    assert reply.status_code == 200
    ids = reply.json()["tokens"]
    assert ids == tok(PROMPT, add_special_tokens=False)["input_ids"]
    back = post(server, "/detokenize", {"tokens": ids})
    assert back.status_code == 200 and back.json() == {"prompt": tok.decode(ids)}
    eos = post(server, "/tokenize", {"prompt": tok.eos_token, "add_special_tokens": False}).json()["tokens"]
    assert eos[0] == tok.eos_token_id  # how lm-eval finds the EOS id
    assert post(server, "/detokenize", {"model": "tiny", "tokens": ids}).json()["prompt"] == tok.decode(ids)


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"tokens": [-1]}, 400, "tokens"),
        ({"tokens": [10**9]}, 400, "tokens"),
        ({"tokens": "abc"}, 400, "tokens"),
        ({}, 400, "tokens"),
        ({"model": "other", "tokens": [1]}, 404, "model"),
    ],
)
def test_detokenize_bad_input(server, body, status, param):
    reply = post(server, "/detokenize", body)
    assert reply.status_code == status
    assert reply.json()["error"]["param"] == param


def test_generation_routes_without_model_use_the_served_one(server):
    completion = post(server, "/v1/completions", {"prompt": PROMPT, "max_tokens": 4, "temperature": 0})
    named = post(server, "/v1/completions", {"model": "tiny", "prompt": PROMPT, "max_tokens": 4, "temperature": 0})
    assert completion.status_code == 200 and completion.json()["model"] == "tiny"
    assert completion.json()["choices"][0]["text"] == named.json()["choices"][0]["text"]
    chat = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
    assert chat.status_code == 200 and chat.json()["model"] == "tiny"
    other = post(server, "/v1/completions", {"model": "other", "prompt": PROMPT})
    assert other.status_code == 404 and other.json()["error"]["param"] == "model"


def test_completions_stream_include_usage(client):
    kwargs = dict(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0)
    whole = client.completions.create(**kwargs)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    assert last.usage.total_tokens == whole.usage.total_tokens
    assert all(c.usage is None for c in chunks[:-1])
    plain = list(client.completions.create(stream=True, **kwargs))
    assert all(c.usage is None for c in plain) and all(c.choices for c in plain)


def test_completions_stream_include_usage_echo_max_tokens_zero(client, proxy_models):
    ids = proxy_models.tokenizer(PROMPT)["input_ids"]
    chunks = list(
        client.completions.create(
            model="tiny", prompt=PROMPT, max_tokens=0, echo=True, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage.prompt_tokens == len(ids) and chunks[-1].usage.completion_tokens == 0


def test_logprobs_n_gives_n_entries_with_ids_as_keys(client, proxy_models):
    """Distinct ids can decode to the same text (here byte tokens that decode to U+FFFD): text keys then
    collapse, ids as keys (vLLM's return_tokens_as_token_ids) keep all N, plus the chosen token."""
    tok = proxy_models.tokenizer
    texts = [tok.decode([i]) for i in range(len(tok))]
    assert len(set(texts)) < len(texts)  # the tiny tokenizer has such ids
    kwargs = dict(model="tiny", prompt=PROMPT, max_tokens=4, temperature=0, echo=True, logprobs=20)
    by_text = client.completions.create(**kwargs).choices[0].logprobs
    by_id = client.completions.create(**kwargs, extra_body={"return_tokens_as_token_ids": True}).choices[0].logprobs
    collapsed = 0
    for token, top_text, top_id in zip(by_id.tokens[1:], by_text.top_logprobs[1:], by_id.top_logprobs[1:]):
        assert len(top_id) in (20, 21) and (len(top_id) == 20) == (token in list(top_id)[:20])
        ids = [int(k.removeprefix("token_id:")) for k in top_id]
        assert len(top_text) == len({texts[i] for i in ids})
        for key, value in top_text.items():  # the likeliest id of a shared text keeps its key
            assert value == max(v for k, v in top_id.items() if texts[int(k.removeprefix("token_id:"))] == key)
        collapsed += len(top_text) < len(top_id)
    assert collapsed > 0  # the case this option exists for did occur
