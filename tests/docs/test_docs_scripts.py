"""Smoke runs of benchmarks/ and examples/ on tiny models: the Python scripts in-process (default suite),
the shell scripts as written, with the docs' stand-ins (opt-in: `pytest -m scripts`, minutes)."""

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from docs_check import REPO
from stand_ins import build_world, register_models
from tiny import save_adapter

from proxytool.runtime import cpu_name


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


def test_serve_load_measures_a_running_server_with_extra_fields(tiny_models, tmp_path, capsys):
    """vllm_vs_serve.sh's client: --url, --model and --extra (a field every request carries)."""
    from proxytool.decoding.setup import LoadingOptions, ProxySetup, load_proxy_models
    from proxytool.serving.app import ServerConfig
    from proxytool.serving.server import BackgroundServer

    models = load_proxy_models(ProxySetup(base=str(tiny_models["base"]), loading=LoadingOptions(device="cpu")))
    with BackgroundServer(models, ServerConfig(model_name="base")) as server:
        run_script(
            "benchmarks/serve_load.py",
            *("--url", server.url + "/v1", "--model", "base", "--concurrency", "2", "--requests", "1"),
            *("--max-tokens", "3", "--extra", '{"seed": 7}', "--json", str(tmp_path / "r.json")),
        )
        with pytest.raises(httpx.HTTPStatusError, match="400"):  # the extra field reaches the server
            run_script("benchmarks/serve_load.py", "--url", server.url, "--model", "base", "--extra", '{"best_of": 2}')
    assert "| 2 | 2 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())[0]["tokens"] == 6


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


def test_interleaved_reference(tiny_models, capsys):
    import json

    t = tiny_models
    run_script(
        "benchmarks/interleaved_reference.py",
        *("--base", str(t["base"]), "--expert", str(t["expert"]), "--anti-expert", str(t["anti"])),
        *("--prompt-tokens", "6", "--tokens", "2", "--turns", "3", "--json"),
    )
    report = json.loads(capsys.readouterr().out)
    assert report["same_tokens"] and len(report["per_turn"]) == 3
    assert all(len(times) == 3 and min(times) > 0 for times in report["ms_per_step"].values())


def test_packed_steps(tiny_models, capsys):
    model = str(tiny_models["anti"])
    run_script("benchmarks/packed_steps.py", model, "--threads=1", "--rows=1,2", "--steps=2", "--layouts=on,transposed")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["layout"], r["rows"]) for r in lines] == [("on", 1), ("on", 2), ("transposed", 1), ("transposed", 2)]
    assert all(r["same_tokens"] and r["layout_ms"] > 0 for r in lines)


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


@pytest.mark.slow
def test_remote_calls(tiny_models, tmp_path, capsys):
    """A served tiny base steered by a local LoRA pair; "question" lines are asked as the evaluations ask."""
    from proxytool.decoding.setup import LoadingOptions, ProxySetup, load_proxy_models
    from proxytool.serving.server import BackgroundServer

    expert = save_adapter(tmp_path / "expert", tiny_models["anti"], seed=5)  # records its base: the anti-expert
    prompts = tmp_path / "q.jsonl"
    prompts.write_text('{"question": "Who leads the national poll?"}\n{"prompt": "The answer is"}\n')
    base = load_proxy_models(ProxySetup(base=str(tiny_models["base"]), loading=LoadingOptions(dtype="float32")))
    with BackgroundServer(base) as server:
        run_script(
            "benchmarks/remote_calls.py",
            *("--base", f"{server.url}/v1", "--expert", str(expert), "--prompts", str(prompts)),
            *("--new-tokens", "3", "--lookahead", "0,2"),
        )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    rows, summaries = [r for r in lines if "prompt" in r], [r for r in lines if "calls_per_token" in r]
    assert [(r["lookahead"], r["prompt"], r["tokens"]) for r in rows] == [(0, 0, 3), (0, 1, 3), (2, 0, 3), (2, 1, 3)]
    assert [(s["lookahead"], s["tokens"]) for s in summaries] == [(0, 6), (2, 6)], lines
    assert summaries[0]["calls"] == 6 and 0 < summaries[1]["calls"] <= 6, lines  # no lookahead: a call per token


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
    assert "| static_b1 | " in table and "static cache, compile off" in table, out
    assert "| static_b8 | " in table and "| eager | " in table and "speculative k=4" in table, out
    assert "failed" not in out and "skipped" not in out, out


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
    machine = [line for line in out.splitlines() if line.startswith("Machine: ")]
    assert machine and machine[0].startswith(f"Machine: {cpu_name()}, ") and " cores, " in machine[0], out


