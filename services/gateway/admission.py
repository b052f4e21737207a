"""How many transactions a gateway holds accepted and not yet committed before it answers 503.

A fixed count means a different wait on every machine: 20,000 transactions are 1.4 s of queue at
14,000 tx/s and 2.5 s at 8,000. So the bound is also set in seconds: the rate at which this
gateway's transactions have recently left the queue (committed or found invalid), times
`max_queue_s`. A floor keeps an idle gateway, whose recent rate is zero, open to a burst; the
fixed count stays as a hard cap.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

RATE_WINDOW_S = 5
IDLE_FLOOR = 5_000  # transactions an idle gateway accepts at once


class AdmissionBound:
    def __init__(
        self,
        max_uncommitted: int,
        max_queue_s: float,
        floor: int = IDLE_FLOOR,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_uncommitted = max_uncommitted
        self.max_queue_s = max_queue_s
        self.floor = floor
        self._clock = clock
        self._drained: deque[list[int]] = deque()  # [whole second, transactions drained in it]

    def drained(self, n: int) -> None:
        """`n` of this gateway's transactions left the queue (committed or refused by the ledger)."""
        if n <= 0:
            return
        second = int(self._clock())
        if self._drained and self._drained[-1][0] == second:
            self._drained[-1][1] += n
        else:
            self._drained.append([second, n])
        self._forget(second)

    def _forget(self, second: int) -> None:
        while self._drained and self._drained[0][0] <= second - RATE_WINDOW_S:
            self._drained.popleft()

    def rate(self) -> float:
        """Transactions per second drained over the last complete seconds of the window."""
        now = int(self._clock())
        self._forget(now)
        return sum(n for s, n in self._drained if s < now) / (RATE_WINDOW_S - 1)

    def bound(self) -> int:
        """The current bound; 0 means none."""
        if self.max_queue_s <= 0:
            return self.max_uncommitted
        adaptive = max(self.floor, int(self.rate() * self.max_queue_s))
        return min(self.max_uncommitted, adaptive) if self.max_uncommitted else adaptive
