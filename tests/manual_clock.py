"""A clock that moves only when a test says so, for lease expiry independent of machine load."""

from __future__ import annotations

import time


class ManualClock:
    """Seconds since the epoch, starting now, advanced only by :meth:`advance`."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
