"""Log-probabilities the server returns: always those of the proxy-tuned distribution.

``log_softmax(scores)`` of the combined scores (untempered: the distribution the proxy defines, not
the sampling filters applied to it), so a proxytool server can serve as the base of another proxy
setup and lm-eval can score log-likelihoods with it. The web page's trace adds the base's own
log-probabilities at the same positions.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from proxytool.decoding.formats import TokenPrompt
from proxytool.decoding.generate import ScoreAdjuster, completion_of
from proxytool.decoding.roles import ProxyModels
from proxytool.decoding.rows import Rows, RowSampling
from proxytool.decoding.sampling import SamplingConfig, choose_next
from proxytool.decoding.stepper import Stepper

MAX_TOP_LOGPROBS = 20


@dataclass
class TokenInfo:
    """One position: the chosen token's log-probability and the best alternatives (id, logprob)."""

    logprob: float
    top: list[tuple[int, float]]
    base_logprob: float | None = None
    base_top: list[tuple[int, float]] | None = None
    extra: list[tuple[int, float]] = field(default_factory=list)  # asked ids (``logprob_token_ids``), any rank


def _extra(logp: torch.Tensor, ids: Sequence[int]) -> list[tuple[int, float]]:
    ids = [i for i in ids if 0 <= i < logp.shape[-1]]
    return list(zip(ids, logp[ids].tolist())) if ids else []


def _top(logp: torch.Tensor, n: int) -> list[tuple[int, float]]:
    if n <= 0:
        return []
    values, ids = logp.topk(min(n, logp.shape[-1]))
    return list(zip(ids.tolist(), values.tolist()))


def token_info(
    scores: torch.Tensor,
    token: int,
    top_n: int | None,
    base_logits: torch.Tensor | None = None,
    extra_ids: Sequence[int] = (),
) -> TokenInfo:
    """For one row of combined ``scores`` [vocab] and the chosen ``token``; ``extra_ids``: ids whose
    log-probabilities are returned too, whatever their rank (vLLM's ``logprob_token_ids``)."""
    logp = torch.log_softmax(scores.float(), dim=-1)
    info = TokenInfo(logp[token].item(), _top(logp, top_n or 0), extra=_extra(logp, extra_ids))
    if base_logits is not None:
        base = torch.log_softmax(base_logits[: scores.shape[-1]].float(), dim=-1)
        info.base_logprob = base[token].item()
        info.base_top = _top(base, 5)
        if not top_n:
            info.top = _top(logp, 5)
    return info


def prompt_token_infos(
    models: ProxyModels,
    prompts: Sequence[TokenPrompt],
    top_n: int,
    alphas: Sequence[float] | None = None,
    extra_ids: Sequence[int] = (),
    scores: torch.Tensor | None = None,
) -> list[list[TokenInfo | None]]:
    """Per prompt, each token's log-probability given the ones before (None for the first), in one forward.

    The same values as :func:`proxytool.decoding.scoring.prompt_logprobs`, plus the top alternatives.
    ``scores``: the all-positions prefill of ``prompts`` when the caller has it already.
    """
    if scores is None:
        scores = all_position_scores(models, prompts, alphas)
    logp = torch.log_softmax(scores, dim=-1)
    width = scores.shape[1]
    out = []
    for i, prompt in enumerate(prompts):
        ids = list(prompt.ids)
        start = width - len(ids)  # left padding
        infos: list[TokenInfo | None] = [None]
        for t in range(1, len(ids)):
            row = logp[i, start + t - 1]
            infos.append(TokenInfo(row[ids[t]].item(), _top(row, top_n), extra=_extra(row, extra_ids)))
        out.append(infos)
    return out


def all_position_scores(
    models: ProxyModels, prompts: Sequence[TokenPrompt], alphas: Sequence[float] | None = None
) -> torch.Tensor:
    """The combined scores at every prompt position [prompts, width, vocab], left-padded; the last
    position scores the first new token."""
    with Stepper(models, alphas) as stepper:
        return stepper.prefill(list(prompts), all_positions=True)


@dataclass
class FirstToken:
    """One row's only new token, chosen from the scores after its prompt, and how the row ended."""

    token_id: int
    info: TokenInfo
    text: str
    finish_reason: str


def first_tokens(
    models: ProxyModels,
    last: torch.Tensor,
    n: int,
    sampling: SamplingConfig,
    row_seeds: Sequence[int],
    *,
    top_n: int | None,
    extra_ids: Sequence[int] = (),
    stop: Sequence[str] = (),
    ignore_eos: bool = False,
    adjust: ScoreAdjuster | None = None,
) -> list[FirstToken]:
    """``max_tokens: 1`` from the scores after each prompt (``last`` [prompts, vocab]), ``n`` rows per
    prompt: the choice :func:`proxytool.decoding.generate.generate` makes for its first token (the same
    seeded draw, EOS and stop handling), without a second prefill (lm-eval's echo + logprobs requests)."""
    scores = last.repeat_interleave(n, dim=0)
    draw = RowSampling.start(models.eos_ids, len(scores), sampling, list(row_seeds), ignore_eos)
    rows = Rows(len(scores), 1, models.tokenizer, draw.eos_ids, stop)
    chosen_from = scores if adjust is None else adjust(scores, [[] for _ in range(len(scores))])
    tokens = choose_next(chosen_from, sampling, draw.generators, draw.warpers).tolist()
    rows.emit(tokens)
    out = []
    for i, row in enumerate(rows.rows):
        done = completion_of(row, models.tokenizer)
        info = token_info(scores[i], tokens[i], top_n, extra_ids=extra_ids)
        out.append(FirstToken(tokens[i], info, done.text, done.finish_reason))
    return out
