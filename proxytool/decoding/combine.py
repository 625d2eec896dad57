"""The proxy-tuning formula on a shared vocabulary."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Steer:
    """One expert pair's contribution: ``alpha * (expert - anti_expert)``."""

    alpha: float
    expert: torch.Tensor
    anti_expert: torch.Tensor


def shared_width(*logits: torch.Tensor, vocab_size: int | None = None) -> int:
    """The shared vocabulary: logits padded beyond the tokenizer (Qwen 151936 for 151665 tokens,
    Llama 32000 vs 32001) are trimmed to the narrowest width and to the tokenizer's size."""
    return min([t.shape[-1] for t in logits] + ([vocab_size] if vocab_size else []))


def proxy_scores(base: torch.Tensor, steers: list[Steer], vocab_size: int | None = None) -> torch.Tensor:
    """``logits_M + Σ_i α_i (logits_M+_i − logits_M−_i)`` over the shared vocabulary, in fp32."""
    width = shared_width(base, *[t for s in steers for t in (s.expert, s.anti_expert)], vocab_size=vocab_size)
    scores = base[..., :width].float()
    for steer in steers:
        if steer.alpha != 0:
            scores = scores + steer.alpha * (steer.expert[..., :width].float() - steer.anti_expert[..., :width].float())
    return scores
