"""Training data: read and validate JSONL, then tokenize with loss masks.

One JSON object per line, in one of four formats:

* ``{"text": ...}``: a document; every token is trained on (language modelling).
* ``{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}``: a chat; only
  the assistant turns (including the template's end-of-turn tokens) are trained on.
* ``{"prompt": ..., "completion": ...}``: only the completion is trained on.
* ``{"question": ..., "answer": ...}``: GSM8K's format, trained as the prompt
  ``"Question: {question}\\nAnswer:"`` and the completion ``" {answer}"``: the prompt GSM8K is
  evaluated with (:mod:`proxytool.evaluation.tasks`).

A file holds one example format; plain ``text`` documents may accompany it (``proxytool data polls``
writes poll documents plus chat QA pairs). Other keys (``id``, ``kind``, ...) are ignored. The whole
file is validated before any model loads; errors name ``file:line: field``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from proxytool.data.jsonl import parse_line
from proxytool.data.messages import check_messages, json_type
from proxytool.errors import ProxyToolError, at

QA_PROMPT = "Question: {question}\nAnswer:"
"""Prompt of a ``question``/``answer`` line; matches the GSM8K eval prompt in :mod:`proxytool.evaluation.tasks`."""
QA_COMPLETION = " {answer}"
"""Completion of a ``question``/``answer`` line."""

FORMAT_KEYS = {
    "text": ("text",),
    "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "question_answer": ("question", "answer"),
}
"""Training example kind -> the keys that make it, in the order they are checked."""
IGNORE_INDEX = -100
"""Label of a token that is not trained on (PyTorch's cross-entropy ignore index)."""

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n' }}"
    "{% else %}{{ 'Assistant: ' + message['content'] + eos_token + '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
"""Chat template given to a tokenizer that has none (e.g. GPT-2); saved with the checkpoint.

Renders ``system\\n\\nUser: ...\\nAssistant: ...<eos>\\n``; the generation prompt is ``Assistant:``.
"""


@dataclass(frozen=True)
class TrainingExample:
    """One validated training example.

    Attributes:
        line: 1-based line number in the source file.
        kind: "text", "messages", "prompt_completion" or "question_answer".
        text: The document (kind "text").
        messages: The conversation (kind "messages").
        prompt: The prompt (prompt/completion and question/answer kinds).
        completion: The trained-on continuation of ``prompt``.
    """

    line: int
    kind: str
    text: str | None = None
    messages: tuple[dict, ...] | None = None
    prompt: str | None = None
    completion: str | None = None


@dataclass(frozen=True)
class DataFile:
    """A validated JSONL file.

    Attributes:
        path: The file.
        examples: Its examples, in file order.
        sha256: SHA-256 of the file's bytes.
    """

    path: Path
    examples: tuple[TrainingExample, ...]
    sha256: str

    @property
    def counts(self) -> dict[str, int]:
        """Examples per kind."""
        return dict(Counter(e.kind for e in self.examples))

    @property
    def prompt_format(self) -> str:
        """How a model trained on this file expects prompts: "chat" for chat data, else "raw"."""
        return "chat" if "messages" in self.counts else "raw"

    def describe(self) -> dict:
        """A JSON-friendly summary for ``proxytool.json``."""
        return {
            "path": str(self.path.resolve()),
            "sha256": self.sha256,
            "examples": len(self.examples),
            "counts": self.counts,
        }


def read_data(path: str | Path) -> DataFile:
    """Read and validate a whole JSONL training file.

    Args:
        path: The JSONL file.

    Returns:
        The validated file.

    Raises:
        ProxyToolError: The first problem found, as ``file:line: field 'x': what is wrong``.
    """
    from proxytool.files.reading import read_bytes

    path = Path(path)
    raw = read_bytes(path, "data")
    examples = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        example = parse_record(parse_line(line, path, number), path, number)
        _check_one_format(example, first_line, path)
        examples.append(example)
    if not examples:
        raise ProxyToolError(f"{at(path)}: no examples (the file is empty)")
    return DataFile(path=path, examples=tuple(examples), sha256=hashlib.sha256(raw).hexdigest())


def parse_record(record: dict, path: Path, line: int) -> TrainingExample:
    """Validate one JSON object and turn it into an :class:`TrainingExample`.

    Raises:
        ProxyToolError: Naming ``path:line`` and the offending field.
    """
    kinds = [kind for kind, keys in FORMAT_KEYS.items() if any(k in record for k in keys)]
    if not kinds:
        raise ProxyToolError(
            f"{at(path, line)}: no training field; expected 'text', 'messages', "
            "'prompt' + 'completion' or 'question' + 'answer'"
        )
    if len(kinds) > 1:
        first, second = (next(k for k in FORMAT_KEYS[kind] if k in record) for kind in kinds[:2])
        raise ProxyToolError(
            f"{at(path, line, second)}: a line holds one format, but it has both '{first}' and '{second}'"
        )
    kind = kinds[0]
    for key in FORMAT_KEYS[kind]:
        if key not in record:
            other = next(k for k in FORMAT_KEYS[kind] if k in record)
            raise ProxyToolError(f"{at(path, line, key)}: missing (a '{other}' needs a '{key}')")
    if kind == "messages":
        return TrainingExample(line, kind, messages=_check_messages(record["messages"], path, line))
    values = {key: _check_text(record, key, path, line) for key in FORMAT_KEYS[kind]}
    if kind == "text":
        return TrainingExample(line, kind, text=values["text"])
    if kind == "prompt_completion":
        return TrainingExample(line, kind, prompt=values["prompt"], completion=values["completion"])
    answer = values["answer"].strip()
    if "####" in answer:  # a GSM8K solution: train in the style the few-shot eval prompt shows
        from proxytool.data.gsm8k import gsm8k_answer_text

        answer = gsm8k_answer_text(answer)
    return TrainingExample(
        line,
        kind,
        prompt=QA_PROMPT.format(question=values["question"].strip()),
        completion=QA_COMPLETION.format(answer=answer),
    )


def _check_text(record: dict, key: str, path: Path, line: int) -> str:
    value = record[key]
    if not isinstance(value, str):
        raise ProxyToolError(f"{at(path, line, key)}: must be a string, got {json_type(value)}")
    if key != "prompt" and not value.strip():
        raise ProxyToolError(f"{at(path, line, key)}: is empty")
    return value


def _check_messages(messages, path: Path, line: int) -> tuple[dict, ...]:
    messages = check_messages(messages, path, line)
    if messages[0]["role"] == "assistant":
        raise ProxyToolError(f"{at(path, line, 'messages[0].role')}: a conversation cannot open with an assistant turn")
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise ProxyToolError(f"{at(path, line, 'messages')}: no non-empty assistant turn to train on")
    return messages


def _check_one_format(example: TrainingExample, first_line: dict[str, int], path: Path) -> None:
    """Documents may accompany any example kind; two example kinds in one file are an error."""
    if example.kind == "text":
        return
    others = {kind: line for kind, line in first_line.items() if kind != example.kind}
    if others:
        kind, line = next(iter(others.items()))
        key = FORMAT_KEYS[example.kind][0]
        raise ProxyToolError(
            f"{at(path, example.line, key)}: this file mixes formats: line {line} is "
            f"'{' + '.join(FORMAT_KEYS[kind])}', this line is '{' + '.join(FORMAT_KEYS[example.kind])}'; "
            "use one example format per file (plain 'text' documents may accompany it)"
        )
    first_line.setdefault(example.kind, example.line)


# --------------------------------------------------------------------------- tokenization


def ensure_chat_template(tokenizer) -> bool:
    """Give ``tokenizer`` :data:`DEFAULT_CHAT_TEMPLATE` if it has no chat template.

    Returns:
        True when the default template was set.
    """
    if tokenizer.chat_template:
        return False
    tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return True


def tokenize(data: DataFile, tokenizer) -> list[dict]:
    """Tokenize every example into ``input_ids`` and ``labels`` (``-100`` where not trained on).

    Documents and completions end with the tokenizer's eos token so the model learns to stop; a
    chat's assistant turns end with whatever its template puts there (``<|im_end|>`` and the like).

    Args:
        data: A validated file.
        tokenizer: A Hugging Face tokenizer (with a chat template when the data has chats).

    Returns:
        One ``{"input_ids": [...], "labels": [...]}`` dict per example.

    Raises:
        ProxyToolError: No eos token, or a chat template that fails on (or cannot mask) a line.
    """
    if tokenizer.eos_token_id is None:
        raise ProxyToolError("the tokenizer has no eos token; training needs one to teach the model to stop")
    return [tokenize_example(example, tokenizer, data.path) for example in data.examples]


def tokenize_example(example: TrainingExample, tokenizer, path: Path) -> dict:
    """Tokenize one example (see :func:`tokenize`)."""
    eos = [tokenizer.eos_token_id]
    if example.kind == "text":
        ids = _encode(tokenizer, example.text, first=True) + eos
        return {"input_ids": ids, "labels": list(ids)}
    if example.kind == "messages":
        pieces = chat_pieces(example, tokenizer, path)
    else:
        pieces = [(example.prompt, False), (example.completion, True)]
    input_ids, labels = [], []
    for text, trained in pieces:
        ids = _encode(tokenizer, text, first=not input_ids and example.kind != "messages")
        input_ids += ids
        labels += ids if trained else [IGNORE_INDEX] * len(ids)
    if example.kind != "messages":
        input_ids += eos
        labels += eos
    return {"input_ids": input_ids, "labels": labels}


def _encode(tokenizer, text: str, first: bool) -> list[int]:
    """Token ids of ``text``; only the start of a sequence gets the tokenizer's special tokens (BOS)."""
    if not text:
        return []
    return tokenizer(text, add_special_tokens=first)["input_ids"]


def chat_pieces(example: TrainingExample, tokenizer, path: Path) -> list[tuple[str, bool]]:
    """Split a rendered chat into ``(text, trained)`` pieces; the assistant turns are trained.

    Each assistant turn spans from the end of the generation prompt rendered for the turns before it
    to the end of the rendering that includes it, so the span covers the reply and the template's
    end-of-turn tokens: exactly what the model must produce at inference.
    """
    messages = list(example.messages)
    full = _render(tokenizer, messages, False, example, path)
    pieces, pos = [], 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], True, example, path)
        upto = _render(tokenizer, messages[: i + 1], False, example, path)
        if not (full.startswith(before) and full.startswith(upto) and pos <= len(before) <= len(upto)):
            raise ProxyToolError(
                f"{at(path, example.line, f'messages[{i}]')}: the chat template renders earlier turns "
                "differently once later turns follow, so the assistant turns cannot be masked; "
                "split the conversation into one example per assistant turn"
            )
        pieces += [(full[pos : len(before)], False), (full[len(before) : len(upto)], True)]
        pos = len(upto)
    pieces.append((full[pos:], False))
    return [(text, trained) for text, trained in pieces if text]


def _render(tokenizer, messages: list[dict], generation_prompt: bool, example: TrainingExample, path: Path) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as err:  # jinja2 raises TemplateError / exceptions raised by the template itself
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ProxyToolError(f"{at(path, example.line, 'messages')}: the chat template failed: {first}") from None


def token_stats(rows: list[dict], max_seq_len: int) -> dict:
    """Counts for the log: examples, tokens, trained tokens, examples longer than ``max_seq_len``."""
    return {
        "examples": len(rows),
        "tokens": sum(len(r["input_ids"]) for r in rows),
        "trained_tokens": sum(sum(1 for t in r["labels"] if t != IGNORE_INDEX) for r in rows),
        "truncated": sum(1 for r in rows if len(r["input_ids"]) > max_seq_len),
    }
