"""Per-role prompt formatting: a chat-tuned model gets its chat template, a base model the raw text."""

from dataclasses import dataclass


@dataclass(frozen=True)
class TokenPrompt:
    """A prompt given as token ids: every role sees exactly these ids (no template, no tokenization)."""

    ids: tuple[int, ...]


Prompt = str | list[dict] | TokenPrompt  # raw text, chat messages [{"role": ..., "content": ...}], or ids


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a prompts file, as decode-to-file writes its row."""

    id: str
    prompt: Prompt
    index: int  # position in the input file (seeds sampling, orders output)


def as_messages(prompt: Prompt) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


RAW_USER, RAW_ASSISTANT = "User:", "Assistant:"


def as_text(prompt: Prompt) -> str:
    """Raw text of a prompt for a model without a chat template.

    A single user turn (after any system text) is its plain content; a conversation becomes a
    "User: ... / Assistant: ..." transcript ending with "Assistant:".
    """
    if isinstance(prompt, str):
        return prompt
    system = [m["content"] for m in prompt if m["role"] == "system"]
    turns = [m for m in prompt if m["role"] != "system"]
    if len(turns) == 1 and turns[0]["role"] == "user":
        return "\n\n".join(system + [turns[0]["content"]])
    labels = {"user": RAW_USER, "assistant": RAW_ASSISTANT}
    lines = [f"{labels.get(m['role'], m['role'].capitalize() + ':')} {m['content']}" for m in turns]
    return "\n\n".join(system + lines + [RAW_ASSISTANT])


@dataclass(frozen=True, eq=False)
class PromptFormat:
    """How one role turns a prompt into token ids: ``style`` is "chat" or "raw"."""

    tokenizer: object
    style: str = "raw"

    def same_as(self, other: "PromptFormat") -> bool:
        return self.tokenizer is other.tokenizer and self.style == other.style

    def encode(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, TokenPrompt):
            return list(prompt.ids)
        if self.style == "chat":
            text = self.tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)
            return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.tokenizer(as_text(prompt))["input_ids"]
