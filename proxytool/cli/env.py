"""`proxytool env`: versions and devices, for bug reports."""

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("env", help="Print package versions and available devices.")(env)


def env(
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object on stdout, for scripts.")] = False,
) -> None:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch
    from rich.table import Table

    from proxytool.cli.output import console, print_json

    rows = {}

    class _Rows:  # collects the rows for --json and the table alike
        def add_row(self, key, value):
            rows[key] = value

    table = _Rows()
    table.add_row("python", platform.python_version())
    table.add_row("platform", platform.platform())
    for pkg in (
        "proxytool",
        "torch",
        "transformers",
        "peft",
        "trl",
        "datasets",
        "accelerate",
        "bitsandbytes",
        "gguf",
        "typer",
        "rich",
    ):
        try:
            table.add_row(pkg, version(pkg))
        except PackageNotFoundError:
            table.add_row(pkg, "not installed")
    table.add_row("cpu threads", str(torch.get_num_threads()))
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            table.add_row(f"cuda:{i}", f"{props.name}, {props.total_memory / 2**30:.1f} GiB")
    else:
        table.add_row("cuda", "not available")
    table.add_row("mps", str(torch.backends.mps.is_available()))
    if json_output:
        print_json(rows)
        return
    shown = Table(title="proxytool environment", show_header=False)
    for key, value in rows.items():
        shown.add_row(key, value)
    console().print(shown)
