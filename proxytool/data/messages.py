"""Chat messages in data files: one rule for prompts (decode) and training data (train)."""

from pathlib import Path

from proxytool.errors import ProxyToolError, at

ROLES = ("system", "user", "assistant")


def check_messages(messages, path: Path | str, line: int) -> tuple[dict, ...]:
    """A non-empty list of ``{"role", "content"}`` objects with known roles and string contents; errors
    name ``file:line`` and the field (``messages[2].role``)."""
    if not isinstance(messages, list) or not messages:
        raise ProxyToolError(f'{at(path, line, "messages")}: must be a non-empty list of {{"role", "content"}} objects')
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ProxyToolError(f"{at(path, line, where)}: must be an object, got {json_type(message)}")
        if message.get("role") not in ROLES:
            raise ProxyToolError(
                f"{at(path, line, where + '.role')}: must be one of {', '.join(ROLES)} (got {message.get('role')!r})"
            )
        if not isinstance(message.get("content"), str):
            raise ProxyToolError(
                f"{at(path, line, where + '.content')}: must be a string, got {json_type(message.get('content'))}"
            )
    return tuple({"role": m["role"], "content": m["content"]} for m in messages)


def json_type(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")
