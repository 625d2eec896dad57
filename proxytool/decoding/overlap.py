"""Run the base and the small models at the same time.

On a CPU, one model's decode step barely speeds up with a second thread (measured: Qwen 1.5B
407 ms/token on one thread, 426 on two), so the base on one core and the proxies on the other beat
both sequential orders. Each lane is a worker thread with its own torch thread count; on CUDA each
lane also gets its own stream.
"""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from proxytool.decoding.sources import Source


class Lanes:
    """Sources split into lanes that step concurrently; within a lane, one after another."""

    def __init__(self, lanes: list[list[Source]], threads: list[int]):
        self.lanes = lanes
        self.threads = threads
        self.pool = ThreadPoolExecutor(len(lanes), thread_name_prefix="proxytool-lane")
        device = lanes[0][0].device
        self.streams = (
            [torch.cuda.Stream(device=device) for _ in lanes] if device.type == "cuda" else [None] * len(lanes)
        )

    def map(self, fn: Callable[[Source], list[torch.Tensor]], wanted: list[Source]) -> dict[int, list[torch.Tensor]]:
        """``fn(source)`` for every wanted source; returns ``{id(source): result}``."""
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


def plan_lanes(base: Source, others: list[Source], total_threads: int) -> Lanes | None:
    """Two lanes: the base, and the proxies; threads split evenly (at least one each). None if pointless."""
    if not others:
        return None
    base_threads = max(1, total_threads // 2)
    return Lanes([[base], others], [base_threads, max(1, total_threads - base_threads)])
