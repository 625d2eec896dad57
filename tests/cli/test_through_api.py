"""`eval` and `bench` load their models through the public API (`ProxyTuned.from_setup`), as decode, chat
and serve do: one way in. Bench's `reference` mode is the paper's loop over plain models and stays apart."""

import json
import subprocess
from types import SimpleNamespace

import pytest
from cli_runner import run_cli

from proxytool.api import ProxyTuned
from proxytool.decoding import speed


@pytest.fixture
def from_setup_calls(monkeypatch):
    """Every setup ``ProxyTuned.from_setup`` is asked to load, in order (it still loads them)."""
    calls = []
    original = ProxyTuned.from_setup.__func__

    def counted(cls, setup):
        calls.append(getattr(setup, "setup", setup))  # a ResolvedSetup carries the ProxySetup it resolved
        return original(cls, setup)

    monkeypatch.setattr(ProxyTuned, "from_setup", classmethod(counted))
    return calls


def test_eval_loads_the_proxy_and_the_direct_model_through_the_api(tiny_models, tmp_path, from_setup_calls):
    t = tiny_models
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"id": q, "question": f"{q}: how many?", "answer": "8"}) + "\n" for q in "AB"))
    code, _, err = run_cli(
        "eval", "--task", data, "--base", t["base"], "--expert", t["expert"], "--anti-expert", t["anti"],
        "--direct", t["expert"], "--max-new-tokens", "2", "--output", tmp_path / "run", "--device", "cpu",
        "--threads", "1",
    )  # fmt: skip
    assert code == 0, err
    assert [(s.base, list(s.experts)) for s in from_setup_calls] == [
        (str(t["base"]), [str(t["expert"])]),  # base, expert and anti-expert: one load
        (str(t["expert"]), []),  # the directly tuned model, alone
    ]
    assert set(json.loads((tmp_path / "run" / "report.json").read_text())["systems"]) == {
        "base",
        "expert",
        "proxy",
        "direct",
    }


def test_bench_modes_load_through_the_api_and_the_reference_loop_does_not(
    tiny_models, tmp_path, from_setup_calls, monkeypatch
):
    """Each run's child process is run in this process (the same ``speed.child`` with the payload the
    CLI built), so the counted ``from_setup`` sees what the children load."""
    children = []

    def in_process(argv, **kwargs):
        assert argv[1:3] == ["-m", "proxytool.decoding.speed"]
        children.append(json.loads(argv[3]))
        speed.child(argv[3])
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(speed, "subprocess", SimpleNamespace(run=in_process))
    out = tmp_path / "bench.json"
    t = tiny_models
    code, _, err = run_cli(
        "bench", "--base", t["base"], "--expert", t["expert"], "--anti-expert", t["anti"], "--batch-sizes", "1",
        "--modes", "base,proxy,reference", "--new-tokens", "3", "--prompt-tokens", "4", "--repeats", "1",
        "--device", "cpu", "--threads", "1", "--output", out,
    )  # fmt: skip
    assert code == 0, err
    assert [c["loader"] for c in children] == ["proxytool.api.tuned:load_models"] * 3
    # base alone (for transformers' generate) and the proxy through the API; the reference loop loads apart
    assert [list(s.experts) for s in from_setup_calls] == [[], [str(t["expert"])]]
    report = json.loads(out.read_text())
    assert report["agreement"] == [{"batch": 1, "proxy_vs_reference": [1, 1]}]


def test_the_engine_loader_stays_the_library_default():
    """`speed.run` and `run_prepared` used as a library (benchmarks, tests) load with the engine's function."""
    import inspect

    from proxytool.decoding.setup import load_proxy_models
    from proxytool.evaluation.evaluate import run_prepared

    assert inspect.signature(run_prepared).parameters["load"].default is load_proxy_models
    assert speed._imported(inspect.signature(speed.run).parameters["loader"].default) is load_proxy_models
