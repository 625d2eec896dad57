"""The server's one worker thread: batches waiting requests and steps their generations over shared models.

Every use of the models and the tokenizer happens on this thread. Requests whose decoding settings
match (sampling filters, α, ignore_eos) and that wait together start as one left-padded batch of
:func:`proxytool.decoding.generate.generate`; batches started at different times run as separate
generators whose steps alternate (each owns its decode state), so a new request starts at once
instead of waiting for a running batch to end. Each row stops on its own (EOS, stop string, its own
``max_tokens``, or a client that went away); a batch's generator is closed when all its rows are done.
"""

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from proxytool.decoding.formats import Prompt
from proxytool.decoding.generate import generate, settled_text
from proxytool.decoding.roles import ProxyModels
from proxytool.decoding.sampling import SamplingConfig
from proxytool.serving.adjust import ScoreChanges, adjuster
from proxytool.serving.logprobs import TokenInfo, token_info


class QueueFull(Exception):
    """More rows are waiting than the server accepts (HTTP 429)."""


class ShuttingDown(Exception):
    """The server stopped before the work was done (HTTP 503)."""


class TooLarge(Exception):
    """A request with more rows than the server could ever hold at once (HTTP 400, not 429)."""


@dataclass
class Ticket:
    """Room held for a request's rows until they are queued."""

    held: int


@dataclass
class TokenEvent:
    token_id: int
    text: str  # new text that is safe to show (may be empty while a stop string or a character is incomplete)
    info: TokenInfo | None


@dataclass
class DoneEvent:
    finish_reason: str
    text: str  # the rest of the text not sent yet (cut at a stop string)
    completion_tokens: int


@dataclass
class ErrorEvent:
    message: str
    status: int = 500  # 503: the server is shutting down


@dataclass
class Job:
    """One prompt to decode and where its events go (``emit`` is called on the worker thread)."""

    prompt: Prompt
    max_tokens: int
    emit: Callable[[object], None]
    sampling: SamplingConfig = SamplingConfig()  # its seed is unused: ``row_seed`` seeds the row
    row_seed: int = 0
    alphas: tuple[float, ...] = ()
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    top_logprobs: int | None = None  # None: no logprobs; else the chosen token's and this many alternatives
    logprob_ids: tuple[int, ...] = ()  # with top_logprobs: these ids' log-probabilities too (any rank)
    changes: ScoreChanges = ScoreChanges()  # logit_bias and presence/frequency penalties (serving/adjust.py)
    trace: bool = False  # also the base's log-probabilities (the web page's view of what the proxy changed)
    cancelled: threading.Event = field(default_factory=threading.Event)
    token_ids: list[int] = field(default_factory=list)
    sent: int = 0  # characters of text already emitted
    done: bool = False

    def key(self) -> tuple:
        """Jobs with equal keys can share one batched generation."""
        return self.sampling.filters + (self.alphas, self.ignore_eos)


@dataclass
class _Batch:
    jobs: list[Job]
    rows: object = None  # the generator
    infos: list = field(default_factory=list)


@dataclass
class Stats:
    waiting: int = 0
    active_rows: int = 0
    batches_started: int = 0
    tokens_generated: int = 0
    cancelled: int = 0


