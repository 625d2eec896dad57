"""The expert pair's state for every steered row of a vLLM batch: one pair forward per step for all rows.

The requests seen for the first time in one call are prefilled together (one left-padded forward per
pair source) and join the running batch (:meth:`Stepper.join`) at once; from then on one ``extend`` of
that shared Stepper feeds every row its new token, so each pair source runs once per step for the whole
batch. A row leaves the batch (:meth:`Stepper.drop`) when its request is gone, or when its tokens fall
out of step with the others (no new token or several in one step — e.g. a prompt vLLM still prefills
in chunks —, or tokens taken back): it is then prefilled again on its own Stepper from its prompt and
all its tokens, waits there while nothing new comes, and rejoins on the step that brings one token.

Tokens that are not the request's own yet (speculative draft tokens, Model Runner V2) are scored
without being kept: a request with drafts steps on its own Stepper, which takes its new tokens and its
drafts in one ``extend``, gives the logits after each, and is truncated by the drafts at once (the
pair never holds a draft that vLLM may reject; accepted ones come back as the request's tokens).

Where the pair's sources cannot merge states (``Stepper.joinable`` is False, e.g. a static KV cache, or
a join that finds a cache it cannot rearrange, e.g. sliding-window layers), rows do not join: each
keeps a Stepper of its own and the pair runs once per row per step (the per-request path).
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from proxytool.decoding.formats import TokenPrompt
from proxytool.decoding.roles import ProxyModels
from proxytool.decoding.stepper import Stepper
from proxytool.errors import ProxyToolError

log = logging.getLogger("proxytool.engines.vllm")


@dataclass(eq=False)
class _Track:
    """One request's place in the pair's state and what the pair said after its last token."""

    stepper: Stepper | None  # the row's own Stepper until it joins the batch; None while in the batch
    fed: int  # output tokens the pair has seen
    tail: int | None  # the last output token fed (a shorter or changed list is fed again)
    last: list  # per pair: (expert, anti-expert) logits [vocab] after the last token fed
    ahead: list = field(default_factory=list)  # per draft token of this step: per pair, the logits after it
    solo: bool = False  # it has had draft tokens: it keeps its own Stepper (a batch row takes one token a step)


class PairBatch:
    """The pair's KV state for a changing set of requests, each with ``prompt`` and ``output`` token ids
    (``output`` grows between calls) and hashed by identity."""

    def __init__(self, models: ProxyModels, prefill_together: bool = True):
        self.models = models
        self.prefill_together = prefill_together  # off under speculative decoding: a request with drafts
        # steps on its own Stepper, so a prefill that joined the batch would be done again
        self.joinable = Stepper(models).joinable
        self.batch: Stepper | None = None
        self.rows: list = []  # the requests in ``batch``, in its row order
        self.tracks: dict = {}

    def advance(self, requests: list, drafts: Mapping[object, Sequence[int]] | None = None) -> dict:
        """Feed the pair every request's output tokens that it has not seen, and score each request's
        ``drafts`` (tokens that may follow its output) without keeping them.

        Returns per request the positions scored: after its last token, then after each of its draft
        tokens; each position per pair, the expert's and anti-expert's logits [vocab]. Rows of the
        batch that are not in ``requests`` leave it (their state is prefilled again if they return);
        other requests' own states are kept (:meth:`keep` forgets them).
        """
        drafts = drafts or {}
        present = set(requests)
        absent = {r for r in self.rows if r not in present}
        self._leave(absent)
        for request in absent:
            del self.tracks[request]
        plans = {request: self._plan(request, bool(drafts.get(request))) for request in requests}
        if not self._leave({r for r in self.rows if plans[r] != "batch"}):
            plans = {request: self._plan(request, bool(drafts.get(request))) for request in requests}
        together = self.prefill_together and self.joinable
        newcomers = [
            r for r, p in plans.items() if together and p == "prefill" and r not in self.tracks and not drafts.get(r)
        ]
        for request, plan in plans.items():
            if request in newcomers:
                continue
            if plan == "prefill":
                self._prefill(request)
            if plan != "batch":
                self._extend_alone(request, list(drafts.get(request, ())))
        self._step_batch([r for r, plan in plans.items() if plan == "batch"])
        if newcomers:
            self._prefill_together(newcomers)
        return {request: [self.tracks[request].last, *self.tracks[request].ahead] for request in requests}

    def keep(self, requests) -> None:
        """Forget every request but ``requests`` (those that ended or were preempted)."""
        kept = set(requests)
        self._leave({r for r in self.rows if r not in kept})
        self.tracks = {r: t for r, t in self.tracks.items() if r in kept}

    def _plan(self, request, drafting: bool = False) -> str:
        """``prefill`` (new, or out of step), ``alone`` (on its own Stepper), ``batch`` (one token in the
        shared step) or ``wait`` (nothing new: its last logits stand). A request with drafts steps alone."""
        track = self.tracks.get(request)
        output = request.output
        if any(t < 0 for t in output[track.fed if track else 0 :]):
            raise RuntimeError(
                "proxytool: vLLM passed placeholder output ids (-1): async scheduling without the output-id "
                "repair; name the processor with --logits-processors, or start vLLM with --no-async-scheduling"
            )
        if track is None or len(output) < track.fed or (track.fed and output[track.fed - 1] != track.tail):
            return "prefill"
        new = len(output) - track.fed
        batchable = new == 1 and not (drafting or track.solo)
        if track.stepper is None:
            return "batch" if batchable else "prefill"
        if batchable and self.joinable:
            return "batch"
        return "alone" if new else "wait"

    def _prefill(self, request) -> None:
        stepper = Stepper(self.models)
        stepper.prefill([_all_tokens(request)])
        self.tracks[request] = _Track(stepper, 0, None, [])
        self._fed(request, stepper, 0)

    def _prefill_together(self, requests: list) -> None:
        """Prefill requests seen for the first time in one forward per pair source (left-padded), then join
        them to the batch, so that they step with it from the next call. Only while the pair can merge
        states, each is prefilled again on its own at its next call (the join is found to fail only here
        or at a later join)."""
        stepper = Stepper(self.models)
        stepper.prefill([_all_tokens(r) for r in requests])
        for i, request in enumerate(requests):
            self.tracks[request] = _Track(None, 0, None, [])
            self._fed(request, stepper, i)
        if self.batch is None:
            self.batch = stepper
        else:
            try:
                self.batch.join(stepper)
            except ProxyToolError as err:
                log.info("proxytool: %s; the pair runs once per request per step", err)
                self.joinable = False
                stepper.close()
                for request in requests:  # scored already; their state is rebuilt alone at their next call
                    self.tracks[request].fed = len(request.output) + 1
                return
        self.rows.extend(requests)

    def _extend_alone(self, request, drafts: list[int] | None = None) -> None:
        """Feed the request's own Stepper its new tokens and ``drafts`` in one ``extend``; the drafts are
        scored (``ahead``) and truncated at once."""
        track = self.tracks[request]
        drafts = drafts or []
        new = list(request.output[track.fed :])
        track.ahead = []
        if not new and not drafts:
            return
        track.stepper.extend(torch.tensor([new + drafts], dtype=torch.long))
        if new:
            self._fed(request, track.stepper, 0, at=len(new) - 1)
        if drafts:
            track.solo = True
            at = [len(new) + j for j in range(len(drafts))]
            track.ahead = [[self._role_logits(track.stepper, p, 0, i) for p in self.models.pairs] for i in at]
            track.stepper.truncate(len(drafts))  # vLLM says next step which it kept: they come back as output

    def _step_batch(self, stepping: list) -> None:
        """Join the rows that step for the first time, then feed every row its one new token at once."""
        for request in stepping:
            if self.tracks[request].stepper is not None and not self._join(request):
                self._extend_alone(request)
        if not self.rows:
            return
        column = [[r.output[self.tracks[r].fed]] for r in self.rows]
        self.batch.extend(torch.tensor(column, dtype=torch.long))
        for i, request in enumerate(self.rows):
            self._fed(request, self.batch, i)

    def _join(self, request) -> bool:
        """Move the request's own Stepper into the batch; False where the states cannot merge after all (a
        KV cache that only join finds it cannot rearrange): from then on every row that is not yet in
        the batch steps on its own."""
        track = self.tracks[request]
        if self.batch is None:
            self.batch = track.stepper
        else:
            try:
                self.batch.join(track.stepper)
            except ProxyToolError as err:
                log.info("proxytool: %s; the pair runs once per request per step", err)
                self.joinable = False
                return False
        self.rows.append(request)
        track.stepper = None
        return True

    def _fed(self, request, stepper: Stepper, row: int, at: int = -1) -> None:
        """Record that ``stepper``'s row ``row`` has seen all of the request's output (its last token at
        position ``at`` of the last call)."""
        track, output = self.tracks[request], request.output
        track.fed, track.tail = len(output), (output[-1] if output else None)
        track.last = [self._role_logits(stepper, p, row, at) for p in self.models.pairs]
        track.ahead = []

    @staticmethod
    def _role_logits(stepper: Stepper, pair, row: int, at: int) -> tuple:
        return _logits(stepper, pair.expert, row, at), _logits(stepper, pair.anti_expert, row, at)

    def _leave(self, requests: set) -> bool:
        """Take ``requests`` out of the batch (their KV entries go). False where the batch's caches cannot
        lose rows after all (found only now): the batch is then dissolved, and every row in it is prefilled
        again on its own at its next plan."""
        rows = {i for i, r in enumerate(self.rows) if r in requests}
        if len(rows) == len(self.rows) and self.batch is not None:
            self.batch.close()
            self.batch = None
        elif rows:
            try:
                self.batch.drop(rows)
            except ProxyToolError as err:
                log.info("proxytool: %s; the pair runs once per request per step", err)
                self.joinable = False
                for request in self.rows:
                    self.tracks[request].fed = len(request.output) + 1  # out of step: prefilled again alone
                self.batch.close()
                self.batch, self.rows = None, []
                return False
        self.rows = [r for i, r in enumerate(self.rows) if i not in rows]
        return True


def _all_tokens(request) -> TokenPrompt:
    """The request's prompt and every token it has, as one prompt for a prefill."""
    return TokenPrompt(tuple(list(request.prompt) + list(request.output)))


def _logits(stepper: Stepper, member, row: int, at: int = -1) -> torch.Tensor:
    """One role's logits [vocab] for ``row`` at position ``at`` of the last call (a prefill's [rows, vocab]
    holds its last position only; an extend's is [rows, k, vocab])."""
    logits = stepper.logits_of(member)[row]
    return logits[at] if logits.dim() == 2 else logits
