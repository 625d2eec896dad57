"""Read prompts for `decode`: JSONL with `prompt` or `messages` (optional `id`), plain text, or stdin."""

import gzip
import io
import sys
import zlib
from pathlib import Path

from proxytool.data.jsonl import parse_line
from proxytool.data.messages import check_messages
from proxytool.decoding.formats import Prompt, PromptItem
from proxytool.errors import ProxyToolError, at

MAX_BYTES = 256 * 2**20  # prompts files larger than this are surely a mistake (/dev/zero, a binary)


def read_prompts(path: str) -> list[PromptItem]:
    """Read and validate every prompt first; errors name file:line and field.

    A ``.jsonl`` file (or stdin whose first non-blank line starts with ``{``) is JSONL; anything else
    is one prompt per non-blank line, with ids "1", "2", ... by line number.
    """
    name = "<stdin>" if path == "-" else path
    lines = read_text_lines(path, name, "prompts")
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    is_jsonl = name.removesuffix(".gz").endswith(".jsonl") or (path == "-" and first.startswith("{"))
    items = _read_jsonl(name, lines) if is_jsonl else _read_text(lines)
    if not items:
        raise ProxyToolError(f"{name}: no prompts")
    return items


def read_text_lines(path: str, name: str, what: str) -> list[str]:
    """The lines of a UTF-8 text file (or stdin for "-"), read with a size bound; errors name file:line."""
    if path == "-":
        stream = getattr(sys.stdin, "buffer", None)
        data = stream.read(MAX_BYTES + 1) if stream is not None else sys.stdin.read(MAX_BYTES + 1)
    else:
        file = Path(path)
        try:
            if file.is_dir():
                raise ProxyToolError(f"{path}: is a folder, not a {what} file")
            if file.exists() and not (file.is_file() or file.is_fifo()):
                raise ProxyToolError(f"{path}: not a regular file")
            with open(file, "rb") as f:
                data = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            raise ProxyToolError(f"{path}: {what} file not found") from None
        except OSError as err:
            raise ProxyToolError(f"{path}: cannot read {what} ({err.strerror or err})") from None
    if isinstance(data, bytes) and name.endswith(".gz"):
        data = _gunzip(data, name)
    if len(data) > MAX_BYTES:
        raise ProxyToolError(f"{name}: larger than {MAX_BYTES // 2**20} MiB; split it")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = data[: err.start].count(b"\n") + 1
            raise ProxyToolError(f"{at(name, line)}: not UTF-8 text (byte 0x{data[err.start]:02x})") from None
    else:
        text = data
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise ProxyToolError(f"{at(name, line)}: binary data (a NUL byte), not text")
    return text.splitlines()


def _read_text(lines: list[str]) -> list[PromptItem]:
    items = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            items.append(PromptItem(id=str(number), prompt=line, index=len(items)))
    return items


def _read_jsonl(name: str, lines: list[str]) -> list[PromptItem]:
    items, seen = [], set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        record = parse_line(line, name, number)
        prompt = _prompt_of(record, name, number)
        raw_id = record.get("id", number)
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            raise ProxyToolError(f"{at(name, number, 'id')} must be a string or an integer")
        item_id = str(raw_id)
        _no_surrogates(item_id, name, number, "id")
        if item_id in seen:
            raise ProxyToolError(f"{at(name, number, 'id')} duplicates id '{item_id}'")
        seen.add(item_id)
        items.append(PromptItem(id=item_id, prompt=prompt, index=len(items)))
    return items


def _prompt_of(record: dict, name: str, number: int) -> Prompt:
    if "prompt" in record:
        if not isinstance(record["prompt"], str):
            raise ProxyToolError(f"{at(name, number, 'prompt')} must be a string")
        _no_surrogates(record["prompt"], name, number, "prompt")
        return record["prompt"]
    if "messages" in record:
        messages = list(check_messages(record["messages"], name, number))  # the rule train applies too
        for m in messages:
            _no_surrogates(m["content"], name, number, "messages")
        return messages
    raise ProxyToolError(f"{at(name, number, 'prompt')} is missing (give 'prompt' or 'messages')")


def _no_surrogates(text: str, name: str, number: int, field: str) -> None:
    """JSON allows "\\ud800" escapes that are no character at all; no tokenizer can encode them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ProxyToolError(
            f"{at(name, number, field)} has an unpaired surrogate {text[err.start]!a} at character {err.start}"
        ) from None


def _gunzip(data: bytes, name: str) -> bytes:
    """A gzip file's content, read up to one byte past the size limit (a small file can unpack huge)."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            return f.read(MAX_BYTES + 1)
    except (gzip.BadGzipFile, EOFError, OSError, zlib.error) as err:
        raise ProxyToolError(f"{name}: not a readable gzip file ({err.__class__.__name__}: {err})") from None
