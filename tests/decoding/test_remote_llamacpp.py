"""Opt-in: a real third-party server (llama-cpp-python's) as the remote base.

Run with a server already up (docs/remote.md has the commands):
    PROXYTOOL_LLAMACPP_URL=http://127.0.0.1:8932/v1 pytest -m remote_llamacpp tests/decoding/test_remote_llamacpp.py
PROXYTOOL_LLAMACPP_PAIR must then be a model folder (the tests get an empty registry of their own), e.g.
~/.cache/proxytool/gguf/qwen2.5-coder-0.5b-instruct-1d9614638d18024d (the converted 0.5B).
The local pair is qwen2.5-coder-0.5b-instruct twice (α has no effect: expert == anti-expert), so the
proxy must reproduce the server's own greedy completion, through text prompts and string keys.
"""

import os

import pytest

pytestmark = pytest.mark.remote_llamacpp

URL = os.environ.get("PROXYTOOL_LLAMACPP_URL")
SMALL = os.environ.get("PROXYTOOL_LLAMACPP_PAIR", "qwen2.5-coder-0.5b-instruct")


@pytest.mark.skipif(not URL, reason="set PROXYTOOL_LLAMACPP_URL to a llama-cpp-python server's /v1")
def test_llamacpp_base_alone_reproduces_the_servers_greedy_completion():
    import httpx

    from proxytool.decoding.generate import complete
    from proxytool.decoding.setup import LoadingOptions, ProxySetup, load_proxy_models

    loading = LoadingOptions(base_format="raw", remote_lookahead=8)
    models = load_proxy_models(ProxySetup(base=URL, experts=[SMALL], anti_experts=[SMALL], loading=loading))
    assert models.base.source.text_prompts  # llama-cpp-python takes text only
    prompt = "def fibonacci(n):\n    "
    ours = complete(models, [prompt], max_new_tokens=16)[0]
    reply = httpx.post(
        URL + "/completions", json={"prompt": prompt, "max_tokens": 16, "temperature": 0}, timeout=300
    ).json()
    assert ours.text == reply["choices"][0]["text"]
