"""The server's one worker thread: batches waiting requests and steps their generations over shared models.

Every use of the models and the tokenizer happens on this thread. Requests whose decoding settings
match (sampling filters, α, ignore_eos) and that wait together start as one left-padded batch.

``batching="continuous"`` (the default where the models allow it: local models with dynamic KV caches):
a batch is a :class:`proxytool.decoding.generate.Decoding`. Newcomers are prefilled and get their first
token between two steps of the running batch, then join it (:meth:`Decoding.join`): from the next step
on one forward carries every row, each with its own length, positions and KV entries. A row that ends
(EOS, stop string, its ``max_tokens``, a client that went away) leaves the batch at once
(:meth:`Decoding.drop`). Newcomers whose settings differ from every running batch's start one of their
own, and the running batches' steps alternate.

``batching="separate"`` (and a remote base, a pair across tokenizers or a static KV cache, which cannot
merge states): each batch is a generator of :func:`proxytool.decoding.generate.generate`; batches started
at different times alternate steps, and a finished row stays in its batch's forwards until the batch ends.
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
from proxytool.decoding.generate import Decoding, generate, settled_text
from proxytool.decoding.roles import ProxyModels
from proxytool.decoding.sampling import SamplingConfig
from proxytool.decoding.stepper import Stepper
from proxytool.errors import ProxyToolError
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


BATCHING = ("continuous", "separate")


def check_batching(batching: str) -> None:
    if batching not in BATCHING:
        raise ProxyToolError(f"--batching must be one of {', '.join(BATCHING)} (got {batching!r})")


@dataclass
class _Batch:
    jobs: list[Job]  # in row order (continuous: changed in place as rows join and leave)
    rows: object = None  # separate: the generator
    decoding: Decoding | None = None  # continuous
    infos: list = field(default_factory=list)


@dataclass
class Stats:
    waiting: int = 0
    active_rows: int = 0
    batches_started: int = 0
    tokens_generated: int = 0
    cancelled: int = 0
    batch_rows: int = 0  # rows the running batches' forwards carry (separate batching: finished rows too)
    rows_joined: int = 0  # rows that joined a running batch (continuous batching)
    completed: int = 0  # rows that ended with a finish reason (stop, length), answered by the worker
    failed: int = 0  # rows that ended with an error event (generation failed, shutdown)


class Scheduler:
    """Owns the worker thread. ``submit`` a Job, or ``call`` a function that needs the models."""

    def __init__(self, models: ProxyModels, max_batch: int = 8, max_queue: int = 64, batching: str = "continuous"):
        check_batching(batching)
        self.models = models
        # continuous only where states can merge (local models, dynamic KV caches); else as "separate"
        self.continuous = batching == "continuous" and Stepper(models).joinable
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
                    self.stats.failed += 1
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
                            self.stats.failed += 1
                            job.emit(ErrorEvent(f"internal error: {' '.join(str(err).split())}"))
            self._batches = [b for b in self._batches if not all(j.done for j in b.jobs)]
            self.stats.active_rows = self._active_rows()
            self.stats.batch_rows = sum(len(b.jobs) for b in self._batches)
        for batch in self._batches:
            for job in batch.jobs:
                self._finish(job, "abort")
        for job in self._waiting:
            self.stats.failed += 1
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
        jobs = batch.jobs  # the closures read the batch's rows as they are at each step

        def observe(stepper, scores, tokens):
            if any(j.top_logprobs is not None or j.trace for j in jobs):
                base = stepper.role_logits()["base"] if any(j.trace for j in jobs) else None
                if base is not None and base.dim() == 3:  # after a step: [prompts, 1, vocab]
                    base = base[:, -1]
                batch.infos = [
                    token_info(scores[i], int(tokens[i]), j.top_logprobs, base[i] if j.trace else None, j.logprob_ids)
                    if not j.done and (j.top_logprobs is not None or j.trace)
                    else None
                    for i, j in enumerate(jobs)
                ]
            else:
                batch.infos = []

        def adjust(scores, histories):
            changes = adjuster([j.changes for j in jobs])
            return scores if changes is None else changes(scores, histories)

        first = jobs[0]
        settings = dict(
            max_new_tokens=[j.max_tokens for j in jobs],
            sampling=first.sampling,
            row_seeds=[j.row_seed for j in jobs],
            alphas=first.alphas,
            ignore_eos=first.ignore_eos,
            observe=observe,
            adjust=adjust if self.continuous or any(j.changes.active for j in jobs) else None,
        )
        self.stats.batches_started += 1
        if not self.continuous:
            batch.rows = generate(self.models, [j.prompt for j in jobs], **settings)
            self._batches.append(batch)
            return
        batch.decoding = Decoding(self.models, len(jobs), **settings)
        try:
            if not batch.decoding.rows.over:  # the prefill, between two steps of the running batches
                batch.decoding.start([j.prompt for j in jobs])
        except Exception as err:  # noqa: BLE001 (the newcomers fail; the running batches go on)
            self._fail(batch, err)
            batch.decoding.close()
            return
        self._deliver(batch, batch.decoding.rows.rows)
        self._leave(batch)
        if not jobs:
            return
        running = next((b for b in self._batches if b.jobs and b.jobs[0].key() == first.key()), None)
        if running is not None:
            try:
                running.decoding.join(batch.decoding)
            except ProxyToolError:  # a state that cannot merge after all: it steps on its own
                running = None
        if running is None:
            self._batches.append(batch)
        else:
            running.jobs.extend(jobs)
            self.stats.rows_joined += len(jobs)

    def _advance(self, batch: _Batch) -> None:
        for job in batch.jobs:
            if not job.done and job.cancelled.is_set():
                job.done = True
                self.stats.cancelled += 1
        if batch.decoding is not None:
            self._step(batch)
            return
        if all(j.done for j in batch.jobs):
            batch.rows.close()
            return
        try:
            rows = next(batch.rows)
        except StopIteration:
            rows = None
        except Exception as err:  # noqa: BLE001 (one failed batch must not take the server down)
            self._fail(batch, err)
            batch.rows.close()
            return
        self._deliver(batch, rows)
        if all(j.done for j in batch.jobs):
            batch.rows.close()

    def _step(self, batch: _Batch) -> None:
        """Continuous batching: rows that ended leave, the others take one step together."""
        self._leave(batch)
        if not batch.jobs:
            return
        try:
            batch.decoding.step()
        except Exception as err:  # noqa: BLE001 (one failed batch must not take the server down)
            self._fail(batch, err)
            batch.decoding.close()
            return
        self._deliver(batch, batch.decoding.rows.rows)
        self._leave(batch)

    def _leave(self, batch: _Batch) -> None:
        """Rows whose job is done leave the batch's decoding state now (continuous batching)."""
        gone = {i for i, job in enumerate(batch.jobs) if job.done}
        if len(gone) == len(batch.jobs):
            batch.decoding.close()
        elif gone:
            batch.decoding.drop(gone)
        batch.jobs[:] = [job for i, job in enumerate(batch.jobs) if i not in gone]
        batch.infos = []

    def _deliver(self, batch: _Batch, rows) -> None:
        """Each unfinished job's new token (``rows``: the batch's rows after a step, None after its end).

        A job whose own part fails here (its text, its events) fails alone: it is done, so it leaves the
        batch at once, and the other rows go on."""
        for i, job in enumerate(batch.jobs):
            if job.done:
                continue
            try:
                row = rows[i] if rows is not None else None
                if row is not None and len(row.token_ids) > len(job.token_ids):
                    self._append(job, row.token_ids[-1], batch.infos[i] if batch.infos else None)
                    if not job.done and row.finish_reason == "stop":
                        self._finish(job, "stop")
                if not job.done and (row is None or len(job.token_ids) >= job.max_tokens):
                    self._finish(job, "length")
            except Exception as err:  # noqa: BLE001 (one request's failure must not end the others)
                self._fail_job(job, err)

    def _fail(self, batch: _Batch, err: Exception) -> None:
        for job in batch.jobs:
            self._fail_job(job, err)

    def _fail_job(self, job: Job, err: Exception) -> None:
        if not job.done:
            job.done = True
            self.stats.failed += 1
            job.emit(ErrorEvent(f"generation failed: {' '.join(str(err).split())}"))

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
        text = self._text(job) if text is None else text
        job.done = True
        if reason == "abort":
            self.stats.failed += 1
        else:
            self.stats.completed += 1
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
