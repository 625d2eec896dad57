"""Safe on a workstation with a browser open, and clean to start and stop: Host and Content-Type
checks, CORS closed unless opened, a port in use found before loading, 503s after the shutdown grace."""

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from cli_runner import run_cli

BODY = {"model": "tiny", "prompt": "Hello", "max_tokens": 2}


def test_a_simple_cross_site_post_is_refused(server):
    url = server.url + "/v1/completions"
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"content-type": content_type} if content_type else {}
        reply = httpx.post(url, content=json.dumps(BODY).encode(), headers=headers)
        assert reply.status_code == 415 and reply.json()["error"]["param"] == "content-type", reply.text
    assert httpx.post(url, json=BODY, timeout=30).status_code == 200


def test_foreign_host_headers_are_refused(server):
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.nip.io"):
        assert httpx.get(server.url + "/v1/models", headers={"host": host}).status_code == 400
    for host in ("127.0.0.1", "localhost", f"localhost:{server.port}"):
        assert httpx.get(server.url + "/v1/models", headers={"host": host}).status_code == 200


def test_allowed_hosts_and_cors_are_opened_by_flags(proxy_models):
    from proxytool.serving.app import ServerConfig
    from proxytool.serving.server import BackgroundServer

    origin = "http://localhost:3000"
    config = ServerConfig(model_name="tiny", allowed_hosts=("box.lan",), cors_origins=(origin,))
    with BackgroundServer(proxy_models, config) as running:
        assert httpx.get(running.url + "/v1/models", headers={"host": "box.lan"}).status_code == 200
        preflight = {"origin": origin, "access-control-request-method": "POST"}
        reply = httpx.options(running.url + "/v1/completions", headers=preflight)
        assert reply.headers["access-control-allow-origin"] == origin


def test_cors_is_closed_by_default(server):
    reply = httpx.get(server.url + "/v1/models", headers={"origin": "http://evil.example"})
    assert reply.status_code == 200 and "access-control-allow-origin" not in reply.headers


def test_a_port_in_use_is_reported_before_loading(tiny_models):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_cli("serve", "--base", "no-such-model-is-loaded", "--port", port)
        assert code == 2 or "no-such-model" in err  # the name is resolved first: a name error is fine too
        code, _, err = run_cli("serve", "--base", tiny_models["base"], "--port", port, "--threads", 1)
    line = err.strip().splitlines()[-1]
    assert code == 2 and line.startswith("error: cannot listen on 127.0.0.1:") and "--port" in line, err
    assert "loading" not in err


def test_open_requests_get_503_after_the_shutdown_grace(proxy_models):
    """A stream already answering gets an error event, a request still being prepared a JSON 503."""
    from proxytool.serving.app import ServerConfig
    from proxytool.serving.server import BackgroundServer

    release = threading.Event()
    stream_body = {**BODY, "max_tokens": 200, "ignore_eos": True, "stream": True}
    running = BackgroundServer(proxy_models, ServerConfig(model_name="tiny"), grace=0.5).__enter__()
    try:
        with (
            ThreadPoolExecutor(1) as pool,
            httpx.stream("POST", running.url + "/v1/completions", json=stream_body) as r,
        ):
            lines = r.iter_lines()
            first = next(line for line in lines if line)
            running.scheduler.call(lambda: release.wait(30))  # nothing moves until the grace is over
            plain = pool.submit(httpx.post, running.url + "/v1/completions", json=BODY, timeout=30)
            time.sleep(0.2)
            running.server.should_exit = True
            rest = [line for line in lines if line]
            reply = plain.result()
    finally:
        release.set()
        running.__exit__(None, None, None)
    assert first.startswith("data: {")
    assert rest[-1] == "data: [DONE]" and "shutting down" in json.loads(rest[-2][6:])["error"]["message"], rest[-3:]
    assert reply.status_code == 503 and "shutting down" in reply.json()["error"]["message"]


@pytest.mark.parametrize("url", ["http://", "http://[::1", "http://127.0.0.1:99999/v1", "ftp://example.com/v1"])
def test_a_malformed_base_url_is_a_usage_error_at_once(tiny_models, tmp_path, url):
    started = time.monotonic()
    code, _, err = run_cli(
        "decode", "--prompts", "-", "-o", tmp_path / "o.jsonl", "--base", url, "--expert", tiny_models["expert"],
        "--anti-expert", tiny_models["anti"], stdin="Hello\n",
    )  # fmt: skip
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: --base"), err
    assert time.monotonic() - started < 5 and not (tmp_path / "o.jsonl.part").exists()
