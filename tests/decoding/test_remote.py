"""A base behind an HTTP API (top-K log-probabilities) steered by a local pair: exactness, lookahead, errors."""

import pytest
import torch
from engine_helpers import proxy_setup, random_prompts
from reference import load, tokenizer_of
from remote_fake import FakeServer

from proxytool.decoding.generate import complete
from proxytool.decoding.sampling import SamplingConfig
from proxytool.decoding.setup import load_proxy_models
from proxytool.errors import ProxyToolError

N = 10


@torch.no_grad()
def reference_topk_greedy(
    base, pairs, ids, top_k, max_new_tokens, tokenizer, eos_id=0, dropped=(), extra_top=0, extra_eos=()
):
    """Greedy proxy decoding with the base restricted to its top-K log-probs, by full recomputation.

    ``dropped``: ids a server keyed by token strings cannot name (their string is shared), out of the set.
    ``extra_top``: the candidate set also holds the pair's top M of ``anti + Σ α (expert − anti)`` and
    the ids ``extra_eos`` (a server scoring ``logprob_token_ids``).
    """
    ids, out = list(ids), []
    for _ in range(max_new_tokens):
        logits = [base(torch.tensor([ids])).logits[0, -1]]
        for _, expert, anti in pairs:
            logits += [expert(torch.tensor([ids])).logits[0, -1], anti(torch.tensor([ids])).logits[0, -1]]
        width = min([t.shape[-1] for t in logits] + [len(tokenizer)])
        logp = torch.log_softmax(logits[0][:width].float(), -1)
        top = logp.topk(min(top_k, width))
        scores = torch.full((width,), float("-inf"))
        scores[top.indices] = top.values
        if extra_top:
            stand_in = logits[2][:width].float()
            for i, (alpha, _, _) in enumerate(pairs):
                stand_in = stand_in + alpha * (logits[1 + 2 * i][:width].float() - logits[2 + 2 * i][:width].float())
            extra = stand_in.topk(extra_top).indices.tolist() + list(extra_eos)
            scores[extra] = logp[extra]
        scores[list(dropped)] = float("-inf")
        for i, (alpha, _, _) in enumerate(pairs):
            scores += alpha * (logits[1 + 2 * i][:width] - logits[2 + 2 * i][:width])
        token = int(scores.argmax())
        out.append(token)
        if token == eos_id:
            break
        ids.append(token)
    return out


@pytest.fixture(scope="module")
def models_of(tiny_models):
    return {name: load(tiny_models[name]) for name in ("base", "expert", "anti")}


@pytest.fixture(scope="module")
def remote(tiny_models):
    """``proxytool serve`` on the tiny base alone, as the remote base (API key required)."""
    from proxytool.serving.app import ServerConfig
    from proxytool.serving.server import BackgroundServer

    base = load_proxy_models(proxy_setup(tiny_models["base"], overlap="off"))
    config = ServerConfig(model_name="tiny-base", api_key=KEY, max_logprobs=100_000)
    with BackgroundServer(base, config) as server:
        server.url += "/v1"
        yield server


@pytest.fixture(scope="module")
def local(tiny_models):
    """The same proxy with every model loaded here (the base too): what a remote base is compared with."""
    return load_proxy_models(
        proxy_setup(
            tiny_models["base"],
            experts=[str(tiny_models["expert"])],
            anti_experts=[str(tiny_models["anti"])],
            alphas=[1.5],
        )
    )


KEY = "secret"


def remote_setup(tiny_models, url, **kwargs):
    kwargs.setdefault("alphas", [1.5])
    kwargs.setdefault("base_api_key", KEY)
    kwargs.setdefault("remote_extra", 0)  # the top-K candidate set alone unless a test asks for more
    return load_proxy_models(
        proxy_setup(url, experts=[str(tiny_models["expert"])], anti_experts=[str(tiny_models["anti"])], **kwargs)
    )


