"""The decoding loop shared by decode, chat, eval, serve and bench: a generator over rounds.

One loop: prefill and choose the first tokens, then rounds until every row has ended. A round is a
strategy: :class:`StepRounds` scores the position after the pending tokens and chooses one token
(reusing positions a remote base scored ahead); :class:`proxytool.decoding.speculative.SpeculativeRounds`
drafts k tokens with the small models and verifies them in one forward. Both share the row
bookkeeping (decoding/rows.py), stop handling and the retirement of finished rows.
"""

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from proxytool.decoding.formats import Prompt
from proxytool.decoding.roles import ExpertPair, Member, ProxyModels
from proxytool.decoding.rows import Row, Rows, RowSampling
from proxytool.decoding.sampling import SamplingConfig, choose_next
from proxytool.decoding.speculative import AUTO_DRAFTS, SpeculativeRounds, speculation_may_help
from proxytool.decoding.stepper import Stepper, until_eos
from proxytool.errors import ProxyToolError

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
ScoreAdjuster = Callable[[torch.Tensor, list[list[int]]], torch.Tensor]
"""(scores [rows, vocab], each row's tokens generated so far) -> the scores to choose from (the server's
``logit_bias`` and presence/frequency penalties)."""


def generate(
    models: ProxyModels,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int | Sequence[int],
    sampling: SamplingConfig = SamplingConfig(),
    stop: Sequence[str] = (),
    row_seeds: Sequence[int] | None = None,
    alphas: Sequence[float] | None = None,
    ignore_eos: bool = False,
    observe: StepObserver | None = None,
    adjust: ScoreAdjuster | None = None,
    speculative: int | str = 0,
    draft: str = "expert",
    stats: dict | None = None,
) -> Iterator[list[Row]]:
    """Decode ``prompts`` as one left-padded batch; yields the rows after every emitted token.

    Args:
        max_new_tokens: the most tokens per row (one number, or one per prompt).
        row_seeds: per-prompt seeds (default: positions in the batch), so a prompt samples the same
            tokens alone or in any batch.
        alphas: this call's steering weights, one per pair (default: the models' own).
        ignore_eos: run every row for ``max_new_tokens`` (benchmarks).
        observe: called after each choice with the stepper, the scores and the chosen tokens.
        adjust: changes the scores before each choice (not those ``observe`` sees); step by step only.
        speculative: draft this many tokens per round with the small models and verify them in one
            forward (proxytool/decoding/speculative.py); 0 decodes step by step. Greedy output is
            token-identical; sampling draws from the same distribution (not the same random stream).
            ``"auto"``: greedy rounds plain or speculative, whichever measures faster here
            (:class:`MeasuredRounds`); step by step where speculation cannot help or would change tokens.
        draft: what drafts when speculating: ``expert`` or ``small-proxy``.
        stats: speculative only: filled with ``rounds``, ``drafted`` and ``accepted`` (drafts kept).
    """
    decoding = Decoding(
        models,
        len(prompts),
        max_new_tokens=max_new_tokens,
        sampling=sampling,
        stop=stop,
        row_seeds=row_seeds,
        alphas=alphas,
        ignore_eos=ignore_eos,
        observe=observe,
        adjust=adjust,
        speculative=speculative,
        draft=draft,
        stats=stats,
    )
    rows = decoding.rows
    if rows.over:
        yield rows.rows
        return
    with decoding.stepper:
        decoding.start(prompts)
        yield rows.rows
        while not rows.over:
            columns = decoding.columns()
            for j in range(columns.shape[1]):
                rows.emit(columns[:, j].tolist())
                yield rows.rows
                if rows.over:
                    return


