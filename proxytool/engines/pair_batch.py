"""The expert pair's state for every steered row of a vLLM batch: one pair forward per step for all rows.

A request is prefilled on its own (so its first scores are those of a generation of it alone) and
joins the running batch (:meth:`Stepper.join`) on the step that brings its first new token; from then
on one ``extend`` of that shared Stepper feeds every row its new token, so each pair source runs once
per step for the whole batch. A row leaves the batch (:meth:`Stepper.drop`) when its request is gone,
or when its tokens fall out of step with the others (no new token or several in one step, or tokens
taken back): it is then prefilled again on its own from its prompt and all its tokens, and rejoins.

Where the pair's sources cannot merge states (``Stepper.joinable`` is False, e.g. a static KV cache, or
a join that finds a cache it cannot rearrange, e.g. sliding-window layers), rows do not join: each
keeps a Stepper of its own and the pair runs once per row per step (the per-request path).
"""

import logging
from dataclasses import dataclass

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


class PairBatch:
    """The pair's KV state for a changing set of requests, each with ``prompt`` and ``output`` token ids
    (``output`` grows between calls) and hashed by identity."""

    def __init__(self, models: ProxyModels):
        self.models = models
        self.joinable = Stepper(models).joinable
        self.batch: Stepper | None = None
        self.rows: list = []  # the requests in ``batch``, in its row order
        self.tracks: dict = {}

    def advance(self, requests: list) -> dict:
        """Feed the pair every request's output tokens that it has not seen; returns per request, per pair,
        the expert's and anti-expert's logits [vocab] after the request's last token."""
        self.keep(requests)
        plans = {request: self._plan(request) for request in requests}
        self._leave({r for r in self.rows if plans[r] != "batch"})
        for request, plan in plans.items():
            if plan == "prefill":
                self._prefill(request)
            elif plan == "alone":
                self._extend_alone(request)
        self._step_batch([r for r, plan in plans.items() if plan == "batch"])
        return {request: self.tracks[request].last for request in requests}

    def keep(self, requests) -> None:
        """Forget every request but ``requests`` (those that ended or were preempted)."""
        kept = set(requests)
        self._leave({r for r in self.rows if r not in kept})
        self.tracks = {r: t for r, t in self.tracks.items() if r in kept}

    def _plan(self, request) -> str:
        """``prefill`` (new, or out of step), ``alone`` (on its own Stepper), ``batch`` (one token in the
        shared step) or ``wait`` (nothing new: its last logits stand)."""
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
        if track.stepper is None:
            return "batch" if new == 1 else "prefill"
        if new == 1 and self.joinable:
            return "batch"
        return "alone" if new else "wait"

    def _prefill(self, request) -> None:
        stepper = Stepper(self.models)
        stepper.prefill([TokenPrompt(tuple(list(request.prompt) + list(request.output)))])
        self.tracks[request] = _Track(stepper, 0, None, [])
        self._fed(request, stepper, 0)

    def _extend_alone(self, request) -> None:
        track = self.tracks[request]
        track.stepper.extend(torch.tensor([request.output[track.fed :]], dtype=torch.long))
        self._fed(request, track.stepper, 0)

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

    def _fed(self, request, stepper: Stepper, row: int) -> None:
        """Record that ``stepper``'s row ``row`` has seen all of the request's output."""
        track, output = self.tracks[request], request.output
        track.fed, track.tail = len(output), (output[-1] if output else None)
        track.last = [(_last(stepper, p.expert, row), _last(stepper, p.anti_expert, row)) for p in self.models.pairs]

    def _leave(self, requests: set) -> None:
        """Take ``requests`` out of the batch (their KV entries go)."""
        rows = {i for i, r in enumerate(self.rows) if r in requests}
        if len(rows) == len(self.rows) and self.batch is not None:
            self.batch.close()
            self.batch = None
        elif rows:
            self.batch.drop(rows)
        self.rows = [r for i, r in enumerate(self.rows) if i not in rows]


def _last(stepper: Stepper, member, row: int) -> torch.Tensor:
    """One role's logits [vocab] for ``row`` after its last token (a prefill's [rows, vocab] or an
    extend's [rows, k, vocab])."""
    logits = stepper.logits_of(member)[row]
    return logits[-1] if logits.dim() == 2 else logits
