"""The public Python API against the CLI and the engine on the tiny models (docs/python.md)."""

import json
import subprocess
import sys

import pytest
import torch
from cli_runner import run_cli
from engine_helpers import proxy_setup, random_prompts
from tiny import save_adapter

import proxytool
from proxytool import ProxyLogitsProcessor, ProxyToolError, ProxyTuned
from proxytool.decoding.generate import complete
from proxytool.decoding.setup import load_proxy_models

N = 8


def cpu(**kwargs):
    return {"dtype": "float32", "device": "cpu", **kwargs}


def hf(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path)


def tokenizer_of(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def cli_token_ids(tmp_path, prompts, *args) -> list[list[int]]:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "prompt": p}) + "\n" for i, p in enumerate(prompts)))
    out = tmp_path / "out.jsonl"
    code, _, err = run_cli("decode", "--prompts", path, "--output", out, "--max-new-tokens", N, *args)
    assert code == 0, err
    return [json.loads(line)["token_ids"] for line in out.read_text().splitlines()]


def test_import_is_light_and_exports_the_api():
    code = "import sys, proxytool; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
    assert {"ProxyTuned", "ProxyLogitsProcessor", "Generation", "ProxyToolError"} <= set(dir(proxytool))
    with pytest.raises(AttributeError):
        proxytool.NoSuchThing  # noqa: B018


def test_loaded_models_equal_the_cli(tiny_models, tmp_path):
    """from_models on models loaded with transformers gives `proxytool decode`'s token ids."""
    t = tiny_models
    prompts = random_prompts(6, seed=4)
    args = ["--base", t["base"], "--expert", t["expert"], "--anti-expert", t["anti"], "--alpha", "0.8"]
    expected = cli_token_ids(tmp_path, prompts, *args, "--batch-size", "3", "--threads", "1")
    tuned = ProxyTuned.from_models(hf(t["base"]), tokenizer_of(t["base"]), hf(t["expert"]), hf(t["anti"]), alpha=0.8)
    assert [g.token_ids for g in tuned.generate(prompts, max_new_tokens=N, batch_size=3)] == expected
    named = ProxyTuned.from_pretrained(t["base"], expert=t["expert"], anti_expert=t["anti"], alpha=0.8, **cpu())
    assert [g.token_ids for g in named.generate(prompts, max_new_tokens=N)] == expected


def test_a_peft_expert_shares_its_base_model_as_the_anti_expert(tiny_models, tmp_path):
    """A PeftModel expert with no anti-expert: adapters off is the anti-expert (one model, two row
    groups), as `proxytool decode --expert ADAPTER` loads it."""
    from peft import PeftModel

    adapter = save_adapter(tmp_path / "adapter", tiny_models["anti"], seed=7)
    prompts = random_prompts(4, seed=5)
    expected = cli_token_ids(tmp_path, prompts, "--base", tiny_models["base"], "--expert", adapter, "--threads", "1")
    small = hf(tiny_models["anti"])
    expert = PeftModel.from_pretrained(small, str(adapter))
    tuned = ProxyTuned.from_models(hf(tiny_models["base"]), tokenizer_of(tiny_models["base"]), expert)
    [source] = [s for s in tuned.models.sources if s is not tuned.models.base.source]
    assert [g.adapter for g in source.groups] == ["default", None]
    assert [g.token_ids for g in tuned.generate(prompts, max_new_tokens=N)] == expected
    # the PEFT model's own base model given as the anti-expert is the same thing (adapters off)
    same = ProxyTuned.from_models(hf(tiny_models["base"]), tokenizer_of(tiny_models["base"]), expert, small)
    assert len(same.models.sources) == 2
    assert [g.token_ids for g in same.generate(prompts, max_new_tokens=N)] == expected


def test_logits_processor_gives_proxytool_greedy_tokens(tiny_models):
    """model.generate(..., logits_processor=[ProxyLogitsProcessor]) == complete(...) on 12 prompts, one
    processor reused across generate calls (it starts over on each new sequence), and in a left-padded batch."""
    t = tiny_models
    models = load_proxy_models(proxy_setup(t["base"], experts=[str(t["expert"])], anti_experts=[str(t["anti"])]))
    prompts = random_prompts(12, seed=9)
    expected = [c.token_ids for c in complete(models, prompts, max_new_tokens=N)]
    model, tokenizer = hf(t["base"]), tokenizer_of(t["base"])
    steer = ProxyLogitsProcessor(expert=str(t["expert"]), anti_expert=str(t["anti"]), **cpu())
    got = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        out = model.generate(ids, logits_processor=[steer], do_sample=False, max_new_tokens=N)
        got.append(out[0, ids.shape[1] :].tolist())
    assert got == expected
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts[:4], return_tensors="pt", padding=True)
    out = model.generate(**batch, logits_processor=[steer], do_sample=False, max_new_tokens=N)
    width = batch.input_ids.shape[1]
    assert [row[width:][: len(e)] for row, e in zip(out.tolist(), expected[:4])] == expected[:4]


def test_logits_processor_from_loaded_models_trims_the_padded_vocabulary(tiny_models):
    t = tiny_models
    tokenizer = tokenizer_of(t["base"])
    steer = ProxyLogitsProcessor(hf(t["expert"]), hf(t["anti"]), alpha=2.0, tokenizer=tokenizer)
    scores = torch.zeros(1, 336)
    out = steer(torch.tensor([tokenizer("Hello")["input_ids"]]), scores)
    assert out.shape == (1, 336) and torch.isinf(out[0, len(tokenizer) :]).all()
    assert torch.isfinite(out[0, : len(tokenizer)]).all()


