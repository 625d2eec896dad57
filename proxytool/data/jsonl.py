"""JSONL reading shared by prompts, training data and eval sets: errors name file:line."""

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from proxytool.errors import ProxyToolError, at


def parse_line(line: str | bytes, path, number: int) -> dict:
    """One JSONL line as a dict, or a ProxyToolError naming ``path:number``."""
    try:
        record = json.loads(line.decode("utf-8") if isinstance(line, bytes) else line)
    except UnicodeDecodeError:
        raise ProxyToolError(f"{at(path, number)}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise ProxyToolError(f"{at(path, number)}: invalid JSON ({err.msg} at column {err.colno})") from None
    except RecursionError:
        raise ProxyToolError(f"{at(path, number)}: JSON nested too deeply") from None
    if not isinstance(record, dict):
        raise ProxyToolError(f"{at(path, number)}: expected a JSON object, got {type(record).__name__}")
    return record


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line of a JSONL (or ``.jsonl.gz``) file.

    Raises:
        ProxyToolError: On unreadable files, invalid JSON or a line that is not a JSON object.
    """
    path = Path(path)
    try:
        with (
            gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")
        ) as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield number, parse_line(line, path, number)
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as err:
        raise ProxyToolError(f"{at(path)}: cannot read ({err.__class__.__name__}: {err})") from None
    except OSError as err:
        raise ProxyToolError(f"{at(path)}: cannot read ({err.strerror or err})") from None
