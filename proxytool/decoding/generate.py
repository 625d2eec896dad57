"""The decoding loop shared by decode, chat, eval and serve: prefill, combine, sample, stop; a generator."""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from proxytool.decoding.formats import Prompt
from proxytool.decoding.roles import ExpertPair, Member, ProxyModels
from proxytool.decoding.sampling import SamplingConfig, choose_next, row_generators
from proxytool.decoding.stepper import Stepper, until_eos

__all__ = [
    "Completion",
    "ExpertPair",
    "Member",
    "ProxyModels",
    "Row",
    "complete",
    "completion_of",
    "generate",
    "settled_text",
]

StepObserver = Callable[[Stepper, torch.Tensor, torch.Tensor], None]  # (stepper, scores, chosen tokens)


@dataclass
class Row:
    """One prompt's generation so far."""

    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" (EOS or stop string) or "length"
    text_end: int | None = None  # where a stop string starts in the decoded text

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
    def start(cls, models: ProxyModels, n_prompts: int, sampling: SamplingConfig, row_seeds, ignore_eos: bool):
        seeds = list(row_seeds if row_seeds is not None else range(n_prompts))
        return cls(row_generators(sampling, seeds), sampling.warpers(), frozenset() if ignore_eos else models.eos_ids)


def finished(rows: list[Row]) -> list[Row]:
    """Rows that got no token budget: every one ends for ``length``."""
    for row in rows:
        row.finish_reason = "length"
    return rows


def generate(
    models: ProxyModels,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int,
    sampling: SamplingConfig = SamplingConfig(),
    stop: Sequence[str] = (),
    row_seeds: Sequence[int] | None = None,
    alphas: Sequence[float] | None = None,
    ignore_eos: bool = False,
    observe: StepObserver | None = None,
    speculative: int = 0,
    draft: str = "expert",
) -> Iterator[list[Row]]:
    """Decode ``prompts`` as one left-padded batch; yields the rows after every step.

    Args:
        row_seeds: per-prompt seeds (default: positions in the batch), so a prompt samples the same
            tokens alone or in any batch.
        alphas: this call's steering weights, one per pair (default: the models' own).
        ignore_eos: run every row for ``max_new_tokens`` (benchmarks).
        observe: called after each choice with the stepper, the scores and the chosen tokens.
        speculative: draft this many tokens per round with the small models and verify them in one
            forward (proxytool/decoding/speculative.py); 0 decodes step by step. Greedy output is
            token-identical; sampling draws from the same distribution (not the same random stream).
        draft: what drafts when speculating: ``expert`` or ``small-proxy``.
    """
    if speculative:
        from proxytool.decoding.speculative import speculative_generate
        from proxytool.errors import ProxyToolError

        if observe is not None:
            raise ProxyToolError("observe is not available with speculative decoding (it sees whole rounds)")
        yield from speculative_generate(
            models,
            prompts,
            k=speculative,
            max_new_tokens=max_new_tokens,
            sampling=sampling,
            stop=stop,
            row_seeds=row_seeds,
            alphas=alphas,
            ignore_eos=ignore_eos,
            draft=draft,
        )
        return
    rows = [Row() for _ in prompts]
    if max_new_tokens <= 0:
        yield finished(rows)
        return
    draw = RowSampling.start(models, len(prompts), sampling, row_seeds, ignore_eos)
    with Stepper(models, alphas) as stepper:
        scores = stepper.prefill(prompts)
        ahead: list[tuple[torch.Tensor, torch.Tensor]] = []  # positions scored in advance (see _advance)
        for step in range(max_new_tokens):
            tokens = choose_next(scores, sampling, draw.generators, draw.warpers)
            if observe is not None:
                observe(stepper, scores, tokens)
            for row, token in zip(rows, tokens.tolist()):
                if not row.done:
                    _append(row, token, models.tokenizer, draw.eos_ids, stop)
            stepper.retire({i for i, row in enumerate(rows) if row.done})
            if step == max_new_tokens - 1:
                for row in rows:
                    row.finish_reason = row.finish_reason or "length"
            yield rows
            if all(row.done for row in rows):
                return
            room = max_new_tokens - step - 2 if observe is None else 0
            active = [i for i, r in enumerate(rows) if not r.done]
            scores, ahead = _advance(stepper, tokens, ahead, active, room, draw.eos_ids)


def _advance(stepper: Stepper, tokens: torch.Tensor, ahead: list, active: list[int], room: int, eos_ids=frozenset()):
    """The scores after the chosen ``tokens``, and the positions scored in advance beyond them.

    Where the base offers a draft (a remote base's greedy lookahead, or the pair's guess it fetched
    along), the chosen tokens and up to ``room`` drafted ones are appended in one ``extend``: the local
    models score them in one forward.
    While later choices equal the draft (on every unfinished row) their scores are already there;
    at the first difference the rest is truncated. Sampling draws the same random numbers either way.
    A draft stops before an end of sequence in ``eos_ids``: no row needs the positions after it.
    """
    if ahead:
        drafted, scores = ahead[0]
        if all(int(drafted[i]) == int(tokens[i]) for i in active):
            return scores, ahead[1:]
        stepper.truncate(len(ahead))
    offered = [d for i, d in enumerate(stepper.draft(tokens)) if i in active] if room > 0 else []
    drafts = [until_eos(d, eos_ids) for d in offered]
    m = min([room] + [len(d) for d in drafts]) if drafts else 0
    if m == 0 and any(not d for d in offered):  # the base's path is exhausted: guess with the pair (the call is due)
        exhausted = [i for i, d in zip(active, offered) if not d]  # only these rows call
        guessed = stepper.propose(tokens, room, rows=exhausted)
        drafts = [guessed[i] if i in exhausted else d for i, d in zip(active, drafts)] if guessed else []
        m = min(len(d) for d in drafts) if drafts else 0
    if m == 0:
        return stepper.step(tokens), []
    by_row = dict(zip(active, drafts))  # finished rows take any tokens: the first active row's
    draft = torch.tensor(
        [by_row.get(i, drafts[0])[:m] for i in range(len(tokens))], dtype=torch.long, device=tokens.device
    )
    scored = stepper.extend(torch.cat([tokens.unsqueeze(1), draft], dim=1), lazy=True)
    known = stepper.known(m + 1) - 1  # drafted positions that hold scores; the rest are dropped
    if known < m:
        stepper.truncate(m - known)
    return scored[:, 0], [(draft[:, j], scored[:, j + 1]) for j in range(known)]


def _append(row: Row, token: int, tokenizer, eos_ids: frozenset[int], stop: Sequence[str]) -> None:
    row.token_ids.append(token)
    if token in eos_ids:
        row.finish_reason = "stop"
        return
    if stop:
        text = tokenizer.decode(row.token_ids, skip_special_tokens=True)
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


def settled_text(text: str, stop: tuple[str, ...]) -> str:
    """Text safe to stream: not ending in half a character or in what may become a stop string."""
    text = text.rstrip("\ufffd")
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                return text[:-n]
    return text
