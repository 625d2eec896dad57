"""Speculative proxy decoding: the small models draft, the base and the pair verify k tokens at once.

A round starts from a pending token (chosen, not yet fed). The drafting sources (the one holding
the expert; a shared LoRA pair holds the anti-expert too) step the pending token and then their own
k draft tokens one at a time; every other source (the base) takes the pending token and the k drafts
in one ``extend``. That gives the exact proxy scores after each of them, [prompts, k + 1, vocab]:

- greedy: a draft is kept while it is the argmax of the proxy scores; at the first disagreement the
  proxy's own choice is taken, and if all k agree the proxy's next choice follows (a round yields
  1 to k + 1 tokens, each the argmax plain decoding would pick: token-identical);
- sampling: the standard speculative rule (Leviathan et al. 2023; Chen et al. 2023). With p and q
  the target and draft distributions after the same warpers (temperature / top-k / top-p),
  draft x ~ q is kept with probability min(1, p(x) / q(x)); otherwise a token is drawn from
  norm(max(0, p − q)) and the round ends. Each emitted token is then distributed exactly as p.

Rows of a batch keep the same number of tokens per round (KV caches are cropped by one count): the
round ends at the first position where any unfinished row rejects. Rows that would have accepted
more simply re-draft, so this costs acceptance, never exactness (docs/decoding.md).
"""

from collections.abc import Sequence

import torch

from proxytool.decoding.formats import Prompt
from proxytool.decoding.roles import ProxyModels
from proxytool.decoding.rows import RowSampling
from proxytool.decoding.sampling import SamplingConfig, choose_next
from proxytool.decoding.stepper import Stepper
from proxytool.errors import ProxyToolError

DRAFTERS = ("expert", "small-proxy")
AUTO_DRAFTS = 2
"""Draft tokens per round under ``speculative="auto"`` (k = 2 timed best of 2 and 4 on a CPU: docs/performance.md)."""


def speculates(k: int | str) -> bool:
    """Whether ``k`` asks for speculative rounds throughout (a number > 0; ``"auto"`` chooses per round)."""
    return k != "auto" and k > 0


def speculation_may_help(models: ProxyModels, sampling: SamplingConfig) -> bool:
    """Whether ``speculative="auto"`` measures speculation here: greedy (both ways then choose the same
    tokens; sampled ones would depend on the timing), local models, an expert to draft, one tokenizer."""
    base = models.base.source
    return sampling.greedy and bool(models.pairs) and not models.crosses_tokenizers and base.local


class SpeculativeRounds:
    """Rounds of the decoding loop (decoding/generate.py) that draft ``k`` tokens and verify them.

    ``draft``: ``expert`` (the first pair's expert alone) or ``small-proxy`` (the proxy formula with the
    first anti-expert standing in for the base; equal to ``expert`` at α = 1 with one pair).
    ``stats``: if given, filled with ``rounds``, ``drafted`` and ``accepted`` (draft tokens kept).
    """

    def __init__(
        self, stepper: Stepper, k: int, draft: str, sampling: SamplingConfig, draw: RowSampling, stats: dict | None
    ):
        models = stepper.models
        if k < 1:
            raise ProxyToolError(f"--speculative must be >= 1 to speculate (got {k}; 0 decodes plainly)")
        check_speculative(k, draft, has_expert=bool(models.pairs))
        check_speculative_models(models)
        if models.base.source.extra_top:  # verification has no pair logits to pick the extra ids from
            raise ProxyToolError(
                "speculative decoding with a remote base that takes extra candidates is not supported: "
                "use --remote-lookahead, or --remote-extra 0"
            )
        self.stepper, self.k, self.sampling, self.draw = stepper, k, sampling, draw
        self.drafter = _Drafter(models, draft)
        self.stats = stats if stats is not None else {}
        self.stats.update(rounds=0, drafted=0, accepted=0)
        self.width = 0

    def first(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        scores = self.stepper.prefill(prompts)
        self.width = scores.shape[-1]
        return choose_next(scores, self.sampling, self.draw.generators, self.draw.warpers)

    def next(self, pending: torch.Tensor, active: list[int], left: int) -> torch.Tensor:
        """The tokens this round yields [prompts, 1 .. k + 1] after ``pending`` [prompts]."""
        k_now = min(self.k, left - 1)
        mask = torch.zeros(pending.shape[0], dtype=torch.bool)
        mask[active] = True
        tokens, kept = _round(self.stepper, self.drafter, pending, k_now, self.width, self.sampling, self.draw, mask)
        self.stats["rounds"] += 1
        self.stats["drafted"] += k_now
        self.stats["accepted"] += kept - 1
        self.stepper.truncate(k_now + 1 - kept)  # fed: pending + k drafts; kept: pending + kept - 1 drafts
        return tokens[:, :kept].to(pending.device)  # where the pending tokens live, as plain rounds return them


def check_speculative_models(models: ProxyModels) -> None:
    """What loaded models cannot speculate with (checked before decoding writes anything)."""
    if models.crosses_tokenizers:
        raise ProxyToolError(
            "speculative decoding across tokenizers is not supported (the expert drafts in its own tokens): "
            "drop --speculative"
        )


def check_speculative(k: int | str, draft: str, has_expert: bool) -> None:
    """The speculative options' errors, before any model loads (``"auto"`` speculates only where it can)."""
    if draft not in DRAFTERS:
        raise ProxyToolError(f"--draft must be one of {', '.join(DRAFTERS)} (got '{draft}')")
    if k == "auto":
        return
    if k < 0:
        raise ProxyToolError(f"--speculative must be >= 0 (got {k})")
    if k > 0 and not has_expert:
        raise ProxyToolError("--speculative needs an expert to draft with (no --expert given)")


class _Drafter:
    """Which sources step token by token while drafting, and the draft scores from their logits."""

    def __init__(self, models: ProxyModels, kind: str):
        self.models, self.kind = models, kind
        members = [models.pairs[0].expert]
        if kind == "small-proxy":
            members = [m for p in models.pairs for m in (p.expert, p.anti_expert)]
        self.sources = [s for s in models.sources if any(m.source is s for m in members)]
        self.others = [s for s in models.sources if all(s is not d for d in self.sources)]

    def scores(self, stepper: Stepper, logits: dict[int, list[torch.Tensor]], width: int) -> torch.Tensor:
        """Draft scores [prompts, width] from the drafting sources' last logits."""
        pairs = self.models.pairs
        if self.kind == "expert":
            expert = pairs[0].expert
            return logits[id(expert.source)][expert.group][:, -1, :width].float()
        return stepper.combine(logits, base=pairs[0].anti_expert)[:, -1, :width]


@torch.inference_mode()
def _round(stepper, drafter, pending, k, width, sampling, draw: RowSampling, active):
    """Draft k tokens, verify them; returns (tokens [prompts, k + 1], how many of them to keep)."""
    generators, warpers = draw.generators, draw.warpers
    column = pending.view(-1, 1)
    drafts, draft_probs = [], []
    steps: dict[int, list[list[torch.Tensor]]] = {id(s): [] for s in drafter.sources}
    for _ in range(k):
        out = stepper.extend_each({id(s): column for s in drafter.sources})
        for key, groups in out.items():
            steps[key].append(groups)
        draft_scores = drafter.scores(stepper, out, width)
        if sampling.greedy:
            column = draft_scores.argmax(-1, keepdim=True)
        else:
            q = torch.softmax(warpers(None, draft_scores), dim=-1).cpu()
            picks = [torch.multinomial(q[i], 1, generator=g) for i, g in enumerate(generators)]
            column = torch.stack(picks).to(pending.device)
            draft_probs.append(q)
        drafts.append(column)
    run = torch.cat([pending.view(-1, 1)] + drafts, dim=1)  # [prompts, k + 1]
    feed = {id(s): column for s in drafter.sources} | {id(s): run for s in drafter.others}
    out = stepper.extend_each(feed)
    for key in steps:
        steps[key].append(out[key])
        out[key] = [torch.cat(parts, dim=1) for parts in zip(*steps[key])]
    scores = stepper.combine(out)  # [prompts, k + 1, vocab]: the proxy scores after pending and each draft
    proposed = run[:, 1:].cpu()
    if sampling.greedy:
        return _verify_greedy(scores.argmax(-1).cpu(), proposed, active)
    flat = warpers(None, scores.reshape(-1, scores.shape[-1]).float())
    p = torch.softmax(flat, dim=-1).view(scores.shape).cpu()
    return _verify_sampled(p, proposed, draft_probs, generators, active)


def _verify_greedy(choices: torch.Tensor, proposed: torch.Tensor, active: torch.Tensor):
    """Keep drafts while every unfinished row's proxy argmax agrees; then the proxy's own choice."""
    k = proposed.shape[1]
    for j in range(k):
        if bool((active & (choices[:, j] != proposed[:, j])).any()):
            return choices, j + 1
    return choices, k + 1


def _verify_sampled(p, proposed, draft_probs, generators, active):
    """The speculative accept / reject rule, position by position, until an unfinished row rejects."""
    rows, k = proposed.shape
    tokens = torch.cat([proposed, p[:, k].argmax(-1, keepdim=True)], dim=1)  # finished rows: placeholders
    for j in range(k):
        rejected = False
        for i in range(rows):
            if not active[i]:
                continue  # finished rows keep the draft (it is fed, never emitted)
            x = int(proposed[i, j])
            q = draft_probs[j][i]
            u = torch.rand((), generator=generators[i])
            if u * q[x] >= p[i, j, x]:  # reject (u >= p/q, without dividing)
                residual = (p[i, j] - q).clamp(min=0)
                if residual.sum() <= 0:  # p == q up to rounding: any draw from p is exact
                    residual = p[i, j]
                tokens[i, j] = torch.multinomial(residual / residual.sum(), 1, generator=generators[i])[0]
                rejected = True
        if rejected:
            return tokens, j + 1
    for i in range(rows):  # every draft kept: the next token comes from p after the last draft
        if active[i]:
            tokens[i, k] = torch.multinomial(p[i, k], 1, generator=generators[i])[0]
    return tokens, k + 1
