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
    budget: int = 0  # the most tokens it may get (max_new_tokens)

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

    def join(self, other: "RowSampling") -> None:
        """Take ``other``'s rows after these (each keeps its generator: it draws as it would alone)."""
        if other.eos_ids != self.eos_ids:
            raise ValueError("rows that end on different ids cannot share a batch")
        self.generators += other.generators

    def drop(self, rows: set[int]) -> None:
        self.generators = [g for i, g in enumerate(self.generators) if i not in rows]


class Rows:
    """The rows of a batch, each with its own token budget: tokens are emitted one column at a time."""

    def __init__(
        self, n: int, max_new_tokens: int | Sequence[int], tokenizer, eos_ids: frozenset[int], stop: Sequence[str]
    ):
        budgets = [max_new_tokens] * n if isinstance(max_new_tokens, int) else list(max_new_tokens)
        self.rows = [Row(budget=b) for b in budgets]
        self.tokenizer, self.eos_ids, self.stop = tokenizer, eos_ids, tuple(stop)
        self._end_for_length()

    @property
    def over(self) -> bool:
        return all(row.done for row in self.rows)

    @property
    def left(self) -> int:
        """The most tokens an unfinished row may still get."""
        return max((row.budget - len(row.token_ids) for row in self.rows if not row.done), default=0)

    def active(self) -> list[int]:
        return [i for i, row in enumerate(self.rows) if not row.done]

    def finished(self) -> set[int]:
        return {i for i, row in enumerate(self.rows) if row.done}

    def emit(self, tokens: list[int]) -> None:
        """Append one token to every unfinished row; rows end at EOS, a stop string or their budget."""
        for row, token in zip(self.rows, tokens):
            if not row.done:
                self._append(row, token)
        self._end_for_length()

    def join(self, other: "Rows") -> None:
        """Take ``other``'s rows after these (the same end-of-sequence ids and stop strings)."""
        if (other.eos_ids, other.stop) != (self.eos_ids, self.stop):
            raise ValueError("rows with different stop conditions cannot share a batch")
        self.rows += other.rows

    def drop(self, rows: set[int]) -> None:
        self.rows = [row for i, row in enumerate(self.rows) if i not in rows]

    def _end_for_length(self) -> None:
        for row in self.rows:
            if not row.done and len(row.token_ids) >= row.budget:
                row.finish_reason = "length"

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