@pytest.mark.parametrize("top_k", [1, 5, 20, 320])
def test_remote_base_equals_the_top_k_reference(tiny_models, models_of, remote, top_k):
    models = remote_setup(tiny_models, remote.url, remote_top_k=top_k)
    tokenizer = models.tokenizer
    pairs = [(1.5, models_of["expert"], models_of["anti"])]
    prompts = random_prompts(3, seed=top_k)
    got = [c.token_ids for c in complete(models, prompts, max_new_tokens=N)]
    for prompt, ids in zip(prompts, got):
        want = reference_topk_greedy(models_of["base"], pairs, tokenizer(prompt)["input_ids"], top_k, N, tokenizer)
        assert ids == want


@pytest.mark.parametrize("draft", ["base", "pair"])
def test_lookahead_is_token_identical_and_saves_calls(tiny_models, remote, draft):
    prompts = random_prompts(3, seed=7)
    plain = remote_setup(tiny_models, remote.url, remote_lookahead=0)
    ahead = remote_setup(tiny_models, remote.url, remote_lookahead=8, remote_draft=draft)
    for alpha in (0.3, 1.5):
        want = [c.token_ids for p in prompts for c in complete(plain, [p], max_new_tokens=N, alphas=[alpha])]
        got = [c.token_ids for p in prompts for c in complete(ahead, [p], max_new_tokens=N, alphas=[alpha])]
        assert got == want
    print(plain.base.source.client.calls, ahead.base.source.client.calls)
    assert ahead.base.source.client.calls.completions < plain.base.source.client.calls.completions


def test_top_k_covering_the_vocabulary_equals_local_proxy_decoding(tiny_models, remote, local):
    prompts = random_prompts(4, seed=3)
    want = [c.token_ids for c in complete(local, prompts, max_new_tokens=N)]
    models = remote_setup(tiny_models, remote.url, remote_top_k=10_000, remote_lookahead=4)
    assert [c.token_ids for c in complete(models, prompts, max_new_tokens=N)] == want  # a batch
    assert [complete(models, [p], max_new_tokens=N)[0].token_ids for p in prompts] == want  # each alone


@pytest.mark.parametrize("draft", ["base", "pair"])
def test_sampling_with_lookahead_follows_the_top_k_proxy_distribution(tiny_models, models_of, remote, draft):
    """Two sampled tokens, 3000 draws: the empirical joint law matches the exact top-K proxy law."""
    top_k, alpha, draws = 4, 0.5, 3000
    models = remote_setup(
        tiny_models, remote.url, remote_top_k=top_k, remote_lookahead=3, alphas=[alpha], remote_draft=draft
    )
    prompt = "The poll of likely voters"
    rows = complete(
        models, [prompt] * draws, max_new_tokens=2, sampling=SamplingConfig(temperature=1.0, seed=5), ignore_eos=True
    )
    seen = {}
    for row in rows:
        seen[tuple(row.token_ids)] = seen.get(tuple(row.token_ids), 0) + 1
    exact = _exact_joint(models_of, models.tokenizer(prompt)["input_ids"], top_k, alpha, len(models.tokenizer))
    assert set(seen) <= set(exact)
    total_variation = 0.5 * sum(abs(seen.get(k, 0) / draws - p) for k, p in exact.items())
    assert total_variation < 0.06, total_variation


@torch.no_grad()
def _exact_joint(m, ids, top_k, alpha, vocab):
    def law(ids):
        logits = [m[name](torch.tensor([ids])).logits[0, -1][:vocab] for name in ("base", "expert", "anti")]
        logp = torch.log_softmax(logits[0], -1)
        top = logp.topk(top_k)
        scores = torch.full((vocab,), float("-inf"))
        scores[top.indices] = top.values
        probs = torch.softmax(scores + alpha * (logits[1] - logits[2]), -1)
        return {i: float(probs[i]) for i in top.indices.tolist()}

    return {(a, b): pa * pb for a, pa in law(ids).items() for b, pb in law(ids + [a]).items()}


