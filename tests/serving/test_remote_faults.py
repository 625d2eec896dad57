"""`proxytool decode --base http://…` through a fault-injecting proxy in front of a real `proxytool serve`.

Every run either writes exactly the fault-free rows (a fault that passes is retried) or stops with one
line and exit code 1, keeping only complete rows, and the same command then resumes to the fault-free file.
"""

import json
import time

import httpx
import pytest
from cli_runner import run_cli
from fault_proxy import KINDS, Fault, FaultProxy

from proxytool.decoding.setup import LoadingOptions, ProxySetup, load_proxy_models

PROMPTS = [{"id": f"q{i}", "prompt": f"The poll of {i} likely voters"} for i in range(3)]
FIRST_FAULTY_CALL = 4  # after the connection probe and a few decoding calls


@pytest.fixture(scope="module")
def upstream(tiny_models):
    """`proxytool serve` on the tiny base alone: the remote base."""
    from proxytool.serving.app import ServerConfig
    from proxytool.serving.server import BackgroundServer

    base = load_proxy_models(ProxySetup(base=str(tiny_models["base"]), loading=LoadingOptions(overlap="off")))
    with BackgroundServer(base, ServerConfig(model_name="tiny-base", max_logprobs=1000)) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(upstream, tiny_models):
    from reference import tokenizer_of

    with FaultProxy(upstream.url, len(tokenizer_of(tiny_models["base"]))) as running:
        yield running


@pytest.fixture
def no_sleep(monkeypatch):
    monkeypatch.setattr("proxytool.models.remote_client.sleep", lambda seconds: None)


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "p.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return path


def decode(tiny_models, proxy, prompts_file, output, *extra):
    return run_cli(
        "decode", "--prompts", prompts_file, "--output", output, "--base", proxy.url + "#tiny-base",
        "--expert", tiny_models["expert"], "--anti-expert", tiny_models["anti"], "--alpha", "1.5",
        "--max-new-tokens", 6, "--batch-size", 1, "--threads", 1, "--remote-top-k", 5,
        "--remote-lookahead", 3, *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def fault_free(tiny_models, proxy, prompts_file, tmp_path_factory):
    proxy.fault = None
    output = tmp_path_factory.mktemp("clean") / "out.jsonl"
    code, _, err = decode(tiny_models, proxy, prompts_file, output)
    assert code == 0, err
    return output.read_text()


@pytest.mark.parametrize("kind", KINDS)
def test_a_passing_fault_is_retried_and_changes_nothing(
    tiny_models, proxy, prompts_file, fault_free, tmp_path, kind, no_sleep
):
    proxy.fault, proxy.calls = Fault(kind, FIRST_FAULTY_CALL), 0
    output = tmp_path / "out.jsonl"
    code, _, err = decode(tiny_models, proxy, prompts_file, output)
    assert proxy.calls > FIRST_FAULTY_CALL  # the fault was served
    assert code == 0, err
    assert output.read_text() == fault_free


@pytest.mark.parametrize("kind", KINDS)
def test_a_lasting_fault_stops_in_one_line_and_the_rows_resume(
    tiny_models, proxy, prompts_file, fault_free, tmp_path, kind, no_sleep
):
    proxy.fault, proxy.calls = Fault(kind, FIRST_FAULTY_CALL, count=None), 0
    output = tmp_path / "out.jsonl"
    code, _, err = decode(tiny_models, proxy, prompts_file, output)
    lines = err.strip().splitlines()
    assert code == 1 and lines[-1].startswith("error:") and "Traceback" not in err, err
    assert "remote base" in lines[-1]
    part = output.with_name(output.name + ".part")
    assert not output.exists() and fault_free.startswith(part.read_text())  # complete rows only
    proxy.fault = None
    code, _, err = decode(tiny_models, proxy, prompts_file, output)
    assert code == 0, err
    assert output.read_text() == fault_free


def test_resuming_with_other_remote_settings_is_refused(tiny_models, proxy, prompts_file, tmp_path, no_sleep):
    proxy.fault, proxy.calls = Fault("503", FIRST_FAULTY_CALL, count=None), 0
    output = tmp_path / "out.jsonl"
    assert decode(tiny_models, proxy, prompts_file, output)[0] == 1
    proxy.fault = None
    for flag, value, setting in [
        ("--remote-top-k", 7, "remote.top_k"),
        ("--remote-extra", 2, "remote.extra"),
        ("--remote-draft", "base", "remote.draft"),
    ]:
        code, _, err = decode(tiny_models, proxy, prompts_file, output, flag, value)
        assert code == 2 and setting in err.strip().splitlines()[-1], err


def test_a_client_that_leaves_stops_the_upstream_calls(tiny_models, proxy):
    """serve over a remote base: a non-streaming request whose client goes away is cancelled, and the
    upstream gets (almost) no more calls; /health counts it as cancelled."""
    from proxytool.serving.app import ServerConfig
    from proxytool.serving.server import BackgroundServer

    proxy.fault, proxy.delay = None, 0.05
    setup = ProxySetup(
        base=proxy.url + "#tiny-base",
        experts=[str(tiny_models["expert"])],
        anti_experts=[str(tiny_models["anti"])],
        loading=LoadingOptions(overlap="off", remote_top_k=5, remote_extra=0),
    )
    body = {"model": "steered", "prompt": "The poll", "max_tokens": 150, "ignore_eos": True, "temperature": 0}
    try:
        with BackgroundServer(load_proxy_models(setup), ServerConfig(model_name="steered")) as server:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(server.url + "/v1/completions", json=body, timeout=1.0)
            left = proxy.calls
            deadline = time.monotonic() + 10
            while server.scheduler.stats.active_rows and time.monotonic() < deadline:
                time.sleep(0.05)
            health = httpx.get(server.url + "/health").json()
            assert health["active_rows"] == 0 and health["cancelled"] == 1, health
            assert proxy.calls - left <= 20  # what a step or two and the poll interval allow, not the 150 tokens
            assert health["tokens_generated"] < 100
    finally:
        proxy.delay = 0.0
