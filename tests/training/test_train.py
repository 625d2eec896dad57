"""Training on tiny in-process models: the loss goes down, only LoRA weights change, the output folder
stands alone, Ctrl-C + --resume is exact, and every `proxytool train` flag runs."""

import json
import os
import shutil
import signal

import pytest
import torch
import typer
from safetensors.torch import load_file
from tiny import CORPUS
from typer.testing import CliRunner

from proxytool.cli import train as train_cli
from proxytool.data.training import DEFAULT_CHAT_TEMPLATE, read_data, tokenize
from proxytool.errors import ProxyToolError
from proxytool.models.checkpoint import content_hash, read_metadata
from proxytool.models.loading import load_model, load_tokenizer
from proxytool.models.registry import resolve
from proxytool.training.train import TrainingInterrupted, resolve_config, train

QA = [
    ("Who leads the national poll?", "Trump leads by two points."),
    ("What is the answer?", "The answer is 42."),
    ("How many apples does Janet have?", "8."),
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def chat_rows():
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """Poll-style data: documents plus chat QA pairs."""
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", [{"text": t} for t in CORPUS] + chat_rows())


def app():
    app = typer.Typer()
    train_cli.register(app)
    return app


def run_train(base, data, output, progress=None, **flags):
    values = dict(
        model=str(base),
        data=str(data),
        output=str(output),
        max_steps=4,
        batch_size=4,
        lr=1e-2,
        threads=1,
        save_steps=100,
    )
    config, sources = resolve_config(None, {**values, **flags})
    return train(config, sources=sources, progress=progress)


@pytest.fixture(scope="module")
def trained(tiny_models, data_file, tmp_path_factory):
    """One 10-step run on the tiny llama; the in-memory model is kept to inspect its base weights."""
    import proxytool.training.train as train_module

    loaded = {}
    original = train_module._load_base

    def keep(spec, config):
        loaded["model"] = original(spec, config)
        return loaded["model"]

    output = tmp_path_factory.mktemp("runs") / "expert"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_module, "_load_base", keep)
        mp.setenv("PROXYTOOL_HOME", str(tmp_path_factory.mktemp("home")))
        result = run_train(tiny_models["base"], data_file, output, max_steps=10)
    return {"result": result, "output": output, "model": loaded["model"]}


def mean_loss(model, rows):
    with torch.no_grad():
        losses = [
            model(input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]])).loss.item()
            for r in rows
        ]
    return sum(losses) / len(losses)


def test_training_lowers_the_loss(trained, tiny_models, data_file):
    rows = tokenize(read_data(data_file), load_tokenizer(resolve(str(tiny_models["base"]))))
    before = mean_loss(load_model(resolve(str(tiny_models["base"]))), rows)
    after = mean_loss(load_model(resolve(str(trained["output"]))), rows)
    assert after < before - 0.5, (before, after)
    assert trained["result"].global_step == 10
    assert trained["result"].metrics["last_loss"] < trained["result"].metrics["first_loss"]


def test_only_lora_weights_change(trained, tiny_models):
    fresh = load_model(resolve(str(tiny_models["base"]))).state_dict()
    tuned = {
        name.replace("base_model.model.", "").replace(".base_layer", ""): value
        for name, value in trained["model"].state_dict().items()
        if "lora_" not in name
    }
    assert set(tuned) == set(fresh)
    assert all(torch.equal(tuned[name], fresh[name]) for name in fresh)
    adapter = load_file(trained["output"] / "adapter_model.safetensors")
    assert adapter and all("lora_" in name for name in adapter)
    assert any(name.endswith("lora_B.weight") and value.abs().max() > 0 for name, value in adapter.items())


