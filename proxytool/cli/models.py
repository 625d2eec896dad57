"""`proxytool models list|show|add|remove|install`: the model registry."""

import json
from typing import Annotated

import typer

models_app = typer.Typer(
    help="The model registry: names, hub ids, local folders, adapters, GGUF files.", no_args_is_help=True
)


JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object on stdout, for scripts.")]


def register(app: typer.Typer) -> None:
    from proxytool.cli import models_packs as packs

    packs.register(models_app)
    app.add_typer(models_app, name="models")


@models_app.command("list", help="Built-in aliases and your own entries.")
def list_models(
    user_only: Annotated[bool, typer.Option("--user", help="Only your entries.")] = False,
    json_output: JsonOpt = False,
) -> None:
    from rich.table import Table

    from proxytool.cli.output import console, print_json
    from proxytool.models.registry import all_entries, registry_file

    entries = {name: e for name, e in sorted(all_entries().items()) if not user_only or e["origin"] == "user"}
    if json_output:
        print_json({"registry": str(registry_file()), "models": entries})
        return

    table = Table(title=f"models (your entries: {registry_file()})")
    for column in ("name", "source", "format", "base", "origin"):
        table.add_column(column)
    for name, entry in entries.items():
        table.add_row(name, entry["source"], entry.get("prompt_format", "raw"), entry.get("base", ""), entry["origin"])
    console().print(table)


@models_app.command("show", help="How a name, path or hub id resolves.")
def show(name: str, json_output: JsonOpt = False) -> None:
    from proxytool.models.registry import describe, resolve

    print(json.dumps(describe(resolve(name)), indent=None if json_output else 2))


@models_app.command("add", help="Register a name for a path or hub id.")
def add(
    name: str,
    source: str,
    prompt_format: Annotated[str | None, typer.Option(help="chat or raw.")] = None,
    base: Annotated[str | None, typer.Option(help="The model this one was tuned from (its anti-expert).")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, float16, bfloat16.")] = None,
    quantization: Annotated[str | None, typer.Option(help="none, 4bit, 8bit.")] = None,
    revision: Annotated[str | None, typer.Option(help="Hub revision.")] = None,
    description: Annotated[str | None, typer.Option(help="Free text.")] = None,
) -> None:
    from proxytool.models.builtins import BUILTIN_MODELS
    from proxytool.models.registry import add_entry, resolve

    if base is not None:
        resolve(base)
    previous = add_entry(
        name,
        source,
        prompt_format=prompt_format,
        base=base,
        dtype=dtype,
        quantization=quantization,
        revision=revision,
        description=description,
    )
    if previous is not None:
        print(f"replaced {name} (was -> {previous['source']}) -> {source}")
    elif name in BUILTIN_MODELS:
        print(f"registered {name} -> {source} (overrides the built-in alias)")
    else:
        print(f"registered {name} -> {source}")


@models_app.command("remove", help="Remove one of your entries.")
def remove(name: str) -> None:
    from proxytool.models.registry import remove_entry

    remove_entry(name)
    print(f"removed {name}")