def test_retries_429_then_succeeds(tiny_models, models_of, no_sleep):
    with FakeServer(models_of["base"], tokenizer_of(tiny_models["base"]), faults=[429, 503]) as server:
        models = remote_setup(tiny_models, server.url)
        assert complete(models, ["Hello"], max_new_tokens=3)[0].token_ids
        assert models.base.source.client.calls.retries == 0  # the faults hit the connection probe
        assert len(no_sleep) == 2
    assert sum(path == "/v1/completions" for path, _ in server.requests) >= 3


@pytest.mark.parametrize(
    "server_kwargs, message",
    [
        (dict(logprobs=False), "returned no log-probabilities"),
        (dict(tokenize_shift=1), "uses a different tokenizer"),
        (dict(faults=[400]), "HTTP 400: scripted 400"),
        (dict(faults=[500] * 10), "HTTP 500"),
        (dict(faults=[404]), "has no /v1/completions: a chat-only API cannot continue a partial reply"),
    ],
)
def test_errors_are_one_line(tiny_models, models_of, server_kwargs, message, no_sleep):
    with FakeServer(models_of["base"], tokenizer_of(tiny_models["base"]), **server_kwargs) as server:
        with pytest.raises(ProxyToolError, match=message) as err:
            remote_setup(tiny_models, server.url)
    assert "\n" not in str(err.value)


@pytest.fixture
def no_sleep(monkeypatch):
    waits = []
    monkeypatch.setattr("proxytool.models.remote_client.sleep", waits.append)
    return waits


def test_server_down_is_one_line(tiny_models, no_sleep):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ProxyToolError, match=f"cannot reach the remote base at http://127.0.0.1:{port}/v1"):
        remote_setup(tiny_models, f"http://127.0.0.1:{port}")
    assert len(no_sleep) == 4 and no_sleep == sorted(no_sleep)  # exponential backoff between 5 tries


def test_wrong_api_key_and_unknown_model_are_one_line(tiny_models, remote):
    with pytest.raises(ProxyToolError, match="HTTP 401"):
        remote_setup(tiny_models, remote.url, base_api_key="wrong")
    with pytest.raises(ProxyToolError, match="has no model 'other' \\(it serves: tiny-base\\)"):
        remote_setup(tiny_models, remote.url + "#other")


@pytest.mark.parametrize("refusal", [True, "llama-cpp-python"])
def test_text_only_server_gets_text_and_string_keys(tiny_models, models_of, refusal):
    """llama-cpp-python's way: text prompts, log-probs keyed by token strings (shared strings dropped).
    Its real server refuses token-id prompts with HTTP 500 "validation errors": not retried, text instead."""
    tokenizer = tokenizer_of(tiny_models["base"])
    pieces = [tokenizer.decode([i]) for i in range(len(tokenizer))]
    shared = {i for i, p in enumerate(pieces) if pieces.count(p) > 1}
    prompt = "The poll of likely"
    with FakeServer(models_of["base"], tokenizer, text_only=refusal) as server:
        models = remote_setup(tiny_models, server.url, remote_top_k=20, remote_lookahead=4)
        assert models.base.source.text_prompts
        assert models.base.source.client.calls.retries == 0
        got = complete(models, [prompt], max_new_tokens=N)[0].token_ids
        assert models.base.source.guess_length == 0  # text prompts: the server's greedy path only
    pairs = [(1.5, models_of["expert"], models_of["anti"])]
    ids = tokenizer(prompt)["input_ids"]
    assert got == reference_topk_greedy(models_of["base"], pairs, ids, 20, N, tokenizer, dropped=shared)


