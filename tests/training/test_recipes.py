"""Recipes: every bundled file loads; precedence is default < recipe < flag; bad keys fail clearly."""

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from proxytool.cli import train as train_cli
from proxytool.errors import ProxyToolError
from proxytool.models.registry import resolve
from proxytool.training.config import TrainConfig, build_config
from proxytool.training.recipes import (
    find_recipe,
    list_recipes,
    load_recipe,
    recipes_dir,
)
from proxytool.training.train import resolve_config

RECIPE_FILES = sorted(recipes_dir().glob("**/*.yaml"))
REQUIRED = [
    "distilgpt2/polls-lora",
    "qwen2.5-coder-0.5b/polls-lora",
    "qwen2.5-coder-0.5b/gsm8k-lora",
    "llama-2-7b/chat-qlora",
]


def app():
    app = typer.Typer()
    train_cli.register(app)
    return app


def test_required_recipes_exist():
    assert set(REQUIRED) <= {recipe.name for recipe in list_recipes()}


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: str(p.relative_to(recipes_dir())))
def test_every_recipe_loads(path):
    recipe = load_recipe(path)
    config, sources = build_config(TrainConfig, (str(path), recipe.values))
    assert recipe.description
    assert recipe.command == f"proxytool train --recipe {recipe.name}"  # the exact command
    assert config.model and config.data and config.output and config.name
    assert all(sources[key] == str(path) for key in recipe.values)
    assert resolve(config.model).source  # a registry name or hub id the registry knows
    assert load_recipe(recipe.name).values == recipe.values  # by bundled name too


def test_qwen_recipes_fit_a_cpu_budget():
    for name in ("qwen2.5-coder-0.5b/polls-lora", "qwen2.5-coder-0.5b/gsm8k-lora"):
        config, _ = build_config(TrainConfig, ("r", load_recipe(name).values))
        assert config.model == "qwen2.5-coder-0.5b-instruct"
        assert config.max_steps <= 20 and config.max_seq_len <= 256 and not config.gradient_checkpointing


def test_precedence_default_recipe_flag(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "# test\nmodel: m\ndata: d.jsonl\nlr: 1.0e-3\nbatch_size: 2\ntarget_modules: q_proj\nmax_steps: 15\n"
    )
    recipe = load_recipe(path)
    config, sources = resolve_config(
        recipe.values, {"lr": 5e-4, "epochs": None, "max_steps": 0}, recipe_where=str(path)
    )
    assert config.max_steps == 0  # --max-steps 0 lifts the recipe's step limit
    assert config.lr == 5e-4 and sources["lr"] == "command line"  # flag beats recipe
    assert config.batch_size == 2 and sources["batch_size"] == str(path)  # recipe beats default
    assert config.epochs == TrainConfig().epochs and sources["epochs"] == "default"  # None = not given
    assert config.target_modules == ["q_proj"]
    assert config.output == str(Path("runs/d-expert").resolve())


@pytest.mark.parametrize(
    "text,message",
    [
        ("learning_rate: 0.1\n", "unknown key 'learning_rate'; did you mean 'lr'?"),
        ("output_dir: out\n", "unknown key 'output_dir'; did you mean 'output'?"),
        ("batch_size: four\n", "key 'batch_size' must be an integer (got str 'four')"),
        ("batch_size: 2.5\n", "key 'batch_size' must be an integer (got float 2.5)"),
        ("packing: 1\n", "key 'packing' must be true/false (got int 1)"),
        ("lr: fast\n", "key 'lr' must be a finite number (got str 'fast')"),
        ("target_modules: [1, 2]\n", "key 'target_modules' must be a list of strings"),
        ("max_steps: -1\n", "key 'max_steps' must be >= 0 (got -1)"),
        ("lora_dropout: 1.5\n", "key 'lora_dropout' must be < 1"),
        ("- a\n- b\n", "a recipe must be a mapping"),
        ("lr: [1\n", "invalid YAML"),
    ],
)
def test_bad_recipes_name_the_key_and_type(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ProxyToolError) as err:
        load_recipe(path)
    assert str(err.value).startswith(str(path))
    assert message in str(err.value)


def test_yaml_scientific_notation_is_a_number(tmp_path):
    """YAML 1.1 reads `2e-4` as a string; a float key accepts it."""
    path = tmp_path / "r.yaml"
    path.write_text("lr: 2e-4\nepochs: 3\n")
    config, _ = build_config(TrainConfig, ("r", load_recipe(path).values))
    assert config.lr == 2e-4 and config.epochs == 3.0


def test_unknown_recipe_name_suggests():
    with pytest.raises(ProxyToolError, match="did you mean distilgpt2/polls-lora"):
        find_recipe("distilgpt2/polls-lor")


def test_recipes_cli_list_and_show(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps table cells at the terminal width
    runner = CliRunner()
    listed = runner.invoke(app(), ["recipes", "list"], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    assert all(name in listed.output for name in REQUIRED)
    shown = runner.invoke(app(), ["recipes", "show", "qwen2.5-coder-0.5b/gsm8k-lora"], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "proxytool train --recipe qwen2.5-coder-0.5b/gsm8k-lora" in shown.output
    assert "../shared/data/evalsets/gsm8k/train.jsonl" in shown.output


def test_cli_help_lists_commands():
    result = CliRunner().invoke(app(), ["--help"])
    assert result.exit_code == 0
    assert all(command in result.output for command in ("train", "merge", "recipes"))
