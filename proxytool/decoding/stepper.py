"""One generation's decoding state over shared loaded models: the stepping API.

Generation, teacher-forced scoring, the server's scheduler and speculative verification all drive a
:class:`Stepper`: ``prefill`` the prompts, then ``extend`` by one or more tokens per prompt (or
``step`` by exactly one) and read the combined proxy scores; ``truncate`` forgets tokens that were
not kept. The loaded models are never modified, so several steppers may run over them at once.
"""

from collections.abc import Sequence

import torch

from proxytool.decoding.combine import Steer, proxy_scores
from proxytool.decoding.formats import Prompt
from proxytool.decoding.roles import Member, ProxyModels
from proxytool.decoding.sources import Candidates, Source
from proxytool.errors import ProxyToolError


class Stepper:
    """KV states of every source for one batch of prompts, and the α of each pair for this call."""

    def __init__(self, models: ProxyModels, alphas: Sequence[float] | None = None, room: int | None = None):
        """``room``: the most tokens any row will append after its prompt (sizes static KV caches)."""
        self.models = models
        self.room = room
        # sources that score the base's candidates (a pair across tokenizers): they run after the base
        self._after_base = [s for s in models.sources if s.base_candidates > 0] if models.pairs else []
        self.alphas = tuple(models.alphas if alphas is None else alphas)
        if len(self.alphas) != len(models.pairs):
            raise ProxyToolError(f"{len(self.alphas)} alpha values for {len(models.pairs)} expert pairs")
        self._states = {}
        self._logits: dict[int, list[torch.Tensor]] = {}

    def prefill(self, prompts: Sequence[Prompt], all_positions: bool = False) -> torch.Tensor:
        """Start the batch; returns the combined scores [prompts, vocab] for the first new token.

        With ``all_positions``, scores at every prompt position [prompts, length, vocab] (left-padded):
        position ``t`` scores token ``t + 1``. That needs every role to see the same token ids.
        """
        if self._states:
            raise ProxyToolError("this stepper has already been prefilled")
        prompts = list(prompts)
        if all_positions and self.models.crosses_tokenizers:
            raise ProxyToolError("scoring prompt positions needs one vocabulary; it is not available across tokenizers")
        if all_positions:
            _check_same_ids(self.models.sources, prompts)
        # prefill is compute-bound and scales with threads: one model at a time, each with all of them
        base = self.models.base.source
        guessing = not all_positions and base.guess_length > 0 and bool(self.models.pairs)
        extra = not all_positions and self._extra_top() > 0
        after_base = self._after_base
        for source in self.models.sources:
            if not ((guessing or extra) and source is base) and source not in after_base:
                self._states[id(source)], self._logits[id(source)] = source.prefill(
                    prompts, all_positions, room=self.room
                )
        for source in after_base:  # a pair across tokenizers scores the base's candidates
            candidates = Candidates(after=self._base_top(self._logits, source.base_candidates))
            self._states[id(source)], self._logits[id(source)] = source.prefill(prompts, candidates=candidates)
        if guessing or extra:  # a remote base's first call also scores the pair's guess / candidates
            self._states[id(base)], self._logits[id(base)] = base.prefill(
                prompts, candidates=self._first_candidates(guessing, extra), room=self.room
            )
        return self.scores()

    def _first_candidates(self, guessing: bool, extra: bool) -> Candidates:
        """What the base's first call scores besides its own set: the pair's candidates after the
        prompt, and the pair's guess (with the candidates along it)."""
        stand_in = self._stand_in(self._logits)
        after = self._extra_ids(stand_in) if extra else None
        if not guessing:
            return Candidates(after=after)
        first = stand_in.argmax(-1, keepdim=True)
        rest, along = self._guess(first, self.models.base.source.guess_length - 1, with_extra=extra)
        guesses = [until_eos(g, self.models.eos_ids) for g in torch.cat([first, rest], dim=1).tolist()]
        if extra:  # the candidates after each kept guessed token (after the prompt: `after`)
            along = [row[: len(g)] for row, g in zip(along, guesses)]
        return Candidates(after=after, guesses=guesses, along=along)

    def _base_top(self, logits: dict[int, list[torch.Tensor]], k: int) -> list:
        """The base's top ``k`` ids (those it scores) and its EOS ids, per row (and position)."""
        member = self.models.base
        scores = logits[id(member.source)][member.group][..., : len(self.models.tokenizer)]
        return _top_ids(scores, k, self.models.eos_ids)

    def _extra_top(self) -> int:
        """M where the base takes extra candidates (a remote base scoring ``logprob_token_ids``), else 0."""
        return self.models.base.source.extra_top if self.models.pairs else 0

    def _extra_ids(self, stand_in: torch.Tensor) -> list:
        """The extra candidates for a remote base: per row (and position, for [prompts, k, vocab]) the
        pair's top M of ``anti + Σ α (expert − anti)`` and the EOS ids (docs/decoding.md)."""
        return _top_ids(stand_in, self._extra_top(), self.models.eos_ids)

    def extend(self, tokens: torch.Tensor, lazy: bool = False) -> torch.Tensor:
        """Append ``tokens`` [prompts, k] to every model; returns the scores after each [prompts, k, vocab].

        ``lazy`` (drafted tokens): a remote base scores only the columns it already knows after the
        first, so that no call is made for positions the decoding may never reach; :meth:`known` says
        how many columns hold scores (the rest are to be truncated)."""
        base = self.models.base.source
        after_base = self._after_base
        if after_base and tokens.shape[1] > 0:  # the base first: its candidates go to the pair
            logits = self._each_source(
                lambda s: s.extend(self._states[id(s)], tokens, lazy=lazy),
                [s for s in self.models.sources if s not in after_base],
                shape=tuple(tokens.shape),
            )
            known = base.known(self._states[id(base)], tokens.shape[1])
            for source in after_base:
                top = self._base_top(logits, source.base_candidates)  # [prompts][k]
                candidates = [row[:known] for row in top]
                logits[id(source)] = source.extend(self._states[id(source)], tokens, candidates, lazy=lazy)
            self._logits = logits
        elif self._extra_top() > 0 and tokens.shape[1] > 0:  # the pair first: its candidates go to the base
            local = [s for s in self.models.sources if s is not base]
            logits = self._each_source(lambda s: s.extend(self._states[id(s)], tokens), local, tuple(tokens.shape))
            candidates = self._extra_ids(self._pair_scores(logits))
            logits[id(base)] = base.extend(self._states[id(base)], tokens, candidates, lazy=lazy)
            self._logits = logits
        else:
            self._logits = self._each_source(
                lambda s: s.extend(self._states[id(s)], tokens, lazy=lazy), self.models.sources, tuple(tokens.shape)
            )
        return self.scores()

    def known(self, k: int) -> int:
        """How many of the last ``extend``'s ``k`` columns hold scores (fewer only after a lazy one)."""
        base = self.models.base.source
        return base.known(self._states[id(base)], k)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per prompt; returns the next scores [prompts, vocab]."""
        return self.extend(tokens.unsqueeze(-1))[:, -1]

    def extend_each(self, tokens: dict[int, torch.Tensor]) -> dict[int, list[torch.Tensor]]:
        """Append different tokens to different sources: ``{id(source): [prompts, k]}`` (speculative drafting).

        Returns each run source's logits per group [prompts, k, vocab] and leaves :meth:`scores` alone;
        sources not named are not run. The caller brings every source back to one length (``extend_each``
        or ``truncate``) before the next :meth:`extend`.
        """
        wanted = [s for s in self.models.sources if id(s) in tokens]
        shape = tuple(tuple(tokens[id(s)].shape) for s in wanted)
        return self._each_source(lambda s: s.extend(self._states[id(s)], tokens[id(s)]), wanted, shape)

    def retire(self, rows: set[int]) -> None:
        """Rows whose generation ended: a remote base makes no call for them any more (their scores
        are then meaningless); a local base ignores this."""
        if rows:
            for source in self.models.sources:
                source.retire(self._states[id(source)], rows)

    @property
    def joinable(self) -> bool:
        """Whether generations of these models can merge (:meth:`join`) and lose rows (:meth:`drop`)
        between steps: every source is a local model with a dynamic KV cache."""
        return all(source.joinable for source in self.models.sources)

    def join(self, other: "Stepper") -> None:
        """Take ``other``'s prompts (prefilled, at any length) after this stepper's own, each row keeping its
        tokens, positions and KV entries; ``other`` is left empty. Both must steer with the same α over
        the same models. The scores of the last step are not kept (the next :meth:`extend` gives them)."""
        if other.models is not self.models or other.alphas != self.alphas:
            raise ProxyToolError("only generations over the same models with the same alpha can merge")
        states = {id(s): s.join(self._states[id(s)], other._states[id(s)]) for s in self.models.sources}
        self._states.update(states)  # every source merged before any state changes: all or nothing
        self._logits.clear()
        other.close()

    def drop(self, rows: set[int]) -> None:
        """Remove the prompts ``rows`` (indices among this stepper's prompts) from every source's state;
        the rows after them move up."""
        if rows:
            states = {id(s): s.drop(self._states[id(s)], rows) for s in self.models.sources}
            self._states.update(states)
            keep = None
            for groups in self._logits.values():
                keep = keep if keep is not None else [i for i in range(groups[0].shape[0]) if i not in rows]
                groups[:] = [t[keep] for t in groups]

    def draft(self, tokens: torch.Tensor) -> list[list[int] | None]:
        """Per row, tokens that may follow ``tokens`` [prompts] and that the base scores at no extra cost
        (a remote base's greedy lookahead, see remote.py); empty lists for a local base, None for a
        retired row (anything may follow)."""
        base = self.models.base.source
        return base.draft(self._states[id(base)], tokens)

    def propose(self, tokens: torch.Tensor, limit: int, rows: Sequence[int] | None = None) -> list[list[int]] | None:
        """Guess up to ``limit`` tokens after ``tokens`` [prompts] from the local pairs alone (the first
        anti-expert stands in for the base: ``anti + Σ α (expert − anti)``, greedy), and have the base
        fetch its top-K along the guess in one call per row of ``rows`` (default: every row). None where
        the base takes no guesses (a local base)."""
        base = self.models.base.source
        n = min(limit, base.guess_length)
        if n <= 0 or not self.models.pairs:
            return None
        extra = self._extra_top() > 0
        guess, guess_extra = self._guess(tokens.unsqueeze(1), n, with_extra=extra)
        guesses = [until_eos(g, self.models.eos_ids) for g in guess.tolist()]
        if extra:  # the candidates after ``tokens`` and after each kept guessed token
            guess_extra = [row[: len(g) + 1] for row, g in zip(guess_extra, guesses)]
        base.prefetch(self._states[id(base)], tokens, guesses, guess_extra if extra else None, rows=rows)
        return guesses

    def _guess(self, column: torch.Tensor, n: int, with_extra: bool = False) -> tuple[torch.Tensor, list | None]:
        """``n`` greedy tokens after ``column`` [prompts, 1] from the local pairs alone; their states are
        restored afterwards. Returns [prompts, n] and, ``with_extra``, per row the extra candidates at
        the n + 1 positions after ``column`` and after each guessed token (one more local forward)."""
        base = self.models.base.source
        local = [s for s in self.models.sources if s is not base]
        guesses, extra = [], [[] for _ in range(column.shape[0])] if with_extra else None
        steps = n + 1 if with_extra and n > 0 else n  # the candidates after the whole guess too
        for step in range(steps):
            fed = column
            logits = self._each_source(lambda s, fed=fed: s.extend(self._states[id(s)], fed), local, tuple(fed.shape))
            stand_in = self._stand_in(logits)
            column = stand_in.argmax(-1, keepdim=True)
            if step < n:
                guesses.append(column)
            if with_extra:
                for row, ids in zip(extra, self._extra_ids(stand_in)):
                    row.append(ids)
        for source in local:
            source.truncate(self._states[id(source)], steps)
        return (torch.cat(guesses, dim=1) if guesses else column[:, :0]), extra

    def _stand_in(self, logits: dict[int, list[torch.Tensor]]) -> torch.Tensor:
        """``anti + Σ α (expert − anti)`` at the last position, the first anti-expert standing in for the base."""
        scores = self._pair_scores(logits)
        return scores if scores.dim() == 2 else scores[:, -1]

    def _pair_scores(self, logits: dict[int, list[torch.Tensor]]) -> torch.Tensor:
        """``anti + Σ α (expert − anti)`` at every position the logits have (the small models' own proxy)."""
        return self.combine(logits, base=self.models.pairs[0].anti_expert)

    def truncate(self, drop: int) -> None:
        """Forget the last ``drop`` tokens of every row (e.g. rejected speculative tokens)."""
        for source in self.models.sources:
            source.truncate(self._states[id(source)], drop)

    def scores(self) -> torch.Tensor:
        """The combined scores of the last prefill / extend: ``base + Σ α (expert − anti)``, fp32."""
        return self.combine(self._logits)

    def combine(self, logits: dict[int, list[torch.Tensor]], base: Member | None = None) -> torch.Tensor:
        """The proxy formula over logits per group by ``id(source)`` (as :meth:`extend_each` returns them);
        ``base`` stands in for the models' base (e.g. an anti-expert, for a guess from the pair alone)."""

        def of(member: Member) -> torch.Tensor:
            return logits[id(member.source)][member.group]

        steers = [Steer(alpha, of(p.expert), of(p.anti_expert)) for alpha, p in zip(self.alphas, self.models.pairs)]
        return proxy_scores(
            of(base or self.models.base),
            steers,
            vocab_size=len(self.models.tokenizer),
            plausible=self.models.plausible,
        )

    def logits_of(self, member: Member) -> torch.Tensor:
        """One role's raw logits from the last prefill / extend."""
        return self._logits[id(member.source)][member.group]

    def role_logits(self) -> dict[str, torch.Tensor]:
        """Every role's raw logits from the last prefill / extend, by role name (see ProxyModels.roles)."""
        return {name: self.logits_of(member) for name, member in self.models.roles().items()}

    def close(self) -> None:
        """Drop the KV caches (the models stay loaded)."""
        self._states.clear()
        self._logits.clear()

    def __enter__(self) -> "Stepper":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _each_source(self, fn, sources: list[Source], shape: tuple) -> dict[int, list[torch.Tensor]]:
        """``fn(source)`` for each source, in the models' lanes if they have them; ``shape``: the call's
        tokens' shape (the lanes choose per shape whether to overlap, see overlap.py)."""
        lanes = self.models.lanes
        if lanes is None:
            return {id(s): fn(s) for s in sources}
        return lanes.map(fn, sources, shape)


def _top_ids(scores: torch.Tensor, k: int, eos_ids) -> list:
    """Per row (and per position for [prompts, positions, vocab]): the ids of the ``k`` best finite scores,
    with ``eos_ids``."""
    top = scores.topk(min(k, scores.shape[-1]), dim=-1)
    eos = set(eos_ids)

    def of(ids, values):
        if ids and isinstance(ids[0], list):
            return [of(i, v) for i, v in zip(ids, values)]
        return {i for i, v in zip(ids, values) if v != float("-inf")} | eos

    return of(top.indices.tolist(), top.values.tolist())


def until_eos(tokens: list[int], eos_ids) -> list[int]:
    """``tokens`` up to (not including) the first of ``eos_ids``: no position after an end is needed."""
    return next((tokens[:i] for i, t in enumerate(tokens) if t in eos_ids), tokens)


def _check_same_ids(sources: list[Source], prompts: list[Prompt]) -> None:
    encodings = [row for s in sources for row in _by_prompt(s, prompts)]
    if any(e != encodings[0] for e in encodings):
        raise ProxyToolError("scoring prompt positions needs every model to see the same tokens (use raw formats)")


def _by_prompt(source: Source, prompts: list[Prompt]) -> list[list[list[int]]]:
    rows = source.encode(prompts)
    return [rows[g * len(prompts) : (g + 1) * len(prompts)] for g in range(len(source.groups))]
