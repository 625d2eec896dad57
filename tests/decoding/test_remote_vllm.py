"""Opt-in: a real vLLM as the remote base (marker ``remote_vllm``).

Start the server and run these in one command (docs/remote.md):
    bash benchmarks/vllm_cpu.sh qwen2.5-coder-0.5b-instruct pytest -m remote_vllm tests/decoding/test_remote_vllm.py -s
The script sets PROXYTOOL_VLLM_URL (``http://127.0.0.1:PORT/v1#NAME``). The tests get an empty registry of
their own, so name models by folder:
- PROXYTOOL_VLLM_PAIR: the small model (same tokenizer as the served base); default PROXYTOOL_VLLM_LOCAL_BASE;
- PROXYTOOL_VLLM_LOCAL_BASE: the folder vLLM serves, loaded here in fp32 for the comparison;
- PROXYTOOL_VLLM_EXPERT: an expert on the pair (a LoRA checkpoint), for the steered comparison.
"""

import os

import pytest

pytestmark = pytest.mark.remote_vllm

URL = os.environ.get("PROXYTOOL_VLLM_URL", "")
LOCAL_BASE = os.environ.get("PROXYTOOL_VLLM_LOCAL_BASE")
PAIR = os.environ.get("PROXYTOOL_VLLM_PAIR", LOCAL_BASE)
EXPERT = os.environ.get("PROXYTOOL_VLLM_EXPERT")
TEXTS = [
    "def fibonacci(n):\n    ",
    "The poll of likely voters in Pennsylvania shows",
    "Question: Janet has 3 apples and buys 5 more. How many apples does she have?\nAnswer:",
    "import numpy as np\n\n# a 3x3 identity matrix\n",
    "Harris and Trump are tied in the latest national",
    "SELECT name, COUNT(*) FROM polls",
]
NEW_TOKENS = 24
TOP_K = 20

if not (URL and PAIR):
    pytest.skip("needs PROXYTOOL_VLLM_URL and PROXYTOOL_VLLM_LOCAL_BASE (docs/remote.md)", allow_module_level=True)


@pytest.fixture(scope="module")
def prompts():
    from transformers import AutoTokenizer

    from proxytool.decoding.formats import TokenPrompt

    tokenizer = AutoTokenizer.from_pretrained(PAIR)
    return [TokenPrompt(tuple(tokenizer(t)["input_ids"])) for t in TEXTS]


def vllm_greedy(prompt) -> list[int]:
    """vLLM's own greedy completion of the token-id prompt, as token ids."""
    import httpx

    root, _, model = URL.partition("#")
    body = {
        "model": model,
        "prompt": list(prompt.ids),
        "max_tokens": NEW_TOKENS,
        "temperature": 0,
        "logprobs": 0,
        "return_tokens_as_token_ids": True,
    }
    reply = httpx.post(root + "/completions", json=body, timeout=600)
    reply.raise_for_status()
    return [int(t.removeprefix("token_id:")) for t in reply.json()["choices"][0]["logprobs"]["tokens"]]


def remote(expert: str, anti: str, lookahead: int):
    from proxytool import ProxyTuned

    return ProxyTuned.from_pretrained(
        URL, expert=expert, anti_expert=anti, dtype="float32", device="cpu", remote_top_k=TOP_K,
        remote_lookahead=lookahead,
    )  # fmt: skip


@pytest.mark.parametrize("lookahead", [0, 8])
def test_expert_equal_to_anti_expert_gives_vllms_own_greedy(prompts, lookahead):
    tuned = remote(PAIR, PAIR, lookahead)
    ours = tuned.generate(prompts, max_new_tokens=NEW_TOKENS)
    theirs = [vllm_greedy(p) for p in prompts]
    tokens = sum(len(g.token_ids) for g in ours)
    requests, retries = tuned.models.base.source.calls()
    print(f"\nlookahead {lookahead}: {tokens} tokens in {requests} calls ({retries} retries)")
    assert [g.token_ids for g in ours] == theirs
    if lookahead:
        assert requests < tokens  # the server's greedy path is reused


@pytest.mark.skipif(not (EXPERT and LOCAL_BASE), reason="needs PROXYTOOL_VLLM_EXPERT and PROXYTOOL_VLLM_LOCAL_BASE")
def test_steered_through_vllm_equals_the_base_loaded_here_where_the_top_k_covers_the_choice(prompts):
    """Proxy-tuned greedy through vLLM (the base's top K) == proxytool with the same base in this process (its
    full vocabulary), until a step where the local choice lies outside the base's top K (the remote proxy
    cannot pick it) or where the local proxy's best two tokens are closer than vLLM's and transformers'
    numerics (a near tie). Any other difference fails. Prints how many rows part, and why."""
    from proxytool import ProxyTuned
    from proxytool.decoding.formats import TokenPrompt

    ours = remote(EXPERT, PAIR, lookahead=8).generate(prompts, max_new_tokens=NEW_TOKENS)
    local = ProxyTuned.from_pretrained(LOCAL_BASE, expert=EXPERT, anti_expert=PAIR, dtype="float32", device="cpu")
    reference = local.generate(prompts, max_new_tokens=NEW_TOKENS)
    reasons = []
    for prompt, got, want in zip(prompts, ours, reference):
        if got.token_ids == want.token_ids:
            reasons.append("equal")
            continue
        at = next(i for i, (a, b) in enumerate(zip(got.token_ids + [-1], want.token_ids + [-1])) if a != b)
        step = local.next_token_scores(TokenPrompt(prompt.ids + tuple(want.token_ids[:at])))
        choice = want.token_ids[at]
        base_top = set(step.logits["base"][0].topk(TOP_K).indices.tolist())
        best_two = step.scores[0].topk(2).values.tolist()
        if choice not in base_top:
            reasons.append(f"outside the top {TOP_K} at token {at}")
        elif best_two[0] - best_two[1] < 1e-2:
            reasons.append(f"near tie at token {at} (margin {best_two[0] - best_two[1]:.1e})")
        else:
            paths = f"vLLM path {got.token_ids[at : at + 3]}, local {want.token_ids[at : at + 3]}"
            reasons.append(f"DIFFERENT at token {at}: {paths}")
    print("\n" + "\n".join(f"row {i}: {r}" for i, r in enumerate(reasons)))
    assert not [r for r in reasons if r.startswith("DIFFERENT")]
    assert reasons.count("equal") >= len(prompts) // 2  # a broken remote path would part almost everywhere
