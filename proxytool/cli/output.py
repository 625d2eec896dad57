"""Where the CLI writes: results on stdout, progress and notes on stderr, plain when piped.

When stdout is not a terminal (a script, a CI log, ``| less``) tables are not cut to 80 columns and
carry no colour; ``NO_COLOR`` (any value) turns colour off everywhere (https://no-color.org).
"""

import json
import os
import sys

WIDE = 100_000  # "no width limit" for rich when piped: long paths are not cut with an ellipsis


def console(stderr: bool = False):
    """A rich Console for stdout (results) or stderr (progress, notes)."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    no_color = "NO_COLOR" in os.environ or not tty
    return Console(
        file=stream,
        width=None if tty else WIDE,
        no_color=no_color,
        color_system=None if no_color else "auto",
        highlight=tty,
        soft_wrap=not tty,
    )


def print_json(value) -> None:
    """One machine-readable JSON object on one line of stdout."""
    print(json.dumps(value, ensure_ascii=False, default=str))
