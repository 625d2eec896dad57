"""JSONL reading shared by prompts, training data and eval sets: errors name file:line."""

import gzip
import json
import zlib
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
    from proxytool.files.reading import read_bytes

    path = Path(path)
    raw = read_bytes(path, "JSONL")
    if path.name.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (gzip.BadGzipFile, EOFError, OSError, zlib.error) as err:
            raise ProxyToolError(f"{at(path)}: cannot read ({err.__class__.__name__}: {err})") from None
    for number, line in enumerate(raw.split(b"\n"), 1):
        if line.strip():
            yield number, parse_line(line, path, number)
