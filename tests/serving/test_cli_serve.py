"""`proxytool serve` as a real process: every flag, a request, a clean stop."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from cli_runner import run_cli

from proxytool.serving.server import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_serve_command(tiny_models, tmp_path):
    port = free_port()
    args = [
        sys.executable, "-m", "proxytool", "serve",
        "--base", str(tiny_models["base"]), "--expert", str(tiny_models["expert"]),
        "--anti-expert", str(tiny_models["anti"]), "--alpha", "0.5",
        "--host", "127.0.0.1", "--port", str(port), "--api-key", "k", "--model-name", "tiny",
        "--max-batch", "2", "--max-queue", "2", "--max-body", "2048", "--threads", "1",
        "--allowed-hosts", "box.lan", "--cors-origin", "http://localhost:3000", "--shutdown-grace", "1",
        "--batching", "separate",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url, headers = f"http://127.0.0.1:{port}", {"Authorization": "Bearer k"}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {"model": "tiny", "prompt": "Hello", "max_tokens": 3, "temperature": 0}
        reply = httpx.post(url + "/v1/completions", json=body, headers=headers, timeout=30)
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] == 3
        assert httpx.post(url + "/v1/completions", json=body, timeout=30).status_code == 401
        big = {**body, "prompt": "x" * 4000}
        assert httpx.post(url + "/v1/completions", json=big, headers=headers, timeout=30).status_code == 413
        assert "proxytool" in httpx.get(url + "/", timeout=5).text
        health = httpx.get(url + "/health", headers={"host": "box.lan"}, timeout=5)
        assert health.status_code == 200 and health.json()["batching"] == "separate"
        preflight = {"origin": "http://localhost:3000", "access-control-request-method": "POST"}
        assert httpx.options(url + "/v1/completions", headers=preflight, timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -signal.SIGINT, 130), proc.stdout.read()


def test_an_unknown_batching_mode_stops_before_any_model_loads(tiny_models):
    code, _, err = run_cli("serve", "--base", str(tiny_models["base"]), "--batching", "sometimes", "--port", "1")
    assert code == 2
    assert err.strip().splitlines() == ["error: --batching must be one of continuous, separate (got 'sometimes')"]
