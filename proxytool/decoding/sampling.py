"""Next-token choice: greedy or temperature / top-k / top-p sampling with one seeded generator per row."""

from dataclasses import dataclass

import torch
from transformers import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from proxytool.errors import ProxyToolError


@dataclass(frozen=True)
class SamplingConfig:
    """``temperature == 0`` means greedy. ``top_k == 0`` and ``top_p == 1`` disable those filters."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0:
            raise ProxyToolError(f"--temperature must be >= 0 (got {self.temperature})")
        if self.top_k < 0:
            raise ProxyToolError(f"--top-k must be >= 0 (got {self.top_k})")
        if not 0 < self.top_p <= 1:
            raise ProxyToolError(f"--top-p must be in (0, 1] (got {self.top_p})")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def filters(self) -> tuple:
        """What rows choosing in one call must share (the seed is each row's own generator's)."""
        return ("greedy",) if self.greedy else (self.temperature, self.top_k, self.top_p)

    def warpers(self) -> LogitsProcessorList:
        """transformers' own logits warpers, in generate()'s order."""
        warpers = LogitsProcessorList()
        if self.temperature not in (0, 1):
            warpers.append(TemperatureLogitsWarper(self.temperature))
        if self.top_k > 0:
            warpers.append(TopKLogitsWarper(self.top_k))
        if self.top_p < 1:
            warpers.append(TopPLogitsWarper(self.top_p))
        return warpers


def row_generators(config: SamplingConfig, row_seeds: list[int]) -> list[torch.Generator]:
    """One generator per prompt, seeded from (seed, prompt index): a batch samples as each prompt alone."""
    return [torch.Generator().manual_seed(config.seed * 1_000_003 + s) for s in row_seeds]


def choose_next(
    scores: torch.Tensor, config: SamplingConfig, generators: list[torch.Generator], warpers: LogitsProcessorList
) -> torch.Tensor:
    """Pick one token per row of ``scores`` [batch, vocab]."""
    if config.greedy:
        return scores.argmax(dim=-1)
    probs = torch.softmax(warpers(None, scores.float()), dim=-1).cpu()
    picks = [torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)]
    return torch.cat(picks).to(scores.device)