def test_stream_and_stop_strings(tiny_models):
    t = tiny_models
    tuned = ProxyTuned.from_pretrained(t["base"], expert=t["expert"], anti_expert=t["anti"], **cpu())
    for prompt in random_prompts(4, seed=2):
        full = tuned.generate(prompt, max_new_tokens=12)
        assert "".join(tuned.stream(prompt, max_new_tokens=12)) == full.text
        if len(full.text) > 3:
            stop = full.text[1:3]
            cut = tuned.generate(prompt, max_new_tokens=12, stop=stop)
            assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.index(stop)]
            assert "".join(tuned.stream(prompt, max_new_tokens=12, stop=[stop])) == cut.text


def test_sampling_follows_the_cli_seeds_and_alpha_overrides(tiny_models, tmp_path):
    t = tiny_models
    prompts = random_prompts(3, seed=6)
    args = ["--base", t["base"], "--expert", t["expert"], "--anti-expert", t["anti"], "--threads", "1"]
    sampled = ["--temperature", "0.9", "--top-k", "20", "--seed", "5"]
    expected = cli_token_ids(tmp_path, prompts, *args, *sampled, "--alpha", "0.5")
    tuned = ProxyTuned.from_pretrained(t["base"], expert=t["expert"], anti_expert=t["anti"], **cpu())
    got = tuned.generate(prompts, max_new_tokens=N, temperature=0.9, top_k=20, seed=5, alpha=0.5, batch_size=1)
    assert [g.token_ids for g in got] == expected
    base_alone = ProxyTuned.from_pretrained(t["base"], **cpu()).generate(prompts, max_new_tokens=N)
    assert [g.token_ids for g in tuned.generate(prompts, max_new_tokens=N, alpha=0)] == [
        g.token_ids for g in base_alone
    ]
    scores = tuned.next_token_scores(prompts, alpha=0)
    assert torch.equal(scores.scores, scores.logits["base"].float())


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda t: ProxyTuned.from_pretrained(
                t["base"], expert=t["expert"], anti_expert=t["anti"], alpha=float("nan")
            ),
            "alpha must be a finite number (got nan)",
        ),
        (
            lambda t: ProxyTuned.from_pretrained(t["base"], expert=t["expert"], anti_expert=t["anti"], alpha=1e9),
            "alpha must be between -1000 and 1000 (got 1e+09)",
        ),
        (lambda t: ProxyTuned.from_pretrained(t["base"], alpha=0.5), "alpha needs an expert to steer with"),
        (lambda t: ProxyTuned.from_pretrained(t["base"], dtyp="float32"), "unknown loading option 'dtyp'"),
        (lambda t: ProxyTuned.from_pretrained(t["base"], expert=t["expert"]), "does not record the model"),
        (lambda t: ProxyTuned.from_pretrained("no-such-model"), "unknown model 'no-such-model'"),
        (lambda t: ProxyLogitsProcessor(hf(t["expert"]), hf(t["anti"])), "needs tokenizer="),
        (lambda t: ProxyLogitsProcessor(hf(t["expert"]), tokenizer=tokenizer_of(t["base"])), "not a PEFT model"),
        (lambda t: ProxyLogitsProcessor(str(t["expert"]), str(t["anti"]), alpha=float("inf")), "alpha must be"),
    ],
)
def test_building_errors_are_one_line(tiny_models, call, message):
    with pytest.raises(ProxyToolError) as err:
        call(tiny_models)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.fixture(scope="module")
def tuned(tiny_models):
    t = tiny_models
    return ProxyTuned.from_pretrained(t["base"], expert=t["expert"], anti_expert=t["anti"], **cpu())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": float("nan")}, "alpha must be a finite number"),
        ({"alpha": [1.0, 2.0]}, "2 alpha values for 1 expert pairs"),
        ({"temperature": -1}, "temperature must be >= 0"),
        ({"top_p": 0}, "top_p must be > 0"),
        ({"top_k": -2}, "top_k must be >= 0"),
        ({"max_new_tokens": -1}, "max_new_tokens must be >= 0"),
        ({"stop": [""]}, "stop strings must be non-empty"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"speculative": 2, "draft": "nope"}, "--draft must be one of"),
        ({"max_new_tokens": 10_000}, "more than the 256-token context of the base"),
    ],
)
def test_generation_errors_are_one_line(tuned, kwargs, message):
    with pytest.raises(ProxyToolError) as err:
        tuned.generate("Hello", **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "prompts, message",
    [
        (3, "prompts must be a string, a list of messages"),
        ([{"role": "robot", "content": "x"}], "prompt[0]: a message is"),
        (["ok", 5], "prompts[1]: a prompt is a string"),
        ("\ud800", "prompt: not valid UTF-8"),
    ],
)
def test_bad_prompts_are_one_line(tuned, prompts, message):
    with pytest.raises(ProxyToolError) as err:
        tuned.generate(prompts, max_new_tokens=1)
    assert message in str(err.value)


def test_shapes_of_results(tuned):
    assert tuned.generate([], max_new_tokens=2) == []
    one = tuned.generate([{"role": "user", "content": "Hello"}], max_new_tokens=2)
    assert isinstance(one, proxytool.Generation) and str(one) == one.text
    many = tuned.generate([[{"role": "user", "content": "Hello"}], "Hi"], max_new_tokens=2)
    assert [len(g.token_ids) for g in many] == [2, 2]
    fast = tuned.generate(random_prompts(3), max_new_tokens=N, speculative=3)
    assert [g.token_ids for g in fast] == [g.token_ids for g in tuned.generate(random_prompts(3), max_new_tokens=N)]
    session = tuned.chat(system="Be brief.", max_new_tokens=3)
    assert "".join(session.reply("Hello")).strip() == session.history[-1]["content"]