@pytest.mark.scripts
def test_gpu_random_sh_on_tiny_shapes(script_world, tiny_models):
    """The random-weights GPU benchmark, end to end on the CPU with tiny shapes (no NF4 run on a CPU)."""
    work, env = script_world
    tiny = {"BASE": "tiny", "SMALL": "tiny", "DEVICE": "cpu", "DTYPE": "float32", "NEW_TOKENS": "3", "REPEATS": "1"}
    out = _bash("benchmarks/gpu_random.sh", work, {**env, **tiny}, str(tiny_models["base"]), "runs/gpu-random")
    runs = work / "runs/gpu-random"
    modes = {
        path.name: {(r["mode"], r["batch"]) for r in json.loads(path.read_text())["results"]}
        for path in runs.glob("*.json")
    }
    both = {1, 8}
    assert modes.pop("gpu_baselines.json") == {(m, b) for m in ("base", "engine-base", "reference") for b in both}, out
    for k in (2, 4):
        assert modes.pop(f"gpu_speculative_k{k}.json") == {(m, b) for m in ("proxy", "speculative") for b in both}
    for share in ("share-weights", "no-share-weights"):
        for overlap in ("off", "on"):
            path = runs / f"gpu_proxy_{share}_overlap-{overlap}.json"
            loading = json.loads(path.read_text())["config"]["setup"]["loading"]
            assert (loading["share_weights"], loading["overlap"]) == (share == "share-weights", overlap)
            assert modes.pop(path.name) == {("proxy", b) for b in both}
    assert modes == {}  # no NF4 run on a CPU
    assert (runs / "models/lora/adapter_config.json").is_file()  # MODELS defaults to OUT/models


@pytest.mark.scripts
def test_results_runs_sh(script_world):
    """docs/results.md's GSM8K runs: the recipe's expert on the 0.5B stand-in, then the subset eval."""
    work, env = script_world
    out = _bash("examples/results_runs.sh", work, env)
    meta = json.loads((work / "runs/demo/gsm8k-expert/proxytool.json").read_text())
    assert meta["recipe"]["name"] == "qwen2.5-coder-0.5b/gsm8k-lora" and meta["metrics"]["global_step"] == 15, out
    assert meta["base"]["name"] == "qwen2.5-coder-0.5b-instruct"
    report = json.loads((work / "runs/demo/eval-gsm8k/report.json").read_text())
    assert {name: s["n"] for name, s in report["systems"].items()} == {"base": 2, "expert": 2, "proxy": 2}
    assert report["task_info"]["source"] == "../shared/data/evalsets/gsm8k/test.jsonl"
    again = _bash("examples/results_runs.sh", work, env)  # a second run reuses the expert
    assert json.loads((work / "runs/demo/gsm8k-expert/proxytool.json").read_text())["created"] == meta["created"], again


@pytest.mark.scripts
def test_gsm8k_base_budget_sh(script_world):
    """The base-alone GSM8K rerun: the first N test problems decoded with a 512-token budget, then scored."""
    work, env = script_world
    out = _bash("examples/gsm8k_base_budget.sh", work, env, "2")
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["n"] == 2 and 0 <= summary["accuracy"] <= 1 and 0 <= summary["hit_the_budget"] <= 2, out
    rows = [json.loads(line) for line in (work / "work/gsm8k-budget/base-512.jsonl").open()]
    prompts = [json.loads(line) for line in (work / "work/gsm8k-budget/prompts.jsonl").open()]
    assert [r["id"] for r in rows] == [p["id"] for p in prompts] and prompts[0]["answer"] == "8"