class Scheduler:
    """Owns the worker thread. ``submit`` a Job, or ``call`` a function that needs the models."""

    def __init__(self, models: ProxyModels, max_batch: int = 8, max_queue: int = 64):
        self.models = models
        self.max_batch = max(1, max_batch)
        self.max_queue = max(0, max_queue)
        self.stats = Stats()
        self._waiting: list[Job] = []
        self._reserved = 0  # room held by requests still being prepared
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._batches: list[_Batch] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="proxytool-scheduler", daemon=True)
        self._thread.start()

    # ---- called from the HTTP side -------------------------------------------------------------
    @contextmanager
    def admission(self, count: int):
        """Hold room for ``count`` rows while a request is prepared; raises QueueFull when there is none,
        and TooLarge when there never will be. Yields a :class:`Ticket` that ``submit`` redeems.

        Checked when a request arrives, before any work for it is queued on the worker thread. Rows that
        run count against --max-batch, rows that wait (queued or being prepared) against --max-queue.
        """
        most = self.max_queue + self.max_batch
        if count > most:
            raise TooLarge(
                f"{count} rows (prompts x n) in one request; this server takes at most {most} at once "
                f"(--max-batch {self.max_batch} + --max-queue {self.max_queue})"
            )
        ticket = Ticket(count)
        with self._wake:
            queued = len(self._waiting) + self._reserved
            if queued + count > self.max_queue + max(0, self.max_batch - self._active_rows()):
                raise QueueFull(f"{queued} rows waiting (--max-queue {self.max_queue})")
            self._reserved += count
            self.stats.waiting = queued + count
        try:
            yield ticket
        finally:
            with self._wake:
                self._reserved -= ticket.held
                ticket.held = 0
                self.stats.waiting = len(self._waiting) + self._reserved

    def submit(self, jobs: list[Job], ticket: "Ticket | None" = None) -> None:
        """Queue jobs; the room ``ticket`` held (see ``admission``) passes to them."""
        with self._wake:
            self._waiting.extend(jobs)
            if ticket is not None:
                self._reserved -= ticket.held
                ticket.held = 0
            self.stats.waiting = len(self._waiting) + self._reserved
            self._wake.notify()

    def call(self, fn: Callable[[], object]) -> Future:
        """Run ``fn`` on the worker thread between decoding steps (tokenizing, scoring)."""
        future: Future = Future()
        with self._wake:
            self._calls.put((fn, future))
            self._wake.notify()
        return future

    def abort(self, message: str) -> None:
        """End every queued and running job now with a 503 error event (the shutdown's grace period is over).

        Called from another thread: a job's events stop at this one, whatever the worker emits later."""
        with self._wake:
            jobs = self._waiting + [j for b in self._batches for j in b.jobs]
            self._waiting = []
            while not self._calls.empty():  # requests still being prepared (tokenizing, scoring)
                _, future = self._calls.get()
                if future.set_running_or_notify_cancel():
                    future.set_exception(ShuttingDown(message))
            for job in jobs:
                if not job.done:
                    job.done = True
                    job.emit(ErrorEvent(message, 503))
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=30)

    # ---- the worker thread ---------------------------------------------------------------------
    def _active_rows(self) -> int:
        return sum(1 for b in self._batches for j in b.jobs if not j.done)

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._wake:
                while not (self._stopping or self._waiting or self._batches or not self._calls.empty()):
                    self._wake.wait()
                if self._stopping:
                    break
                started = self._admit()
            try:
                self._run_calls()
                for batch in started:
                    self._start(batch)
                for batch in list(self._batches):
                    self._advance(batch)
            except Exception as err:  # noqa: BLE001 (a bug fails the running requests, not the server)
                for batch in self._batches + started:
                    for job in batch.jobs:
                        if not job.done:
                            job.done = True
                            job.emit(ErrorEvent(f"internal error: {err}"))
            self._batches = [b for b in self._batches if not all(j.done for j in b.jobs)]
            self.stats.active_rows = self._active_rows()
        for batch in self._batches:
            for job in batch.jobs:
                self._finish(job, "abort")
        for job in self._waiting:
            job.emit(ErrorEvent("the server is shutting down"))

    def _admit(self) -> list[_Batch]:
        """Take waiting jobs (up to --max-batch active rows), grouped by settings into new batches."""
        room = self.max_batch - self._active_rows()
        taken, kept = [], []
        for job in self._waiting:
            if job.cancelled.is_set():
                self.stats.cancelled += 1
                continue
            (taken if len(taken) < room else kept).append(job)
        self._waiting = kept
        self.stats.waiting = len(kept) + self._reserved
        groups: dict[tuple, list[Job]] = {}
        for job in taken:
            groups.setdefault(job.key(), []).append(job)
        return [_Batch(jobs) for jobs in groups.values()]

    def _run_calls(self) -> None:
        while not self._calls.empty():
            fn, future = self._calls.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except Exception as err:  # noqa: BLE001 (reported to the request that asked)
                    future.set_exception(err)

    def _start(self, batch: _Batch) -> None:
        jobs = batch.jobs
        want_info = any(j.top_logprobs is not None or j.trace for j in jobs)

        def observe(stepper, scores, tokens):
            if want_info:
                base = stepper.role_logits()["base"] if any(j.trace for j in jobs) else None
                if base is not None and base.dim() == 3:  # after a step: [prompts, 1, vocab]
                    base = base[:, -1]
                batch.infos = [
                    token_info(scores[i], int(tokens[i]), j.top_logprobs, base[i] if j.trace else None, j.logprob_ids)
                    if not j.done and (j.top_logprobs is not None or j.trace)
                    else None
                    for i, j in enumerate(jobs)
                ]

        first = jobs[0]
        batch.rows = generate(
            self.models,
            [j.prompt for j in jobs],
            max_new_tokens=max(j.max_tokens for j in jobs),
            sampling=first.sampling,
            row_seeds=[j.row_seed for j in jobs],
            alphas=first.alphas,
            ignore_eos=first.ignore_eos,
            observe=observe,
            adjust=adjuster([j.changes for j in jobs]),
        )
        self.stats.batches_started += 1
        self._batches.append(batch)

    def _advance(self, batch: _Batch) -> None:
        for job in batch.jobs:
            if not job.done and job.cancelled.is_set():
                job.done = True
                self.stats.cancelled += 1
        if all(j.done for j in batch.jobs):
            batch.rows.close()
            return
        try:
            rows = next(batch.rows)
        except StopIteration:
            rows = None
        except Exception as err:  # noqa: BLE001 (one failed batch must not take the server down)
            for job in batch.jobs:
                if not job.done:
                    job.done = True
                    job.emit(ErrorEvent(f"generation failed: {err}"))
            batch.rows.close()
            return
        for i, job in enumerate(batch.jobs):
            if job.done:
                continue
            row = rows[i] if rows is not None else None
            if row is not None and len(row.token_ids) > len(job.token_ids):
                self._append(job, row.token_ids[-1], batch.infos[i] if batch.infos else None)
                if not job.done and row.finish_reason == "stop":
                    self._finish(job, "stop")
            if not job.done and (row is None or len(job.token_ids) >= job.max_tokens):
                self._finish(job, "length")
        if all(j.done for j in batch.jobs):
            batch.rows.close()

    def _append(self, job: Job, token: int, info: TokenInfo | None) -> None:
        job.token_ids.append(token)
        self.stats.tokens_generated += 1
        text = self._text(job)
        cut = _stop_at(text, job.stop)
        if cut is not None:
            job.emit(TokenEvent(token, "", info))
            self._finish(job, "stop", text[:cut])
            return
        shown = settled_text(text, job.stop)
        new = shown[job.sent :] if len(shown) > job.sent else ""
        job.sent += len(new)
        job.emit(TokenEvent(token, new, info))

    def _finish(self, job: Job, reason: str, text: str | None = None) -> None:
        if job.done:
            return
        job.done = True
        text = self._text(job) if text is None else text
        job.emit(DoneEvent(reason, text[job.sent :], len(job.token_ids)))

    def _text(self, job: Job) -> str:
        return self.models.tokenizer.decode(job.token_ids, skip_special_tokens=True)


def _stop_at(text: str, stop: tuple[str, ...]) -> int | None:
    hits = [text.find(s) for s in stop if s and s in text]
    return min(hits) if hits else None


def wait_idle(scheduler: Scheduler, timeout: float = 10.0) -> bool:
    """Block until nothing is waiting or running (tests, shutdown)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if scheduler.stats.active_rows == 0 and scheduler.stats.waiting == 0:
            return True
        time.sleep(0.02)
    return False
