"""Smoke runs of benchmarks/ and examples/ on tiny models: the Python scripts in-process (default suite),
the shell scripts as written, with the docs' stand-ins (opt-in: `pytest -m scripts`, minutes)."""

import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from docs_check import REPO
from stand_ins import build_world, register_models
from tiny import save_adapter


def run_script(path: str, *args: str) -> None:
    """Run a repository script's ``__main__`` in this process with ``args`` as its command line."""
    argv = sys.argv
    sys.argv = [path, *args]
    try:
        runpy.run_path(str(REPO / path), run_name="__main__")
    finally:
        sys.argv = argv


def test_make_random_models_lora_only_needs_no_tokenizer(tiny_models, tmp_path):
    """cpu_qwen.sh's first step (issue 24: it stopped at '--tokenizer is required')."""
    out = tmp_path / "lora"
    run_script(
        "benchmarks/make_random_models.py", "--lora-only", "--small", str(tiny_models["anti"]), "--out", str(out)
    )
    assert (out / "adapter_config.json").is_file()
    with pytest.raises(SystemExit):  # without --lora-only the tokenizer is still required
        run_script("benchmarks/make_random_models.py", "--out", str(tmp_path / "x"))


def test_serve_load_tiny(capsys):
    run_script("benchmarks/serve_load.py", "--tiny", "--threads", "1", "--requests", "1", "--max-tokens", "2")
    assert "| 16 | 16 |" in capsys.readouterr().out  # 16 clients, one request each


def test_speculative_cpu(tiny_models, tmp_path, capsys):
    expert = save_adapter(tmp_path / "expert", tiny_models["anti"], seed=5)  # records its base
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "The answer is"}\n{"prompt": "def add(a, b):"}\n')
    run_script(
        "benchmarks/speculative_cpu.py",
        *("--base", str(tiny_models["base"]), "--expert", str(expert), "--prompts", str(prompts)),
        *("--n-prompts", "1", "--new-tokens", "4", "--threads", "1", "--ks", "1,2", "--time-ks", "2"),
    )
    assert '"tokens_per_round"' in capsys.readouterr().out


def test_step_overhead(tiny_models, capsys):
    import json

    t = tiny_models
    run_script(
        "benchmarks/step_overhead.py",
        *("--base", str(t["base"]), "--expert", str(t["expert"]), "--anti-expert", str(t["anti"])),
        *("--batch-sizes", "1,2", "--new-tokens", "4", "--threads", "1", "--json"),
    )
    report = json.loads(capsys.readouterr().out)
    assert [r["batch"] for r in report["results"]] == [1, 2]
    for r in report["results"]:
        assert 0 < r["forward_ms_per_step"] < r["ms_per_step"] and 0 < r["overhead_pct"] < 100


def test_dtype_agreement(tiny_models, tmp_path, capsys):
    import json

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "The answer is"}\n{"prompt": "def add(a, b):"}\n')
    t = tiny_models
    run_script(
        "benchmarks/dtype_agreement.py",
        *("--base", str(t["base"]), "--expert", str(t["expert"]), "--anti-expert", str(t["anti"])),
        *("--prompts", str(prompts), "--new-tokens", "4", "--threads", "1", "--json"),
    )
    report = json.loads(capsys.readouterr().out)
    assert report["prompts"] == 2 and 0 <= report["identical_rows"] <= 2 and len(report["first_difference"]) == 2


# ------------------------------------------------------------------ shell scripts (opt-in)


@pytest.fixture
def script_world(tmp_path, tiny_models, monkeypatch):
    """A working folder with the docs' stand-ins, the repository's scripts, and `proxytool` on PATH."""
    models = build_world(tmp_path, tiny_models)
    work = tmp_path / "repo"
    for folder in ("benchmarks", "examples"):
        (work / folder).symlink_to(REPO / folder)
    home = tmp_path / "home"
    monkeypatch.setenv("PROXYTOOL_HOME", str(home))
    register_models(models)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": sys.executable}
    env |= {"PYTHONPATH": str(REPO / "tests"), "OMP_NUM_THREADS": "1", "THREADS": "1"}
    return work, env


def _bash(script: str, work: Path, env: dict, *args: str) -> str:
    done = subprocess.run(["bash", script, *args], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{script} exited {done.returncode}\n{done.stderr[-4000:]}"
    return done.stdout


@pytest.mark.scripts
def test_cpu_qwen_sh(script_world):
    work, env = script_world
    _bash("benchmarks/cpu_qwen.sh", work, {**env, "NEW_TOKENS": "2", "REPEATS": "1"}, "runs/bench")
    assert len(list((work / "runs/bench").glob("cpu_*.json"))) == 5


@pytest.mark.scripts
def test_polls_demo_sh(script_world):
    work, env = script_world
    csv = work.parent / "shared/data/polls/538_2024_forecast_poll_list.csv"
    shutil.rmtree(work / "work/polls-demo")
    out = _bash("examples/polls_demo.sh", work, env, str(csv))
    assert (work / "runs/demo/eval-polls/report.md").is_file(), out


@pytest.mark.scripts
def test_gpu_all_sh_on_tiny_shapes(script_world, tiny_models):
    """The one-rental GPU script, end to end on the CPU with tiny shapes (no compile, no NF4 on CPU)."""
    work, env = script_world
    tiny = {"BASE": "tiny", "SMALL": "tiny", "DEVICE": "cpu", "DTYPE": "float32", "NEW_TOKENS": "3"}
    out = _bash(
        "benchmarks/gpu_all.sh",
        work,
        {**env, **tiny, "REPEATS": "1", "COMPILE": "off"},
        str(tiny_models["base"]),
        "runs/gpu",
    )
    table = (work / "runs/gpu/table.md").read_text()
    assert "| static_k2 | float32, " in table and "static cache, compile off" in table, out
    assert "speculative k=4" in table, out


@pytest.mark.scripts
def test_cpu_reference_sh(script_world):
    """Every shape of the grid against the paper's loop; proxytool's tokens equal the reference's."""
    work, env = script_world
    grid = {"BATCHES": "1 2", "DTYPES": "float32", "PROMPTS": "8", "THREAD_COUNTS": "1", "NEW_TOKENS": "3"}
    out = _bash("benchmarks/cpu_reference.sh", work, {**env, **grid, "REPEATS": "1"}, "runs/ref")
    assert sorted(p.name for p in (work / "runs/ref").glob("*_t1.json")) == [
        "lora_float32_p8_t1.json",
        "separate_float32_p8_t1.json",
    ]
    proxy_rows = [line for line in out.splitlines() if "| proxy |" in line]
    assert len(proxy_rows) == 4 and all("| 1/1 |" in r or "| 2/2 |" in r for r in proxy_rows), out
