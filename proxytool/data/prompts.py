"""Read prompts for `decode`: JSONL with `prompt` or `messages` (optional `id`), plain text, or stdin."""

import sys
from dataclasses import dataclass
from pathlib import Path

from proxytool.data.jsonl import parse_line
from proxytool.decoding.formats import Prompt
from proxytool.errors import ProxyToolError, at


@dataclass(frozen=True)
class PromptItem:
    id: str
    prompt: Prompt
    index: int  # position in the input file (seeds sampling, orders output)


def read_prompts(path: str) -> list[PromptItem]:
    """Read and validate every prompt first; errors name file:line and field.

    A ``.jsonl`` file (or stdin whose first non-blank line starts with ``{``) is JSONL; anything else
    is one prompt per non-blank line, with ids "1", "2", ... by line number.
    """
    name = "<stdin>" if path == "-" else path
    if path == "-":
        lines = sys.stdin.read().splitlines()
    else:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise ProxyToolError(f"{path}: prompts file not found") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ProxyToolError(f"{path}: cannot read prompts ({err})") from None
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    is_jsonl = name.endswith(".jsonl") or (path == "-" and first.startswith("{"))
    items = _read_jsonl(name, lines) if is_jsonl else _read_text(lines)
    if not items:
        raise ProxyToolError(f"{name}: no prompts")
    return items


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
        item_id = str(record.get("id", number))
        if item_id in seen:
            raise ProxyToolError(f"{at(name, number, 'id')} duplicates id '{item_id}'")
        seen.add(item_id)
        items.append(PromptItem(id=item_id, prompt=prompt, index=len(items)))
    return items


def _prompt_of(record: dict, name: str, number: int) -> Prompt:
    if "prompt" in record:
        if not isinstance(record["prompt"], str):
            raise ProxyToolError(f"{at(name, number, 'prompt')} must be a string")
        return record["prompt"]
    if "messages" in record:
        messages = record["messages"]
        ok = (
            isinstance(messages, list)
            and messages
            and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages
            )
        )
        if not ok:
            raise ProxyToolError(
                f"{at(name, number, 'messages')} must be a non-empty list of {{role, content}} objects"
            )
        return messages
    raise ProxyToolError(f"{at(name, number, 'prompt')} is missing (give 'prompt' or 'messages')")
