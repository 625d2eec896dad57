"""The proxy-tuning formula on a shared vocabulary, and the one filter that may restrict it."""

import math
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


def proxy_scores(
    base: torch.Tensor, steers: list[Steer], vocab_size: int | None = None, plausible: float = 0.0
) -> torch.Tensor:
    """``logits_M + Σ_i α_i (logits_M+_i − logits_M−_i)`` over the shared vocabulary, in fp32.

    ``plausible`` (0 = off): keep only tokens that the base *or* a steering expert finds plausible
    (see :func:`plausible_mask`); the others get ``-inf``. Kept tokens keep the formula's value, so
    where every token is kept (or the best ones are) the result is the unfiltered formula's.
    """
    width = shared_width(base, *[t for s in steers for t in (s.expert, s.anti_expert)], vocab_size=vocab_size)
    scores = base[..., :width].float()
    steering = [s for s in steers if s.alpha != 0]
    for steer in steering:
        scores = scores + steer.alpha * (steer.expert[..., :width].float() - steer.anti_expert[..., :width].float())
    if plausible > 0 and steering:
        keep = plausible_mask([base[..., :width]] + [s.expert[..., :width] for s in steering], plausible)
        scores = scores.masked_fill(~keep, float("-inf"))
    return scores


def plausible_mask(logits: list[torch.Tensor], ratio: float) -> torch.Tensor:
    """Tokens that at least one of ``logits`` (the base, the experts) finds plausible: a probability at
    least ``ratio`` times that model's most likely token (``logit >= max + log ratio``; no softmax
    needed, so raw logits and log-probabilities give the same set, and ``-inf`` is never kept).

    Why a union: ``expert − anti`` is large-magnitude noise on tokens both small models find
    implausible (training never looks at the tail), and α amplifies it into junk glued to answers
    (``45%ucha``). The base alone cannot be the filter: the tokens of a fact the base does not know,
    and the expert's end of answer, are implausible to the base (docs/decoding.md, docs/results.md).
    """
    threshold = math.log(ratio)
    keep = None
    for scores in logits:
        scores = scores.float()
        top = scores.max(dim=-1, keepdim=True).values
        mine = scores >= top + threshold
        keep = mine if keep is None else keep | mine
    return keep