def test_output_folder_stands_alone(trained, tiny_models, data_file, tmp_path):
    output, base = trained["output"], str(tiny_models["base"].resolve())
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "proxytool.json",
        "train_log.jsonl",
    ):
        assert (output / name).is_file(), name
    assert json.loads((output / "adapter_config.json").read_text())["base_model_name_or_path"] == base
    meta = read_metadata(output)
    assert meta["kind"] == "adapter" and meta["prompt_format"] == "chat" and meta["chat_template"] == "tokenizer"
    assert meta["base"] == {
        "name": base,
        "source": base,
        "revision": None,
        "content_hash": content_hash(base),
        "prompt_format": "raw",
    }
    assert meta["data"]["counts"] == {"text": len(CORPUS), "messages": len(QA)}
    assert meta["config"]["max_steps"] == 10 and meta["config_sources"]["max_steps"] == "command line"
    assert meta["versions"]["trl"] and meta["metrics"]["global_step"] == 10
    log = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 11))
    moved = shutil.copytree(output, tmp_path / "elsewhere", ignore=shutil.ignore_patterns("trainer"))
    spec = resolve(str(moved))
    assert spec.kind == "adapter" and spec.prompt_format == "chat"
    assert spec.base.source == base and spec.base.kind == "hf"
    load_model(spec)  # loads with nothing but the copied folder and its recorded base


class InterruptAt:
    """Progress that presses Ctrl-C (SIGINT) when a given step ends."""

    def __init__(self, step):
        self.at, self.steps, self.sent = step, [], False

    def start(self, total_steps, first_step, info):
        self.first = first_step

    def step(self, step, stats):
        self.steps.append(step)
        if step == self.at and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)

    def note(self, message):
        pass

    def end(self):
        pass


def test_ctrl_c_then_resume_matches_an_uninterrupted_run(tiny_models, data_file, tmp_path):
    straight = run_train(tiny_models["base"], data_file, tmp_path / "straight", batch_size=2)
    output = tmp_path / "stopped"
    with pytest.raises(TrainingInterrupted) as stop:
        run_train(tiny_models["base"], data_file, output, progress=InterruptAt(2), batch_size=2)
    assert stop.value.step == 2 and stop.value.checkpoint == output / "trainer" / "checkpoint-2"
    assert f"proxytool train --resume --output {output}" in str(stop.value)
    assert not (output / "proxytool.json").exists()  # not a finished adapter yet
    progress = InterruptAt(None)
    config, _ = resolve_config(None, {"output": str(output)}, resume=True)
    resumed = train(config, resume=True, progress=progress)
    assert progress.first == 2 and progress.steps[0] == 3 and resumed.global_step == 4  # continued, not restarted
    log = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    a = load_file(straight.output / "adapter_model.safetensors")
    b = load_file(output / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ProxyToolError, match="key 'lr' cannot change when resuming"):
        resolve_config(None, {"output": str(output), "lr": 0.5}, resume=True)


def test_cli_ctrl_c_exits_130_and_resume_flag_continues(
    tiny_models, data_file, tmp_path, sigint_after_first_train_step
):
    output = tmp_path / "cli"
    args = [
        "train",
        "--data",
        str(data_file),
        "--model",
        str(tiny_models["base"]),
        "--output",
        str(output),
        "--max-steps",
        "2",
        "--threads",
        "1",
    ]
    stopped = CliRunner().invoke(app(), args)
    assert stopped.exit_code == 130, stopped.output
    assert "resume with: proxytool train --resume --output" in stopped.output
    sigint_after_first_train_step()  # disarm: the resumed run goes to the end
    resumed = CliRunner().invoke(app(), ["train", "--resume", "--output", str(output)])
    assert resumed.exit_code == 0, resumed.output
    assert read_metadata(output)["metrics"]["global_step"] == 2


def snapshot(folder):
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def resume(output, progress=None, **flags):
    config, sources = resolve_config(None, {"output": str(output), **flags}, resume=True)
    return train(config, resume=True, progress=progress, sources=sources)