def test_decode_command_through_a_remote_base(tiny_models, remote, tmp_path, monkeypatch):
    import json

    from cli_runner import run_cli

    monkeypatch.setenv("PROXYTOOL_BASE_API_KEY", KEY)
    out = tmp_path / "out.jsonl"
    code, _, err = run_cli(
        "decode", "--prompts", "-", "-o", out, "--base", remote.url.removesuffix("/v1") + "#tiny-base",
        "--expert", tiny_models["expert"], "--anti-expert", tiny_models["anti"], "--alpha", "1.5",
        "--max-new-tokens", N, "--remote-top-k", 5, "--remote-lookahead", 4, "--remote-draft", "base", "--threads", 1,
        stdin="The poll of likely\n",
    )  # fmt: skip
    assert code == 0, err
    assert "calls for" in err and "per token" in err
    got = json.loads(out.read_text())
    models = remote_setup(tiny_models, remote.url, remote_top_k=5, remote_extra=5)  # the CLI's default M
    assert models.base.source.extra_top == 5
    assert got["completion"] == complete(models, ["The poll of likely"], max_new_tokens=N)[0].text


def test_base_api_key_is_sent(tiny_models, models_of):
    with FakeServer(models_of["base"], tokenizer_of(tiny_models["base"])) as server:
        models = remote_setup(tiny_models, server.url, base_api_key="k123")
        assert models.base.source.client.endpoint.api_key == "k123"
    assert server.auth == {"Bearer k123"}


def test_eval_choice_task_through_a_remote_base_equals_local(tiny_models, remote, tmp_path):
    """Teacher-forced scoring goes through the remote source too; K >= vocab makes it the local eval."""
    import json

    from cli_runner import run_cli

    rows = [
        {"id": "m1", "question": "Q: Who leads the poll?\nA:", "choices": ["Harris", "Trump"], "correct": 0},
        {"id": "m2", "question": "Q: How many apples?\nA:", "choices": ["8", "5 apples"], "correct": 1},
    ]
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    outputs = {}
    for name, base in (("local", tiny_models["base"]), ("remote", remote.url)):
        out = tmp_path / name
        code, _, err = run_cli(
            "eval", "--task", data, "--base", base, "--expert", tiny_models["expert"],
            "--anti-expert", tiny_models["anti"], "--alpha", "1.5", "--output", out, "--threads", 1,
            "--device", "cpu", "--remote-top-k", 100_000, "--base-api-key", KEY,
        )  # fmt: skip
        assert code == 0, err
        outputs[name] = {
            system: [json.loads(line) for line in (out / "outputs" / f"{system}.jsonl").read_text().splitlines()]
            for system in ("base", "proxy")
        }
    for system in ("base", "proxy"):
        for local, remote_row in zip(outputs["local"][system], outputs["remote"][system]):
            assert len(local["choice_scores"]) == 2
            assert remote_row["choice_scores"] == pytest.approx(local["choice_scores"], abs=1e-4)


def test_a_server_that_does_not_echo_gets_no_guesses_and_stays_exact(tiny_models, models_of):
    tokenizer = tokenizer_of(tiny_models["base"])
    prompt = "Who leads the national poll?"
    with FakeServer(models_of["base"], tokenizer) as server:  # ignores `echo`
        models = remote_setup(tiny_models, server.url, remote_top_k=5, remote_lookahead=4)
        got = complete(models, [prompt], max_new_tokens=N)[0].token_ids
        assert models.base.source.guess_length == 0
    pairs = [(1.5, models_of["expert"], models_of["anti"])]
    assert got == reference_topk_greedy(models_of["base"], pairs, tokenizer(prompt)["input_ids"], 5, N, tokenizer)


# ---- extra candidates: the pair's top M and EOS scored by the server (logprob_token_ids) ----------------


@pytest.mark.parametrize("top_k, extra", [(1, 5), (5, 5), (5, 1)])
def test_extra_ids_equal_the_top_k_union_pair_top_m_reference(tiny_models, models_of, remote, top_k, extra):
    models = remote_setup(tiny_models, remote.url, remote_top_k=top_k, remote_extra=extra)
    assert models.base.source.extra_top == extra  # proxytool serve scores logprob_token_ids
    tokenizer = models.tokenizer
    pairs = [(1.5, models_of["expert"], models_of["anti"])]
    prompts = random_prompts(3, seed=11 + top_k)
    got = [c.token_ids for c in complete(models, prompts, max_new_tokens=N)]
    for prompt, ids in zip(prompts, got):
        ids_in = tokenizer(prompt)["input_ids"]
        want = reference_topk_greedy(
            models_of["base"], pairs, ids_in, top_k, N, tokenizer, extra_top=extra, extra_eos=models.eos_ids
        )
        assert ids == want


