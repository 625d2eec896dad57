"""Cross-tokenizer proxy-tuning: the cached paths equal a slow reference, and the identities hold."""

import random

import pytest
import torch
from cli_runner import run_cli
from cross_reference import ReferencePair, reference_greedy, reference_scores
from engine_helpers import proxy_setup
from reference import load
from tiny import CORPUS, OTHER_CORPUS, build_tokenizer, save_model

from proxytool.decoding.generate import complete, generate
from proxytool.decoding.sampling import SamplingConfig
from proxytool.decoding.setup import load_proxy_models
from proxytool.decoding.token_bytes import TokenBytes
from proxytool.errors import ProxyToolError

RAW = {"base": "raw", "expert": "raw", "anti-expert": "raw"}
EXTRAS = ["café", "日本語", "naïve", "🙂", "€5", "  two  spaces"]
SPECIALS = {0: [0], 1: [1], 2: [2], 3: [3]}  # the tiny tokenizers share their special tokens' texts


def other_tokenizer():
    return build_tokenizer(vocab_size=300, corpus=OTHER_CORPUS)


@pytest.fixture(scope="module")
def other_pair(tmp_path_factory):
    """An expert and anti-expert whose tokenizer (other merges, other ids) the tiny base does not share."""
    root = tmp_path_factory.mktemp("other_pair")
    return {
        "expert": save_model(root / "expert", seed=5, tokenizer=other_tokenizer()),
        "anti": save_model(root / "anti", seed=6, tokenizer=other_tokenizer()),
    }


def cross_prompts(n, seed):
    """Prompts from the corpus words with multi-byte characters and leading / doubled spaces mixed in."""
    rng = random.Random(seed)
    words = " ".join(CORPUS).split() + EXTRAS
    prompts = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 6)))
        prompts.append((" " if i % 3 == 0 else "") + text)
    return prompts


def cross_models(tiny_models, other_pair, mode, alpha=1.5, **kwargs):
    return load_proxy_models(
        proxy_setup(
            tiny_models["base"],
            experts=[str(other_pair["expert"])],
            anti_experts=[str(other_pair["anti"])],
            alphas=[alpha],
            formats=RAW,
            cross_tokenizer=mode,
            **kwargs,
        )
    )


def references(tiny_models, other_pair, prompt):
    base_tokenizer, pair_tokenizer = build_tokenizer(), other_tokenizer()
    pair_vocab = TokenBytes(pair_tokenizer)
    pair_ids = pair_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    expert = ReferencePair(load(other_pair["expert"]), pair_ids, pair_vocab)
    anti = ReferencePair(load(other_pair["anti"]), pair_ids, pair_vocab)
    base_ids = base_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return load(tiny_models["base"]), base_ids, expert, anti, TokenBytes(base_tokenizer)


def test_token_bytes_write_every_prefix_back():
    vocab = TokenBytes(build_tokenizer())
    text = " Harris café 日本語 🙂\n  x".encode()
    for n in range(len(text) + 1):  # prefixes end inside characters too
        assert vocab.text_of(vocab.encode(text[:n])) == text[:n]
    assert vocab.with_prefix(b" H") and all(vocab.bytes_of[i].startswith(b" H") for i in vocab.with_prefix(b" H"))
    assert vocab.bytes_of[0] is None  # a special token writes nothing


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_cached_cross_tokenizer_decoding_equals_the_slow_reference(tiny_models, other_pair, mode):
    models = cross_models(tiny_models, other_pair, mode, cross_top_k=8)
    prompts = cross_prompts(20, seed={"fast": 1, "exact": 2}[mode])
    n = 5
    batched = complete(models, prompts[:4], max_new_tokens=n)  # a batch of rows too
    alone = [complete(models, [p], max_new_tokens=n)[0] for p in prompts]
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone[:4]]
    for prompt, got in zip(prompts, alone):
        base, base_ids, expert, anti, base_vocab = references(tiny_models, other_pair, prompt)
        want = reference_greedy(base, base_ids, expert, anti, base_vocab, SPECIALS, 1.5, mode, 8, n)
        assert got.token_ids == want, prompt


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_sampling_draws_from_the_reference_distribution(tiny_models, other_pair, mode):
    models = cross_models(tiny_models, other_pair, mode, cross_top_k=8)
    prompt = " café poll 日本"
    seen = []
    sampling = SamplingConfig(temperature=1.0, seed=3)

    def observe(stepper, scores, tokens):
        seen.append((scores[0].clone(), int(tokens[0])))

    for _ in generate(models, [prompt], max_new_tokens=6, sampling=sampling, observe=observe):
        pass
    base, base_ids, expert, anti, base_vocab = references(tiny_models, other_pair, prompt)
    out = []
    for scores, token in seen:
        want = reference_scores(base, base_ids, out, expert, anti, base_vocab, SPECIALS, 1.5, mode, 8)
        assert torch.allclose(torch.softmax(scores, -1), torch.softmax(want, -1), atol=1e-5)
        out.append(token)


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_a_zero_offset_is_the_base_alone(tiny_models, other_pair, mode):
    prompts = cross_prompts(6, seed=7)
    models = cross_models(tiny_models, other_pair, mode, alpha=0.0)
    alone = models.with_base(models.base)
    same_pair = load_proxy_models(
        proxy_setup(
            tiny_models["base"],
            experts=[str(other_pair["expert"])],
            anti_experts=[str(other_pair["expert"])],
            formats=RAW,
            cross_tokenizer=mode,
        )
    )
    for sampling in (SamplingConfig(), SamplingConfig(temperature=1.2, top_p=0.9, seed=4)):
        want = [c.token_ids for c in complete(alone, prompts, max_new_tokens=8, sampling=sampling)]
        assert [c.token_ids for c in complete(models, prompts, max_new_tokens=8, sampling=sampling)] == want
        assert [c.token_ids for c in complete(same_pair, prompts, max_new_tokens=8, sampling=sampling)] == want


