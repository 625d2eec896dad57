"""Run the base and the small models at the same time.

Each lane is a worker thread with its own torch thread count (on CUDA, its own stream too): the base
in one lane, the proxies in the other, against everything one after another with every thread.
Which is faster depends on the machine and the models: one decode step of a model may or may not
speed up with a second thread (measured on 2 cores: the 1.5B went 407 → 426 ms/token on one
machine and 2.36 → 4.28 tokens/s on another), and a shared LoRA pair gains more from its own lane
than two separate small models. So ``--overlap auto`` measures: for each call shape it times a few
calls each way, alternating, and keeps the faster for the loaded models' lifetime. Both ways compute
the same thing, so the tokens never depend on the choice.
"""

import statistics
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor

import torch

from proxytool.decoding.sources import Source

TRIALS = 3  # timed calls each way per call shape, after one untimed warm-up call


class Lanes:
    """Sources split into lanes that step concurrently; within a lane, one after another.

    ``measure``: choose per call shape between the lanes and one thread running everything (see the
    module's docstring); otherwise always the lanes.
    """

    def __init__(self, lanes: list[list[Source]], threads: list[int], measure: bool = False):
        self.lanes = lanes
        self.threads = threads
        self.measure = measure
        self.pool = ThreadPoolExecutor(len(lanes), thread_name_prefix="proxytool-lane")
        device = lanes[0][0].device
        self.streams = (
            [torch.cuda.Stream(device=device) for _ in lanes] if device.type == "cuda" else [None] * len(lanes)
        )
        self._lock = threading.Lock()
        self._timings: dict[Hashable, list[tuple[bool, float]]] = {}  # shape -> (overlapped?, seconds) per call
        self._chosen: dict[Hashable, bool] = {}  # shape -> overlap?

    def map(
        self, fn: Callable[[Source], list[torch.Tensor]], wanted: list[Source], shape: Hashable = None
    ) -> dict[int, list[torch.Tensor]]:
        """``fn(source)`` for every wanted source; returns ``{id(source): result}``. ``shape`` names the
        call's size (e.g. the tokens' shape) for the measured choice."""
        if not self.measure or shape is None:
            return self._overlapped(fn, wanted)
        key = (shape, tuple(id(s) for s in wanted))
        overlap, timed = self._next_way(key)
        start = time.perf_counter()
        results = self._overlapped(fn, wanted) if overlap else {id(s): fn(s) for s in wanted}
        if timed:
            self._record(key, overlap, time.perf_counter() - start)
        return results

    def choices(self) -> dict[str, str]:
        """What the measurement chose so far, by call shape (for benchmarks and traces)."""
        with self._lock:
            return {str(key[0]): "lanes" if overlap else "one thread" for key, overlap in self._chosen.items()}

    def _next_way(self, key) -> tuple[bool, bool]:
        """(overlap this call?, time it?): a warm-up call, then alternate until each way has TRIALS."""
        with self._lock:
            if key in self._chosen:
                return self._chosen[key], False
            calls = self._timings.get(key)
            if calls is None:
                self._timings[key] = []
                return True, False
            return len(calls) % 2 == 1, True

    def _record(self, key, overlap: bool, seconds: float) -> None:
        with self._lock:
            calls = self._timings.setdefault(key, [])
            calls.append((overlap, seconds))
            if len(calls) >= 2 * TRIALS and key not in self._chosen:
                lanes = statistics.median(s for o, s in calls if o)
                alone = statistics.median(s for o, s in calls if not o)
                self._chosen[key] = lanes < alone

    def _overlapped(self, fn, wanted: list[Source]) -> dict[int, list[torch.Tensor]]:
        keep = {id(s) for s in wanted}
        lanes = [[s for s in lane if id(s) in keep] for lane in self.lanes]
        threads = self.threads if all(lanes) else [sum(self.threads)] * len(lanes)  # one lane: all threads
        futures = [
            self.pool.submit(self._run, lane, n, stream, fn)
            for lane, n, stream in zip(lanes, threads, self.streams)
            if lane
        ]
        results = {}
        for future in futures:
            results.update(future.result())
        for stream in self.streams:
            if stream is not None:
                torch.cuda.current_stream().wait_stream(stream)
        return results

    @staticmethod
    def _run(lane, threads, stream, fn):
        torch.set_num_threads(threads)  # per-thread setting (OpenMP's thread count is thread-local)
        if stream is None:
            return {id(s): fn(s) for s in lane}
        stream.wait_stream(torch.cuda.default_stream(stream.device))
        with torch.cuda.stream(stream):
            return {id(s): fn(s) for s in lane}


def plan_lanes(base: Source, others: list[Source], total_threads: int, measure: bool = False) -> Lanes | None:
    """Two lanes: the base, and the proxies; threads split evenly (at least one each). None if pointless."""
    if not others:
        return None
    base_threads = max(1, total_threads // 2)
    return Lanes([[base], others], [base_threads, max(1, total_threads - base_threads)], measure=measure)
