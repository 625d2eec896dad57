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

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


@app_.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    _state["debug"] = debug


def _register_commands() -> None:
    from proxytool.cli import bench, chat, data, decode, env, models, serve, vllm
    from proxytool.cli import eval as eval_cli
    from proxytool.cli import train as train_cli

    for module in (train_cli, decode, chat, eval_cli, models, data, bench, env, serve, vllm):
        module.register(app_)


_register_commands()


def app() -> None:
    """Console-script entry point: run the Typer app and map every outcome to a documented exit code.

    0 success; 1 a failure proxytool could not prevent (disk full, an internal error); 2 bad input
    (usage errors, bad values, unreadable files); 130 interrupted. Errors are one line on stderr;
    ``--debug`` (or ``PROXYTOOL_DEBUG=1``) shows the traceback instead.
    """
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        code = app_(standalone_mode=False)
    except ProxyToolError as err:
        if _debugging():
            raise
        _fail(f"error: {err}", getattr(err, "exit_code", EXIT_BAD_INPUT))
    except NoArgsIsHelpError as err:
        err.show()
        sys.exit(EXIT_BAD_INPUT)
    except UsageError as err:
        command = err.ctx.command_path if err.ctx is not None else "proxytool"
        _fail(f"error: {_one_line(err.format_message())} (see '{command} --help')", EXIT_BAD_INPUT)
    except ClickException as err:
        _fail(f"error: {_one_line(err.format_message())}", err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _fail("aborted", EXIT_INTERRUPTED)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except BrokenPipeError:
        _quiet_broken_pipe()
        sys.exit(EXIT_FAILURE)
    except OSError as err:
        if _debugging():
            raise
        where = f"{err.filename}: " if err.filename else ""
        _fail(f"error: {where}{err.strerror or err}", EXIT_FAILURE)
    except MemoryError:
        _fail("error: out of memory", EXIT_FAILURE)
    except Exception as err:
        if _debugging():
            raise
        _fail(
            f"internal error: {type(err).__name__}: {_one_line(str(err))} (rerun with --debug for the traceback "
            "and please report it)",
            EXIT_FAILURE,
        )
    if isinstance(code, int) and code:  # typer returns the code of typer.Exit / Ctrl-C instead of raising
        if code == EXIT_INTERRUPTED:
            print("interrupted", file=sys.stderr)
        sys.exit(code)


def _debugging() -> bool:
    return _state["debug"] or os.environ.get("PROXYTOOL_DEBUG", "") not in ("", "0")


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _fail(message: str, code: int) -> None:
    """Print one line on stderr, whatever it holds (a lone surrogate from a non-UTF-8 argument is escaped)."""
    try:
        print(message.encode("utf-8", "backslashreplace").decode("utf-8"), file=sys.stderr)
    except (BrokenPipeError, ValueError):
        pass
    sys.exit(code)


def _quiet_broken_pipe() -> None:
    """stdout's reader went away (``proxytool models list | head``): stop writing, exit quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