@pytest.fixture(scope="module")
def byte_models(tmp_path_factory):
    """Models on a tokenizer without merges (every byte a token): the base's path is always the pair's
    canonical tokenization, so across-tokenizer scoring must give today's token-by-token scores."""
    root = tmp_path_factory.mktemp("bytes")
    tokenizer = lambda: build_tokenizer(vocab_size=260)  # noqa: E731 (256 bytes + 4 specials)
    return {
        name: save_model(root / name, seed=seed, tokenizer=tokenizer()) for name, seed in [("b", 1), ("e", 2), ("a", 3)]
    }


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_identical_tokenizers_through_the_cross_path_equal_same_tokenizer_decoding(byte_models, mode):
    def models(cross, **kwargs):
        return load_proxy_models(
            proxy_setup(
                byte_models["b"],
                experts=[str(byte_models["e"])],
                anti_experts=[str(byte_models["a"])],
                alphas=[1.5],
                formats=RAW,
                cross_tokenizer=cross,
                **kwargs,
            )
        )

    prompts = cross_prompts(8, seed=11)
    same = [c.token_ids for c in complete(models("off"), prompts, max_new_tokens=10)]
    across = models(mode, cross_top_k=260)  # the candidate set is every token: the same set as today's
    assert [c.token_ids for c in complete(across, prompts, max_new_tokens=10)] == same


def test_a_pair_whose_members_differ_is_one_clear_error(tiny_models, other_pair):
    with pytest.raises(ProxyToolError, match="the experts and anti-experts must share one tokenizer"):
        load_proxy_models(
            proxy_setup(
                tiny_models["base"], experts=[str(other_pair["expert"])], anti_experts=[str(tiny_models["anti"])]
            )
        )


def test_cross_tokenizer_off_refuses_other_tokenizers(tiny_models, other_pair):
    with pytest.raises(ProxyToolError, match="--cross-tokenizer auto steers across tokenizers"):
        cross_models(tiny_models, other_pair, "off")


def test_auto_steers_across_tokenizers_when_they_differ(tiny_models, other_pair):
    models = cross_models(tiny_models, other_pair, "auto")
    assert models.pairs[0].expert.source.mode == "fast" and len(models.tokenizer) == 320  # the base's


def test_decode_command_across_tokenizers_and_its_errors(tiny_models, other_pair, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Who leads the poll?\ncafé 日本\n")
    out, trace = tmp_path / "out.jsonl", tmp_path / "trace.jsonl"
    common = ["--base", tiny_models["base"], "--expert", other_pair["expert"], "--anti-expert", other_pair["anti"]]
    code, _, err = run_cli(
        "decode", "--prompts", prompts, "--output", out, "--max-new-tokens", "4", "--trace", trace, *common
    )
    assert code == 0, err
    assert len(out.read_text().splitlines()) == 2 and trace.read_text()
    code, _, err = run_cli(
        "decode", "--prompts", prompts, "--output", tmp_path / "o2.jsonl", "--cross-tokenizer", "bytes", *common
    )
    assert code == 2 and "--cross-tokenizer must be one of auto, off, fast, exact (got 'bytes')" in err
    assert not (tmp_path / "o2.jsonl").exists()
    code, _, err = run_cli(
        "decode", "--prompts", prompts, "--output", tmp_path / "o3.jsonl", "--speculative", "2", *common
    )
    assert code == 2 and "across tokenizers" in err


@pytest.fixture(scope="module")
def served_base(tiny_models):
    """``proxytool serve`` on the tiny base alone: a remote base whose tokenizer the pair does not share."""
    from proxytool.serving.app import ServerConfig
    from proxytool.serving.server import BackgroundServer

    base = load_proxy_models(proxy_setup(tiny_models["base"], overlap="off"))
    with BackgroundServer(base, ServerConfig(model_name="tiny-base", max_logprobs=100)) as server:
        server.url += "/v1"
        yield server


def remote_cross(tiny_models, other_pair, url, alpha, mode="auto", anti="anti"):
    return load_proxy_models(
        proxy_setup(
            url,
            experts=[str(other_pair["expert"])],
            anti_experts=[str(other_pair[anti])],
            alphas=[alpha],
            formats=RAW,
            cross_tokenizer=mode,
            base_tokenizer=str(tiny_models["base"]),
            remote_top_k=20,
            remote_lookahead=4,
        )
    )


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_a_remote_base_across_tokenizers_equals_the_local_base(tiny_models, other_pair, served_base, mode):
    """Through proxytool serve (ids), α = 0 and expert == anti give the server's own greedy tokens, and
    steering equals the reference with the base's top-K log-probabilities (-inf elsewhere)."""
    prompts = cross_prompts(4, seed=13)
    local = cross_models(tiny_models, other_pair, mode, alpha=0.0)
    want = [c.token_ids for c in complete(local.with_base(local.base), prompts, max_new_tokens=8)]
    for alpha, anti in ((0.0, "anti"), (1.5, "expert")):
        models = remote_cross(tiny_models, other_pair, served_base.url, alpha, mode, anti)
        assert models.base.source.guess_length == 0 and models.base.source.extra_top == 0
        assert [c.token_ids for c in complete(models, prompts, max_new_tokens=8)] == want
    steered = remote_cross(tiny_models, other_pair, served_base.url, 1.5, mode)
    for prompt in prompts:
        got = complete(steered, [prompt], max_new_tokens=6)[0].token_ids
        base, base_ids, expert, anti, base_vocab = references(tiny_models, other_pair, prompt)
        args = (base, base_ids, expert, anti, base_vocab, SPECIALS, 1.5, mode, 20, 6)
        assert got == reference_greedy(*args, remote_top_k=20), prompt


def test_a_string_keyed_remote_base_across_tokenizers_is_the_base_at_zero_offset(tiny_models, other_pair):
    """llama.cpp's way (text prompts, log-probs keyed by token strings): α = 0 gives the server's greedy
    tokens among the strings it can name."""
    from reference import tokenizer_of
    from remote_fake import FakeServer
    from test_remote import reference_topk_greedy

    tokenizer = tokenizer_of(tiny_models["base"])
    pieces = [tokenizer.decode([i]) for i in range(len(tokenizer))]
    shared = {i for i, p in enumerate(pieces) if pieces.count(p) > 1}
    prompt = "The poll of likely"
    with FakeServer(load(tiny_models["base"]), tokenizer, text_only="llama-cpp-python") as server:
        models = remote_cross(tiny_models, other_pair, server.url, 0.0)
        assert models.base.source.text_prompts
        got = complete(models, [prompt], max_new_tokens=8)[0].token_ids
    ids = tokenizer(prompt)["input_ids"]
    assert got == reference_topk_greedy(load(tiny_models["base"]), [], ids, 20, 8, tokenizer, dropped=shared)


def test_a_remote_base_of_another_tokenizer_without_base_tokenizer_is_one_clear_error(
    tiny_models, other_pair, served_base
):
    with pytest.raises(ProxyToolError, match="different tokenizer"):
        load_proxy_models(
            proxy_setup(served_base.url, experts=[str(other_pair["expert"])], anti_experts=[str(other_pair["anti"])])
        )


def test_teacher_forced_scoring_across_tokenizers_is_one_clear_error(tiny_models, other_pair):
    from proxytool.decoding.scoring import continuation_logprobs, prompt_logprobs

    models = cross_models(tiny_models, other_pair, "fast")
    with pytest.raises(ProxyToolError, match="not available across tokenizers"):
        continuation_logprobs(models, ["The poll"], [[5, 6]])
    with pytest.raises(ProxyToolError, match="not available across tokenizers"):
        prompt_logprobs(models, ["The poll"])


def test_several_weighted_pairs_add_their_offsets(tiny_models, other_pair):
    """1.5 (e − a) + 0.5 (a − e) is 1.0 (e − a): two pairs across tokenizers equal the one pair."""
    expert, anti = str(other_pair["expert"]), str(other_pair["anti"])
    two = load_proxy_models(
        proxy_setup(
            tiny_models["base"],
            experts=[expert, anti],
            anti_experts=[anti, expert],
            alphas=[1.5, 0.5],
            formats=RAW,
        )
    )
    one = cross_models(tiny_models, other_pair, "fast", alpha=1.0)
    prompts = cross_prompts(6, seed=17)
    stop = ["ll"]
    assert [c.text for c in complete(two, prompts, max_new_tokens=8, stop=stop)] == [
        c.text for c in complete(one, prompts, max_new_tokens=8, stop=stop)
    ]


def test_a_pair_member_alone_decodes_in_its_own_tokens(tiny_models, other_pair):
    """eval's expert system across tokenizers: the expert alone, with its own tokenizer and EOS."""
    models = cross_models(tiny_models, other_pair, "fast")
    alone = models.with_base(models.pairs[0].expert)
    own = load_proxy_models(proxy_setup(other_pair["expert"], formats=RAW))
    prompts = cross_prompts(4, seed=19)
    assert len(alone.tokenizer) == 300 and alone.eos_ids == own.eos_ids
    assert [c.token_ids for c in complete(alone, prompts, max_new_tokens=8)] == [
        c.token_ids for c in complete(own, prompts, max_new_tokens=8)
    ]