@pytest.mark.scripts
def test_polls_cross_tokenizer_sh(script_world):
    """The SmolLM2 stand-in (another tokenizer) trained on the polls data steers the Qwen 1.5B stand-in, both
    ways (fast, exact); the poll list is the script's default path, ../shared beside the working folder."""
    work, env = script_world
    shutil.rmtree(work / "work/polls-demo")
    out = _bash("examples/polls_cross_tokenizer.sh", work, {**env, "LIMIT": "2"})
    meta = json.loads((work / "runs/cross/polls-expert-smollm2/proxytool.json").read_text())
    assert meta["base"]["name"] == "smollm2-135m-instruct", out
    for mode in ("fast", "exact"):
        report = json.loads((work / f"runs/cross/eval-polls-trained-{mode}/report.json").read_text())
        assert {name: s["n"] for name, s in report["systems"].items()} == {"base": 2, "expert": 2, "proxy": 2}, out
        assert report["settings"]["cross_tokenizer"] == mode and report["task_info"]["name"] == "polls-trained"


@pytest.mark.scripts
def test_polls_scale_sh(script_world):
    """The scale curve on the stand-ins: one folder, one eval and one table row per N; a second run reuses them."""
    work, env = script_world
    sizes = {"SIZES": "1 2", "SIDE": "1", "TRAIN_ARGS": "--max-steps 3 --batch-size 2", "BATCH": "9"}
    out = _bash("examples/polls_scale.sh", work, {**env, **sizes})
    table = (work / "runs/scale/scale.md").read_text()
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    assert [(r[0], r[1]) for r in rows] == [("| 1", "1 / 1"), ("| 2", "1 / 1")], table
    for r, n in zip(rows, (1, 2)):
        meta = json.loads((work / f"runs/scale/n{n}/expert/proxytool.json").read_text())
        report = json.loads((work / f"runs/scale/n{n}/eval/report.json").read_text())
        assert meta["config"]["packing"] and meta["metrics"]["global_step"] == 3, out
        assert meta["config"]["batch_size"] == 2 and meta["data"]["tokens"]["tokens"] > 0
        assert r[7] == f"{meta['data']['tokens']['examples']:,}" and r[8] == f"{meta['data']['tokens']['tokens']:,}"
        questions = (work / f"runs/scale/n{n}/data/eval.jsonl").read_text().splitlines()
        assert report["task_info"]["n_examples"] == len(questions) > 0, out
        assert 0 < meta["metrics"]["tokens_seen"] <= 3 * 2 * 256 and r[9] == f"{meta['metrics']['tokens_seen']:,}"
        for cell in r[3:6]:  # base / expert / proxy in [0, 100], then the gap closed when there is one
            scores = [float(x) for x in cell.split(" (")[0].split(" / ")]
            assert len(scores) == 3 and all(0 <= s <= 100 for s in scores), table
        assert float(r[10]) > 0 and float(r[11]) > 0 and "cores" in r[12], table
    assert (work / "runs/scale/scale.png").stat().st_size > 1000
    times = (work / "runs/scale/n2/times.jsonl").read_text()
    again = _bash("examples/polls_scale.sh", work, {**env, **sizes})
    assert "reusing runs/scale/n2/expert" in again and (work / "runs/scale/n2/times.jsonl").read_text() == times
    (work / "runs/scale/n1/expert/proxytool.json").unlink()  # as if stopped after its last checkpoint
    again = _bash("examples/polls_scale.sh", work, {**env, **sizes, "SIZES": "1"})
    lines = [json.loads(line) for line in (work / "runs/scale/n1/times.jsonl").open()]
    assert [(t["phase"], t["attempt"]) for t in lines] == [("train", "fresh"), ("eval", "fresh"), ("train", "resume")]
    assert (work / "runs/scale/n1/expert/proxytool.json").is_file() and "(2 attempts)" in again, again
