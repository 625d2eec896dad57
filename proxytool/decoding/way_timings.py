"""Which is faster here, plain or speculative rounds: measured while decoding (``speculative="auto"``)."""

import threading
from collections import deque


class WayTimings:
    """Seconds per emitted token of plain and speculative rounds, per batch size, kept for the loaded
    models' lifetime (``ProxyModels.speculation``).

    :meth:`way` says which to run next: after one untimed warm-up round each, the ways alternate until
    each has ``TRIALS`` timed rounds; then the one with fewer seconds per token over its last ``WINDOW``
    rounds, except that every ``EXPLORE``-th round takes the other (acceptance depends on the text).
    """

    TRIALS, WINDOW, EXPLORE = 3, 6, 32

    def __init__(self):
        self._lock = threading.Lock()
        self._rounds: dict[int, dict[str, deque]] = {}  # batch size -> way -> (seconds, tokens) of recent rounds
        self._warm: set[tuple[int, str]] = set()
        self._count: dict[int, int] = {}

    def way(self, rows: int) -> str:
        with self._lock:
            timed = self._of(rows)
            self._count[rows] = count = self._count.get(rows, 0) + 1
            plain, speculative = timed["plain"], timed["speculative"]
            if min(len(plain), len(speculative)) < self.TRIALS:
                return "plain" if len(plain) <= len(speculative) else "speculative"
            best, other = sorted(("plain", "speculative"), key=lambda w: _per_token(timed[w]))
            return other if count % self.EXPLORE == 0 else best

    def record(self, rows: int, way: str, seconds: float, tokens: int) -> None:
        with self._lock:
            if (rows, way) not in self._warm:
                self._warm.add((rows, way))  # first round of a way: one-time costs, not its speed
                return
            self._of(rows)[way].append((seconds, tokens))

    def _of(self, rows: int) -> dict[str, deque]:
        return self._rounds.setdefault(rows, {w: deque(maxlen=self.WINDOW) for w in ("plain", "speculative")})

    def summary(self) -> dict[str, dict[str, float]]:
        """Seconds per token of each way, by batch size (for benchmarks and traces)."""
        with self._lock:
            return {
                str(rows): {way: _per_token(timed) for way, timed in ways.items() if timed}
                for rows, ways in self._rounds.items()
            }


def _per_token(rounds) -> float:
    return sum(s for s, _ in rounds) / max(1, sum(t for _, t in rounds))
