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


def plausible_only(scores: torch.Tensor, base: torch.Tensor, min_ratio: float) -> torch.Tensor:
    """Keep steered scores only on tokens the base itself finds plausible; -inf elsewhere.

    A token is plausible when the base gives it at least ``min_ratio`` times the probability of its
    top token (the adaptive plausibility constraint of contrastive decoding, Li et al. 2023; DExperts
    restricts steering to the base's top-p set in the same spirit). ``expert - anti_expert`` is large
    and noisy on tokens both small models find very unlikely, so at a high alpha it can lift such a
    token above the base's real candidates: junk such as ``46 {@version=2`` after an answer. The
    base's top token always stays allowed, so the result is never all -inf.

    Args:
        scores: Steered scores, ``[..., V]`` (e.g. :func:`proxy_scores`).
        base: The base's logits at the same step, ``[..., V']`` with ``V' >= V``.
        min_ratio: In (0, 1]; 0 disables the constraint (``scores`` returned unchanged).

    Returns:
        ``scores`` with implausible tokens set to ``-inf``.
    """
    if min_ratio <= 0:
        return scores
    if min_ratio > 1:
        raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")
    logp = torch.log_softmax(base[..., : scores.shape[-1]].float(), dim=-1)
    keep = logp >= logp.max(dim=-1, keepdim=True).values + torch.log(torch.tensor(min_ratio))
    return scores.masked_fill(~keep, float("-inf"))