def test_resume_of_a_finished_run_changes_nothing(tiny_models, data_file, tmp_path):
    """max_steps 4 is not a whole number of epochs (10 examples in batches of 4: 3 steps per epoch), the
    case where transformers' Trainer, resumed at its last step, takes one more optimizer step."""
    output = tmp_path / "done"
    run_train(tiny_models["base"], data_file, output)
    assert sorted(p.name for p in (output / "trainer").glob("checkpoint-*")) == ["checkpoint-4"]
    before = snapshot(output)
    result = CliRunner().invoke(app(), ["train", "--resume", "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert f"{output}: already trained: step 4 of 4 (checkpoint-4); nothing to do" in " ".join(result.output.split())
    assert snapshot(output) == before  # no step taken, no file rewritten (adapter, log, checkpoints, proxytool.json)


def test_resume_after_the_last_checkpoint_but_before_the_adapter_was_written(tiny_models, data_file, tmp_path):
    """A crash after the final checkpoint, before the folder was finished: resuming writes it, training nothing."""
    output = tmp_path / "crashed"
    run_train(tiny_models["base"], data_file, output)
    adapter = load_file(output / "adapter_model.safetensors")
    for name in ("proxytool.json", "adapter_model.safetensors", "adapter_config.json"):
        (output / name).unlink()
    progress = InterruptAt(None)
    resumed = resume(output, progress=progress)
    assert resumed.global_step == 4 and progress.steps == []
    assert not (output / "trainer" / "checkpoint-5").exists()
    again = load_file(output / "adapter_model.safetensors")
    assert adapter.keys() == again.keys() and all(torch.equal(adapter[k], again[k]) for k in adapter)
    assert read_metadata(output)["metrics"]["global_step"] == 4


def test_resume_from_an_earlier_checkpoint_trains_the_remaining_steps(tiny_models, data_file, tmp_path):
    """Checkpoint 3 ends the first epoch; resuming from it trains step 4 alone, exactly as the first run did."""
    output = tmp_path / "partial"
    run_train(tiny_models["base"], data_file, output, save_steps=1, save_total_limit=5)
    adapter = load_file(output / "adapter_model.safetensors")
    (output / "proxytool.json").unlink()
    shutil.rmtree(output / "trainer" / "checkpoint-4")  # as if killed after saving step 3
    progress = InterruptAt(None)
    resumed = resume(output, progress=progress)
    assert progress.first == 3 and sorted(set(progress.steps)) == [4] and resumed.global_step == 4
    again = load_file(output / "adapter_model.safetensors")
    assert all(torch.equal(adapter[k], again[k]) for k in adapter)


def test_resume_with_more_max_steps_continues_to_the_new_limit(tiny_models, data_file, tmp_path):
    """--max-steps 7 on a finished run of 4 trains on; after a Ctrl-C, a plain --resume (the command the
    message prints) keeps the new limit."""
    output = tmp_path / "longer"
    run_train(tiny_models["base"], data_file, output)
    with pytest.raises(TrainingInterrupted) as stop:
        resume(output, progress=InterruptAt(5), max_steps=7)
    assert stop.value.step == 5
    progress = InterruptAt(None)
    resumed = resume(output, progress=progress)
    assert progress.first == 5 and sorted(set(progress.steps)) == [6, 7] and resumed.global_step == 7
    meta = read_metadata(output)
    assert meta["metrics"]["global_step"] == 7 and meta["config"]["max_steps"] == 7
    log = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6, 7]


def test_every_flag_with_a_recipe_underneath(tiny_models, data_file, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("# tiny\nlr: 0.5\nlr_scheduler: cosine\nsave_steps: 1\nlora_r: 2\n")
    eval_file = write_jsonl(tmp_path / "eval.jsonl", chat_rows())
    output = tmp_path / "flags"
    args = [
        "train",
        "--recipe",
        str(recipe),
        "--data",
        str(data_file),
        "--model",
        str(tiny_models["base"]),
        "--output",
        str(output),
        "--name",
        "tiny-flags",
        "--epochs",
        "3",
        "--max-steps",
        "2",
        "--lr",
        "0.005",
        "--batch-size",
        "2",
        "--grad-accum",
        "2",
        "--max-seq-len",
        "48",
        "--lora-r",
        "4",
        "--lora-alpha",
        "8",
        "--lora-dropout",
        "0.0",
        "--target-modules",
        "q_proj,v_proj",
        "--packing",
        "--eval-data",
        str(eval_file),
        "--seed",
        "3",
        "--threads",
        "1",
    ]
    result = CliRunner().invoke(app(), args)
    assert result.exit_code == 0, result.output
    meta = read_metadata(output)
    config, sources = meta["config"], meta["config_sources"]
    assert (config["lr"], sources["lr"]) == (0.005, "command line")  # flag beats recipe
    assert (config["lr_scheduler"], sources["lr_scheduler"]) == ("cosine", str(recipe))  # recipe beats default
    assert config["lora_r"] == 4 and config["packing"] is True and config["seed"] == 3 and config["grad_accum"] == 2
    assert meta["recipe"]["values"]["lr"] == 0.5 and meta["metrics"]["eval_loss"] > 0
    adapter_config = json.loads((output / "adapter_config.json").read_text())
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (4, 8)
    assert set(adapter_config["target_modules"]) == {"q_proj", "v_proj"}
    assert sorted(p.name for p in (output / "trainer").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert resolve("tiny-flags").source == str(output.resolve())  # --name registered it
    assert "registered as" in result.output and "tiny-flags" in result.output


def test_tokenizer_without_chat_template_gets_the_default(tiny_models, tmp_path):
    """GPT-2 style: no chat template, Conv1D layers; the default template is saved with the adapter."""
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows())
    result = run_train(tiny_models["gpt2"], data, tmp_path / "gpt2", max_steps=2)
    assert (result.output / "chat_template.jinja").read_text() == DEFAULT_CHAT_TEMPLATE
    meta = read_metadata(result.output)
    assert meta["chat_template"] == "default" and meta["prompt_format"] == "chat"
    assert load_tokenizer(resolve(str(result.output))).chat_template == DEFAULT_CHAT_TEMPLATE


def test_qlora_without_cuda_is_a_clear_error(tiny_models, data_file, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: --qlora is allowed")
    result = CliRunner().invoke(
        app(),
        [
            "train",
            "--data",
            str(data_file),
            "--model",
            str(tiny_models["base"]),
            "--output",
            str(tmp_path / "q"),
            "--qlora",
        ],
    )
    assert isinstance(result.exception, ProxyToolError)
    assert "needs a CUDA GPU" in str(result.exception)


def test_bad_data_fails_before_any_model_loads(tiny_models, tmp_path, monkeypatch):
    import proxytool.models.loading

    def forbidden(*args, **kwargs):
        raise AssertionError("a model or tokenizer was loaded before the data was validated")

    monkeypatch.setattr(proxytool.models.loading, "load_model", forbidden)
    monkeypatch.setattr(proxytool.models.loading, "load_tokenizer", forbidden)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n' * 500 + '{"prompt": "Q"}\n')
    with pytest.raises(ProxyToolError, match=r"bad.jsonl:501: field 'completion': missing"):
        run_train(tiny_models["base"], bad, tmp_path / "out")
    with pytest.raises(ProxyToolError, match=r"bad.jsonl:501"):
        run_train("no-such-model-anywhere", bad, tmp_path / "out")


def test_run_errors(trained, tiny_models, data_file, tmp_path):
    with pytest.raises(ProxyToolError, match="already exists and is not empty; pass --resume"):
        run_train(tiny_models["base"], data_file, trained["output"])
    with pytest.raises(ProxyToolError, match="nothing to resume"):
        resolve_config(None, {"output": str(tmp_path / "never")}, resume=True)
    with pytest.raises(ProxyToolError, match="is a LoRA adapter; merge it first"):
        run_train(trained["output"], data_file, tmp_path / "on-adapter")
    with pytest.raises(ProxyToolError, match="no data given"):
        train(resolve_config(None, {"model": str(tiny_models["base"])})[0])
    with pytest.raises(ProxyToolError, match="key 'lr_scheduler' must be one of"):
        run_train(tiny_models["base"], data_file, tmp_path / "s", lr_scheduler="sideways")
    with pytest.raises(ProxyToolError, match="cannot set up training: Target modules"):
        run_train(tiny_models["base"], data_file, tmp_path / "t", target_modules=["no_such_proj"])


def test_trained_checkpoint_is_an_expert_whose_anti_expert_comes_from_its_metadata(trained, tiny_models, tmp_path):
    from cli_runner import run_cli

    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": "q", "prompt": "Who leads the poll?"}])
    implied, explicit = tmp_path / "implied.jsonl", tmp_path / "explicit.jsonl"
    common = [
        "decode",
        "--prompts",
        prompts,
        "--base",
        tiny_models["base"],
        "--expert",
        trained["output"],
        "--max-new-tokens",
        "6",
    ]
    assert run_cli(*common, "--output", implied)[0] == 0
    assert run_cli(*common, "--anti-expert", tiny_models["base"], "--output", explicit)[0] == 0
    assert implied.read_bytes() == explicit.read_bytes()
    code, out, err = run_cli(
        "chat",
        "--base",
        tiny_models["base"],
        "--expert",
        trained["output"],
        "--max-new-tokens",
        "4",
        stdin="Who leads?\n",
    )
    assert code == 0 and len(out.splitlines()) == 1, err