def test_extra_ids_bring_remote_decoding_closer_to_local(tiny_models, models_of, remote, local):
    """With K = 1 the base alone picks the candidates; the pair's own top M lets the proxy choose
    tokens outside them (EOS among them), so remote decoding agrees with local decoding for longer."""
    prompts = random_prompts(6, seed=21)
    want = [c.token_ids for c in complete(local, prompts, max_new_tokens=N)]
    plain = [
        c.token_ids for c in complete(remote_setup(tiny_models, remote.url, remote_top_k=1), prompts, max_new_tokens=N)
    ]
    extra = remote_setup(tiny_models, remote.url, remote_top_k=1, remote_extra=5)
    more = [c.token_ids for c in complete(extra, prompts, max_new_tokens=N)]

    def agree(a, b):
        return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))

    print([agree(w, p) for w, p in zip(want, plain)], [agree(w, m) for w, m in zip(want, more)])
    assert sum(agree(w, m) for w, m in zip(want, more)) > sum(agree(w, p) for w, p in zip(want, plain))
    assert all(agree(w, m) >= agree(w, p) for w, p, m in zip(want, plain, more))
    assert more != plain  # some chosen tokens lie outside the base's top K


@pytest.mark.parametrize("draft", ["base", "pair"])
def test_extra_ids_with_lookahead_equal_no_lookahead(tiny_models, remote, draft):
    prompts = random_prompts(3, seed=9)
    plain = remote_setup(tiny_models, remote.url, remote_top_k=3, remote_extra=5)
    ahead = remote_setup(
        tiny_models, remote.url, remote_top_k=3, remote_extra=5, remote_lookahead=6, remote_draft=draft
    )
    for alpha in (0.3, 1.5):
        want = [c.token_ids for c in complete(plain, prompts, max_new_tokens=N, alphas=[alpha])]
        got = [c.token_ids for c in complete(ahead, prompts, max_new_tokens=N, alphas=[alpha])]
        assert got == want
        assert [complete(ahead, [p], max_new_tokens=N, alphas=[alpha])[0].token_ids for p in prompts] == want
    calls = ahead.base.source.client.calls.completions, plain.base.source.client.calls.completions
    print(draft, calls)
    assert calls[0] < 2 * calls[1]  # `ahead` decoded every prompt twice (a batch, then alone)


def test_a_server_that_ignores_extra_ids_gets_the_top_k_set(tiny_models, models_of):
    tokenizer = tokenizer_of(tiny_models["base"])
    prompt = "Who leads the national poll?"
    with FakeServer(models_of["base"], tokenizer) as server:  # ignores logprob_token_ids
        models = remote_setup(tiny_models, server.url, remote_top_k=2, remote_extra=5, remote_lookahead=3)
        assert models.base.source.extra_top == 0
        got = complete(models, [prompt], max_new_tokens=N)[0].token_ids
    assert all("logprob_token_ids" not in (body or {}) for _, body in server.requests[-3:])
    pairs = [(1.5, models_of["expert"], models_of["anti"])]
    assert got == reference_topk_greedy(models_of["base"], pairs, tokenizer(prompt)["input_ids"], 2, N, tokenizer)