class Decoding:
    """One batch's decoding state, round by round: its Stepper, rows, per-row draws and round strategy.

    :func:`generate` runs one to its end; the server's continuous batching (serving/scheduler.py) starts
    one per group of newcomers, then :meth:`join` merges it into the running one and :meth:`drop` removes rows
    that ended, between steps. Rows keep their own tokens, budget, generator and KV entries, so each
    decodes as it would alone.
    """

    def __init__(
        self,
        models: ProxyModels,
        n: int,
        *,
        max_new_tokens: int | Sequence[int],
        sampling: SamplingConfig = SamplingConfig(),
        stop: Sequence[str] = (),
        row_seeds: Sequence[int] | None = None,
        alphas: Sequence[float] | None = None,
        ignore_eos: bool = False,
        observe: StepObserver | None = None,
        adjust: ScoreAdjuster | None = None,
        speculative: int | str = 0,
        draft: str = "expert",
        stats: dict | None = None,
    ):
        measured = speculative == "auto"
        if measured:
            measured = observe is None and adjust is None and speculation_may_help(models, sampling)
            speculative = AUTO_DRAFTS if measured else 0
        if speculative and (observe is not None or adjust is not None):
            raise ProxyToolError(
                "observe and adjust are not available with speculative decoding (it sees whole rounds)"
            )
        self.sampling = sampling
        self.draw = RowSampling.start(models.eos_ids, n, sampling, row_seeds, ignore_eos)
        self.rows = Rows(n, max_new_tokens, models.tokenizer, self.draw.eos_ids, stop)
        room = max((row.budget for row in self.rows.rows), default=0)
        self.stepper = Stepper(models, alphas, room=room + speculative + 1)
        if measured:
            self.rounds = MeasuredRounds(self.stepper, sampling, self.draw, stats)
        elif speculative:
            self.rounds = SpeculativeRounds(self.stepper, speculative, draft, sampling, self.draw, stats)
        else:
            history = None if adjust is None else (lambda: [row.token_ids for row in self.rows.rows])
            self.rounds = StepRounds(self.stepper, sampling, self.draw, observe, adjust, history)
        self.pending: torch.Tensor | None = None  # each row's last chosen token, not yet fed to the models

    def start(self, prompts: Sequence[Prompt]) -> None:
        """Prefill the prompts and emit every row's first token."""
        self.pending = self.rounds.first(prompts)
        self.rows.emit(self.pending.tolist())

    def columns(self) -> torch.Tensor:
        """One round: the next tokens of every row [prompts, k] (k > 1 only when speculating), not yet
        emitted (the caller emits them column by column)."""
        self.stepper.retire(self.rows.finished())
        columns = self.rounds.next(self.pending, self.rows.active(), self.rows.left)
        self.pending = columns[:, -1]
        return columns

    def step(self) -> None:
        """One round, every column emitted."""
        columns = self.columns()
        for j in range(columns.shape[1]):
            self.rows.emit(columns[:, j].tolist())

    @property
    def joinable(self) -> bool:
        """Whether :meth:`join` and :meth:`drop` work here: step by step over local models with dynamic caches."""
        return isinstance(self.rounds, StepRounds) and self.stepper.joinable

    def join(self, other: "Decoding") -> None:
        """Take ``other``'s started rows after these; from the next :meth:`columns` on they step together.
        Both must decode with the same sampling filters, α and end conditions (``other`` is left empty);
        this decoding's ``observe`` and ``adjust`` see every row from now on."""
        if not (self.joinable and other.joinable) or self.rounds.ahead or other.rounds.ahead:
            raise ProxyToolError("these generations cannot merge (speculative, remote or static-cache decoding)")
        if other.sampling.filters != self.sampling.filters:
            raise ProxyToolError("only generations with the same sampling filters can merge")
        self.stepper.join(other.stepper)
        self.rows.join(other.rows)
        self.draw.join(other.draw)
        self.pending = torch.cat([self.pending, other.pending])

    def drop(self, rows: set[int]) -> None:
        """Remove the rows ``rows`` (indices among this decoding's rows) from every state; later rows move up."""
        if not self.joinable:
            raise ProxyToolError("rows leave a batch early only step by step over local models with dynamic caches")
        if rows:
            self.stepper.drop(rows)
            self.rows.drop(rows)
            self.draw.drop(rows)
            keep = [i for i in range(len(self.pending)) if i not in rows]
            self.pending = self.pending[keep]

    def close(self) -> None:
        self.stepper.close()


class StepRounds:
    """One token per round: the proxy scores after the pending tokens, then the choice."""

    def __init__(
        self,
        stepper: Stepper,
        sampling: SamplingConfig,
        draw: RowSampling,
        observe: StepObserver | None,
        adjust: ScoreAdjuster | None = None,
        history: Callable[[], list[list[int]]] | None = None,
    ):
        self.stepper, self.sampling, self.draw, self.observe = stepper, sampling, draw, observe
        self.adjust, self.history = adjust, history
        self.ahead: list[tuple[torch.Tensor, torch.Tensor]] = []  # positions scored in advance (see _advance)

    def first(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        return self._choose(self.stepper.prefill(prompts))

    def next(self, pending: torch.Tensor, active: list[int], left: int) -> torch.Tensor:
        """The next token per row [prompts, 1], after ``pending`` [prompts]."""
        room = left - 1 if self.observe is None else 0
        scores, self.ahead = _advance(self.stepper, pending, self.ahead, active, room, self.draw.eos_ids)
        return self._choose(scores).unsqueeze(1)

    def _choose(self, scores: torch.Tensor) -> torch.Tensor:
        chosen_from = scores if self.adjust is None else self.adjust(scores, self.history())
        tokens = choose_next(chosen_from, self.sampling, self.draw.generators, self.draw.warpers)
        if self.observe is not None:
            self.observe(self.stepper, scores, tokens)
        return tokens


class MeasuredRounds:
    """Greedy rounds, each plain or speculative (the expert drafting ``AUTO_DRAFTS`` tokens), whichever
    emits tokens faster on these models at this batch size (decoding/way_timings.py). Both choose
    every token as the proxy's argmax, so the output never depends on the choice."""

    def __init__(self, stepper: Stepper, sampling: SamplingConfig, draw: RowSampling, stats: dict | None):
        self.plain = StepRounds(stepper, sampling, draw, None)
        self.speculative = SpeculativeRounds(stepper, AUTO_DRAFTS, "expert", sampling, draw, stats)
        self.timings = stepper.models.speculation
        self.ahead: list = []  # never scores ahead: its plain rounds run with no room (see next)
        self.batch = 0

    def first(self, prompts: Sequence[Prompt]) -> torch.Tensor:
        self.batch = len(prompts)
        return self.speculative.first(prompts)

    def next(self, pending: torch.Tensor, active: list[int], left: int) -> torch.Tensor:
        way = self.timings.way(self.batch) if left > 1 else "plain"
        start = time.perf_counter()
        if way == "speculative":
            columns = self.speculative.next(pending, active, left)
        else:  # left=1: no positions scored ahead, so the next round may speculate from here
            columns = self.plain.next(pending, active, 1)
        if columns.is_cuda:
            torch.cuda.synchronize(columns.device)  # the round's time includes its device work
        self.timings.record(self.batch, way, time.perf_counter() - start, columns.shape[1])
        return columns


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
