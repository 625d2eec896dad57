"""`proxytool models list|show|add|remove|install`: the model registry."""

import json
from typing import Annotated

import typer

models_app = typer.Typer(
    help="The model registry: names, hub ids, local folders, adapters, GGUF files.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    from proxytool.cli import packs

    packs.register(models_app)
    app.add_typer(models_app, name="models")


@models_app.command("list", help="Built-in aliases and your own entries.")
def list_models(
    user_only: Annotated[bool, typer.Option("--user", help="Only your entries.")] = False,
) -> None:
    from rich.console import Console
    from rich.table import Table

    from proxytool.models.registry import all_entries, registry_file

    table = Table(title=f"models (your entries: {registry_file()})")
    for column in ("name", "source", "format", "base", "origin"):
        table.add_column(column)
    for name, entry in sorted(all_entries().items()):
        if user_only and entry["origin"] != "user":
            continue
        table.add_row(name, entry["source"], entry.get("prompt_format", "raw"), entry.get("base", ""), entry["origin"])
    Console().print(table)


@models_app.command("show", help="How a name, path or hub id resolves.")
def show(name: str) -> None:
    from proxytool.models.registry import describe, resolve

    print(json.dumps(describe(resolve(name)), indent=2))


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
    from proxytool.models.registry import add_entry, resolve

    if base is not None:
        resolve(base)
    add_entry(
        name,
        source,
        prompt_format=prompt_format,
        base=base,
        dtype=dtype,
        quantization=quantization,
        revision=revision,
        description=description,
    )
    resolve(name)
    print(f"registered {name} -> {source}")


@models_app.command("remove", help="Remove one of your entries.")
def remove(name: str) -> None:
    from proxytool.models.registry import remove_entry

    remove_entry(name)
    print(f"removed {name}")
