"""Teacher-forced scoring: the log-probability of given continuations under the proxy distribution.

``scores_t`` is exactly what :func:`proxytool.decoding.generate.generate` samples from at that step
(the proxy formula over the shared vocabulary; one model's logits when there are no pairs). The
prompts are prefilled, then every continuation token is appended in one forward.
"""

from collections.abc import Sequence

import torch

from proxytool.decoding.formats import Prompt
from proxytool.decoding.roles import ProxyModels
from proxytool.decoding.stepper import Stepper
from proxytool.errors import ProxyToolError


def continuation_logprobs(
    models: ProxyModels,
    prompts: Sequence[Prompt],
    continuations: Sequence[Sequence[int]],
    alphas: Sequence[float] | None = None,
) -> list[list[float]]:
    """Per row, ``log_softmax(scores_t)[token_t]`` for each continuation token.

    Rows whose continuation is shorter are padded; padding comes after every real token, so causal
    attention keeps it from touching the real tokens' scores.
    """
    if models.crosses_tokenizers:  # a forced token outside the base's candidates would get no offset
        raise ProxyToolError("scoring continuations needs one vocabulary; it is not available across tokenizers")
    longest = max(len(c) for c in continuations)
    pad = models.tokenizer.pad_token_id if models.tokenizer.pad_token_id is not None else 0
    tokens = torch.tensor([list(c) + [pad] * (longest - len(c)) for c in continuations], dtype=torch.long)
    with Stepper(models, alphas) as stepper:
        first = stepper.prefill(prompts)
        rest = stepper.extend(tokens[:, :-1]) if longest > 1 else first.unsqueeze(1)[:, :0]
    scores = torch.cat([first.unsqueeze(1), rest], dim=1)
    picked = torch.log_softmax(scores, dim=-1).gather(-1, tokens.to(scores.device).unsqueeze(-1)).squeeze(-1)
    return [picked[i, : len(c)].tolist() for i, c in enumerate(continuations)]


def prompt_logprobs(
    models: ProxyModels, prompts: Sequence[Prompt], alphas: Sequence[float] | None = None
) -> list[list[float | None]]:
    """Per prompt, the log-probability of each of its tokens given the ones before (None for the first).

    Every role must see the same token ids (raw prompts or token ids).
    """
    with Stepper(models, alphas) as stepper:
        scores = stepper.prefill(prompts, all_positions=True)
        rows = models.base.source.encode(list(prompts))[models.base.group * len(prompts) :][: len(prompts)]
    logp = torch.log_softmax(scores, dim=-1)
    width = scores.shape[1]
    out = []
    for i, row in enumerate(rows):
        start = width - len(row)  # left padding
        values = [None]
        for t in range(1, len(row)):
            values.append(logp[i, start + t - 1, row[t]].item())
        out.append(values)
    return out
