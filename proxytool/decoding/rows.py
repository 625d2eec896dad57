"""Row bookkeeping of one generation: tokens so far, why a row ended, where a stop string starts."""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from proxytool.decoding.sampling import SamplingConfig, row_generators


@dataclass
class Row:
    """One prompt's generation so far."""

    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" (EOS or stop string) or "length"
    text_end: int | None = None  # where a stop string starts in the decoded text

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RowSampling:
    """What a generation draws with: one seeded generator per prompt, the warpers, the ids that end a row."""

    generators: list[torch.Generator]
    warpers: object
    eos_ids: frozenset[int]

    @classmethod
    def start(cls, eos_ids: frozenset[int], n_prompts: int, sampling: SamplingConfig, row_seeds, ignore_eos: bool):
        seeds = list(row_seeds if row_seeds is not None else range(n_prompts))
        return cls(row_generators(sampling, seeds), sampling.warpers(), frozenset() if ignore_eos else eos_ids)


class Rows:
    """The rows of a batch and the token budget: tokens are emitted one column at a time."""

    def __init__(self, n: int, max_new_tokens: int, tokenizer, eos_ids: frozenset[int], stop: Sequence[str]):
        self.rows = [Row() for _ in range(n)]
        self.budget = max_new_tokens
        self.emitted = 0
        self.tokenizer, self.eos_ids, self.stop = tokenizer, eos_ids, tuple(stop)
        if max_new_tokens <= 0:
            self._end_for_length()

    @property
    def over(self) -> bool:
        return all(row.done for row in self.rows)

    @property
    def left(self) -> int:
        """Tokens each unfinished row may still get."""
        return self.budget - self.emitted

    def active(self) -> list[int]:
        return [i for i, row in enumerate(self.rows) if not row.done]

    def finished(self) -> set[int]:
        return {i for i, row in enumerate(self.rows) if row.done}

    def emit(self, tokens: list[int]) -> None:
        """Append one token to every unfinished row; rows end at EOS, a stop string or the budget."""
        for row, token in zip(self.rows, tokens):
            if not row.done:
                self._append(row, token)
        self.emitted += 1
        if self.emitted >= self.budget:
            self._end_for_length()

    def _end_for_length(self) -> None:
        for row in self.rows:
            row.finish_reason = row.finish_reason or "length"

    def _append(self, row: Row, token: int) -> None:
        row.token_ids.append(token)
        if token in self.eos_ids:
            row.finish_reason = "stop"
            return
        if self.stop:
            text = self.tokenizer.decode(row.token_ids, skip_special_tokens=True)
            hits = [text.find(s) for s in self.stop if s in text]
            if hits:
                row.finish_reason, row.text_end = "stop", min(hits)
