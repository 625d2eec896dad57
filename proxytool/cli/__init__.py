"""The `proxytool` command line: thin Typer layers over importable library functions.

Heavy imports (torch, transformers, ...) happen inside the commands so `proxytool --help` is fast.
Every command module exposes ``register(app)``.
"""

import os
import sys

import typer

from proxytool.errors import ProxyToolError

app_ = typer.Typer(
    name="proxytool",
    help="Proxy-tuning end to end: train a small expert, steer a large base model at decoding time.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}


@app_.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    _state["debug"] = debug


def _register_commands() -> None:
    from proxytool.cli import bench, chat, data, decode, env, models, serve
    from proxytool.cli import eval as eval_cli
    from proxytool.cli import train as train_cli

    for module in (train_cli, decode, chat, eval_cli, models, data, bench, env, serve):
        module.register(app_)


_register_commands()


def app() -> None:
    """Console-script entry point: run the Typer app, turning user errors into one line + exit 2."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app_(standalone_mode=False)
    except ProxyToolError as err:
        if _state["debug"]:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except Exception as err:  # click usage errors and the like
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise
