"""OpenAI's ``logit_bias``, ``presence_penalty`` and ``frequency_penalty``, applied to the steered scores.

OpenAI's definition, per row and position, on the combined (proxy-tuned) scores before temperature and
top-k/top-p: ``score[j] + bias[j] - c[j] * frequency_penalty - (c[j] > 0) * presence_penalty``, where
``c[j]`` counts token ``j`` among the tokens this row generated so far (the prompt does not count).
Returned log-probabilities stay those of the proxy's distribution before these changes (vLLM's default
``raw_logprobs``).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from proxytool.decoding.generate import ScoreAdjuster


@dataclass(frozen=True)
class ScoreChanges:
    """One row's changes: ``bias`` as (token id, value) pairs, and the two penalties."""

    bias: tuple[tuple[int, float], ...] = ()
    presence: float = 0.0
    frequency: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.bias) or self.presence != 0 or self.frequency != 0

    def apply(self, row: torch.Tensor, generated: Sequence[int]) -> torch.Tensor:
        """``row`` [vocab] changed in place (and returned)."""
        vocab = row.shape[-1]
        bias = [(t, v) for t, v in self.bias if t < vocab]
        if bias:
            ids = torch.tensor([t for t, _ in bias], device=row.device)
            row[ids] += torch.tensor([v for _, v in bias], dtype=row.dtype, device=row.device)
        if (self.presence or self.frequency) and generated:
            counts = torch.bincount(torch.tensor(list(generated)), minlength=vocab)[:vocab]
            counts = counts.to(device=row.device, dtype=row.dtype)
            row -= counts * self.frequency + (counts > 0).to(row.dtype) * self.presence
        return row


def adjuster(rows: Sequence[ScoreChanges]) -> ScoreAdjuster | None:
    """The ``adjust`` hook of :func:`proxytool.decoding.generate.generate` for a batch, or None when no row
    changes anything (the scores are then used as they are)."""
    if not any(r.active for r in rows):
        return None

    def adjust(scores: torch.Tensor, histories: list[list[int]]) -> torch.Tensor:
        out = scores.clone()
        for i, changes in enumerate(rows):
            if changes.active:
                changes.apply(out[i], histories[i])
        return out

    return adjust