def test_serve_returns_logprob_token_ids_at_every_position(remote):
    import httpx

    body = {
        "model": "tiny-base", "prompt": [5, 6, 7], "max_tokens": 3, "temperature": 0, "logprobs": 1,
        "echo": True, "return_tokens_as_token_ids": True, "logprob_token_ids": [0, 3, 250],
    }  # fmt: skip
    reply = httpx.post(remote.url + "/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}).json()
    tops = reply["choices"][0]["logprobs"]["top_logprobs"]
    assert tops[0] is None and len(tops) == 6
    for top in tops[1:]:
        assert {"token_id:0", "token_id:3", "token_id:250"} <= set(top)
    bad = dict(body, logprob_token_ids=[10**9])
    answer = httpx.post(remote.url + "/completions", json=bad, headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 400


@torch.no_grad()
def test_eos_outside_the_top_k_now_ends_the_answer(tiny_models, models_of, remote):
    """The case of issue #12: EOS, outside the base's top K, is what the proxy picks; with the extra
    ids the answer can end there, which the top-K set alone never allows (more answers end)."""
    top_k, alpha = 5, 3.0
    prompts = random_prompts(20, seed=5)
    plain = remote_setup(tiny_models, remote.url, remote_top_k=top_k, alphas=[alpha])
    extra = remote_setup(tiny_models, remote.url, remote_top_k=top_k, remote_extra=5, alphas=[alpha])
    without = [c.token_ids for c in complete(plain, prompts, max_new_tokens=20)]
    got = [c.token_ids for c in complete(extra, prompts, max_new_tokens=20)]
    eos = set(extra.eos_ids)
    stopped = 0
    for prompt, ids in zip(prompts, got):
        if not ids or ids[-1] not in eos:
            continue
        context = extra.tokenizer(prompt)["input_ids"] + ids[:-1]
        logp = torch.log_softmax(models_of["base"](torch.tensor([context])).logits[0, -1], -1)
        if ids[-1] not in logp.topk(top_k).indices.tolist():  # EOS outside the base's top K
            stopped += 1  # the top-K set alone gives EOS -inf there: it could not have stopped
    assert stopped >= 1
    assert sum(bool(ids) and ids[-1] in eos for ids in got) > sum(bool(ids) and ids[-1] in eos for ids in without)


def test_speculative_with_extra_ids_is_refused_in_one_line(tiny_models, remote):
    models = remote_setup(tiny_models, remote.url, remote_top_k=3, remote_extra=5)
    with pytest.raises(ProxyToolError, match="--remote-extra 0"):
        complete(models, ["Hello"], max_new_tokens=3, speculative=2)


@pytest.fixture
def default_serve(tiny_models):
    """``proxytool serve`` on the tiny base with its default limits (--max-logprobs 20)."""
    from proxytool.serving.app import ServerConfig
    from proxytool.serving.server import BackgroundServer

    base = load_proxy_models(proxy_setup(tiny_models["base"], overlap="off"))
    with BackgroundServer(base, ServerConfig(model_name="tiny-base", api_key=KEY)) as server:
        server.url += "/v1"
        yield server


def test_candidates_along_a_long_guess_fit_a_default_server(tiny_models, default_serve):
    """One call asks the pair's top M and EOS at every position of the guess (more ids than --max-logprobs)."""
    from proxytool.decoding.remote import extra_ids_per_call

    assert extra_ids_per_call(5, 8, 1) > 20
    prompts = random_prompts(2, seed=4)
    plain = remote_setup(tiny_models, default_serve.url, remote_top_k=3, remote_extra=5)
    ahead = remote_setup(tiny_models, default_serve.url, remote_top_k=3, remote_extra=5, remote_lookahead=8)
    assert ahead.base.source.extra_top == 5
    want = [c.token_ids for c in complete(plain, prompts, max_new_tokens=N)]
    assert [c.token_ids for c in complete(ahead, prompts, max_new_tokens=N)] == want


def test_a_server_with_fewer_extra_ids_than_a_call_asks_gets_the_top_k_set(tiny_models, default_serve, monkeypatch):
    from proxytool.serving import app

    monkeypatch.setattr(app, "MAX_LOGPROB_TOKEN_IDS", 30)
    models = remote_setup(tiny_models, default_serve.url, remote_top_k=3, remote_extra=5, remote_lookahead=8)
    assert models.base.source.extra_top == 0  # found by the probe, before decoding
    assert len(complete(models, random_prompts(1, seed=2), max_new_tokens=N)[0].token_ids) > 0


def test_a_lazy_extend_calls_only_for_its_first_position(tiny_models, remote):
    """Drafted positions past what the calls made so far know are left unscored (and cost no call)."""
    from proxytool.decoding.stepper import Stepper

    models = remote_setup(tiny_models, remote.url, remote_top_k=3, remote_extra=5, remote_lookahead=4)
    calls = models.base.source.client.calls
    off_path = torch.tensor([[7, 300, 11, 12]])  # greedy paths of the tiny base never take these
    with Stepper(models) as eager:
        eager.prefill(["a poll of voters"])
        before = calls.completions
        want = eager.extend(off_path)
        assert calls.completions - before == 4 and eager.known(4) == 4
    with Stepper(models) as lazy:
        lazy.prefill(["a poll of voters"])
        before = calls.completions
        got = lazy.extend(off_path, lazy=True)
        assert calls.completions - before == 1 and lazy.known(4) == 1
        assert torch.equal(got[:, 0], want[:, 0])
        lazy.truncate(3)
        again = lazy.step(off_path[:, 1])  # the dropped position, now called for (one local forward vs four)
        assert torch.equal(again.isinf(), want[:, 1].isinf())
        assert torch.allclose(again[~again.isinf()], want[:, 1][~again.isinf()], atol=1e-4)


def test_drafts_stop_before_an_end_of_sequence():
    from proxytool.decoding.stepper import until_eos

    assert until_eos([5, 6, 0, 7], frozenset({0})) == [5, 6]
    assert until_eos([0, 7], frozenset({0})) == []
    assert until_eos([5, 6], frozenset({0})) == [5, 6]
    assert until_eos([5, 0], frozenset()) == [5, 0]  # ignore_eos: no end


@pytest.mark.parametrize("lookahead", [0, 6])
def test_finished_rows_cost_a_remote_base_no_calls(tiny_models, remote, lookahead):
    """A batch whose rows end at different steps: each row as alone, and no more calls than alone."""
    models = remote_setup(tiny_models, remote.url, remote_top_k=3, remote_extra=5, remote_lookahead=lookahead)
    calls = models.base.source.client.calls
    prompts = random_prompts(3, seed=12)
    first = complete(models, [prompts[0]], max_new_tokens=N)[0]
    stop = [models.tokenizer.decode(first.token_ids[:3])[-2:]]  # ends row 0 after ~3 tokens
    solo, solo_calls = [], 0
    for prompt in prompts:
        before = calls.completions
        solo.append(complete(models, [prompt], max_new_tokens=N, stop=stop)[0])
        solo_calls += calls.completions - before
    before = calls.completions
    batch = complete(models, prompts, max_new_tokens=N, stop=stop)
    assert [c.token_ids for c in batch] == [c.token_ids for c in solo]
    assert len({len(c.token_ids) for c in batch}) > 1  # the rows did end at different steps
    assert calls.completions - before <= solo_calls


@pytest.mark.parametrize("lookahead", [0, 8])
def test_a_server_that_answers_extra_ids_instead_of_its_top_k_gets_the_top_k_set(tiny_models, models_of, lookahead):
    """vLLM 0.32's ``logprob_token_ids`` replaces the top K (the sampled token plus exactly the asked ids):
    used as extra candidates it would silently swap the base's candidates for the pair's. The connection
    probe sees the top K gone and decodes on the top-K set alone, exactly."""
    tokenizer = tokenizer_of(tiny_models["base"])
    prompts = random_prompts(3, seed=5)
    with FakeServer(models_of["base"], tokenizer, extra_ids="replace") as server:
        models = remote_setup(tiny_models, server.url, remote_top_k=20, remote_extra=5, remote_lookahead=lookahead)
        assert models.base.source.extra_top == 0
        got = [c.token_ids for c in complete(models, prompts, max_new_tokens=N)]
    pairs = [(1.5, models_of["expert"], models_of["anti"])]
    want = [
        reference_topk_greedy(models_of["base"], pairs, tokenizer(p)["input_ids"], 20, N, tokenizer) for p in prompts
    ]
    assert got == want
