"""The decoding loop shared by decode, chat and eval: prefill, combine, sample, stop; a generator."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from proxytool.decoding.combine import Steer, proxy_scores
from proxytool.decoding.formats import Prompt
from proxytool.decoding.overlap import Lanes
from proxytool.decoding.sampling import SamplingConfig, choose_next, row_generators
from proxytool.decoding.sources import ModelSource


@dataclass
class Member:
    """Where one role's logits come from: a source and one of its row groups."""

    source: ModelSource
    group: int


@dataclass
class ExpertPair:
    """An expert and its anti-expert, steering with weight ``alpha`` (mutable: chat's /alpha)."""

    alpha: float
    expert: Member
    anti_expert: Member


@dataclass
class ProxyModels:
    """Everything loaded for proxy-tuned decoding. Without pairs it decodes the base alone."""

    base: Member
    pairs: list[ExpertPair]
    tokenizer: object  # decodes generated ids to text (all roles share one vocabulary)
    eos_ids: frozenset[int]
    lanes: Lanes | None = None  # run the base and the proxies concurrently (see overlap.py)

    @property
    def sources(self) -> list[ModelSource]:
        members = [self.base] + [m for p in self.pairs for m in (p.expert, p.anti_expert)]
        unique = []
        for member in members:
            if all(member.source is not s for s in unique):
                unique.append(member.source)
        return unique


@dataclass
class Row:
    """One prompt's generation so far."""

    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" (EOS or stop string) or "length"
    text_end: int | None = None  # where a stop string starts in the decoded text

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


def generate(
    models: ProxyModels,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    sampling: SamplingConfig = SamplingConfig(),
    stop: Sequence[str] = (),
    row_seeds: Sequence[int] | None = None,
) -> Iterator[list[Row]]:
    """Decode ``prompts`` as one left-padded batch; yields the rows after every step.

    Args:
        row_seeds: per-prompt seeds (default: positions in the batch), so a prompt samples the same
            tokens alone or in any batch.
    """
    rows = [Row() for _ in prompts]
    if max_new_tokens <= 0:
        for row in rows:
            row.finish_reason = "length"
        yield rows
        return
    generators = row_generators(sampling, list(row_seeds if row_seeds is not None else range(len(prompts))))
    warpers = sampling.warpers()
    # prefill is compute-bound and scales with threads: run it with all of them, one model at a time
    logits = {id(s): s.prefill(prompts) for s in models.sources}
    try:
        for step in range(max_new_tokens):
            scores = step_scores(models, logits)
            tokens = choose_next(scores, sampling, generators, warpers)
            for row, token in zip(rows, tokens.tolist()):
                if not row.done:
                    _append(row, token, models, stop)
            if step == max_new_tokens - 1:
                for row in rows:
                    row.finish_reason = row.finish_reason or "length"
            yield rows
            if all(row.done for row in rows):
                return
            logits = _each_source(models, lambda s, t=tokens: s.step(t))
    finally:
        for source in models.sources:
            source.release()


def _each_source(models: ProxyModels, fn) -> dict[int, list[torch.Tensor]]:
    if models.lanes is None:
        return {id(s): fn(s) for s in models.sources}
    return models.lanes.map(fn, models.sources)


def step_scores(models: ProxyModels, logits: dict[int, list[torch.Tensor]]) -> torch.Tensor:
    """One step's combined scores from each source's per-group logits (``{id(source): [logits]}``)."""

    def of(member: Member) -> torch.Tensor:
        return logits[id(member.source)][member.group]

    steers = [Steer(p.alpha, of(p.expert), of(p.anti_expert)) for p in models.pairs]
    return proxy_scores(of(models.base), steers, vocab_size=len(models.tokenizer))


def _append(row: Row, token: int, models: ProxyModels, stop: Sequence[str]) -> None:
    row.token_ids.append(token)
    if token in models.eos_ids:
        row.finish_reason = "stop"
        return
    if stop:
        text = models.tokenizer.decode(row.token_ids, skip_special_tokens=True)
        hits = [text.find(s) for s in stop if s in text]
        if hits:
            row.finish_reason, row.text_end = "stop", min(hits)


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str


def completion_of(row: Row, tokenizer) -> Completion:
    """The final text of a row: special tokens dropped, cut where a stop string begins."""
    text = tokenizer.decode(row.token_ids, skip_special_tokens=True)
    if row.text_end is not None:
        text = text[: row.text_end]
    return Completion(text=text, token_ids=list(row.token_ids), finish_reason=row.finish_reason or "length")


def complete(models: ProxyModels, prompts: Sequence[Prompt], **kwargs) -> list[Completion]:
    """Run :func:`generate` to the end and return one Completion per prompt."""
    rows: list[Row] = []
    for rows in generate(models, prompts, **kwargs):  # noqa: B007 (the last yield is the result)
        pass
    return [completion_of(row, models.tokenizer) for row in rows]
