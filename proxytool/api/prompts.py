"""The prompts the public API takes: a string, a conversation (``messages``), token ids, or a list of them."""

from collections.abc import Sequence

from proxytool.decoding.formats import Prompt, TokenPrompt
from proxytool.errors import ProxyToolError

ROLES = ("system", "user", "assistant")


def as_batch(prompts) -> tuple[list[Prompt], bool]:
    """``(prompts as a list, whether one prompt was given)``; each one checked, errors in one line.

    One prompt is a string, a :class:`TokenPrompt`, or one conversation (a list of ``{"role", "content"}``
    dicts); anything else must be a list of those.
    """
    if _is_one(prompts):
        return [_checked(prompts, "prompt")], True
    if isinstance(prompts, Sequence) and not isinstance(prompts, (bytes, bytearray)):
        return [_checked(p, f"prompts[{i}]") for i, p in enumerate(prompts)], False
    raise ProxyToolError(f"prompts must be a string, a list of messages, or a list of those (got {_kind(prompts)})")


def _is_one(prompt) -> bool:
    if isinstance(prompt, (str, TokenPrompt)):
        return True
    return isinstance(prompt, Sequence) and bool(prompt) and all(isinstance(m, dict) for m in prompt)


def _checked(prompt, where: str) -> Prompt:
    if isinstance(prompt, TokenPrompt):
        if not prompt.ids or not all(isinstance(i, int) and i >= 0 for i in prompt.ids):
            raise ProxyToolError(f"{where}: token ids must be a non-empty list of ids >= 0")
        return prompt
    if isinstance(prompt, str):
        _utf8(prompt, where)
        return prompt
    if isinstance(prompt, Sequence) and prompt and all(isinstance(m, dict) for m in prompt):
        for j, message in enumerate(prompt):
            if message.get("role") not in ROLES or not isinstance(message.get("content"), str):
                raise ProxyToolError(
                    f"{where}[{j}]: a message is {{'role': one of {', '.join(ROLES)}, 'content': a string}}"
                )
            _utf8(message["content"], f"{where}[{j}]")
        return [dict(m) for m in prompt]
    raise ProxyToolError(f"{where}: a prompt is a string or a list of {{role, content}} messages (got {_kind(prompt)})")


def _utf8(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ProxyToolError(f"{where}: not valid UTF-8 text (character {err.start + 1})") from None


def _kind(value) -> str:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and not value:
        return "an empty list"
    return type(value).__name__
