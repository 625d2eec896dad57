"""JSONL reading shared by prompts, training data and eval sets: errors name file:line."""

import gzip
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

from proxytool.errors import ProxyToolError, at


class _HugeNumber(ValueError):
    """An integer literal longer than Python converts (``sys.get_int_max_str_digits``)."""


def _parse_int(digits: str) -> int:
    try:
        return int(digits)
    except ValueError:
        raise _HugeNumber(digits) from None


def parse_line(line: str | bytes, path, number: int) -> dict:
    """One JSONL line as a dict, or a ProxyToolError naming ``path:number`` (and the field where known)."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
        record = json.loads(text, parse_int=_parse_int)
    except UnicodeDecodeError:
        raise ProxyToolError(f"{at(path, number)}: not UTF-8 text") from None
    except _HugeNumber as err:
        digits = str(err).lstrip("-")
        key = re.search(r'"([^"\\]{1,100})"\s*:\s*-?' + digits[:50], text)
        where = at(path, number, key.group(1)) if key else at(path, number)
        raise ProxyToolError(f"{where}: a number of {len(digits)} digits is too long to be an id or a value") from None
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
