"""Run the real `proxytool` entry point in-process (exit code, stdout, stderr)."""

import io
import sys
from contextlib import redirect_stderr, redirect_stdout

from proxytool.cli import app


def run_cli(*args, stdin: str | bytes | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    argv, old_stdin = sys.argv, sys.stdin
    sys.argv = ["proxytool", *map(str, args)]
    if isinstance(stdin, bytes):
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    elif stdin is not None:
        sys.stdin = io.StringIO(stdin)
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            app()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv, sys.stdin = argv, old_stdin
    return code, out.getvalue(), err.getvalue()
