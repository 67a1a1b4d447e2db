"""The grid's elapsed time and ETA, from the runs finished so far.

No heavy imports: ``harness status`` uses this module too, and must answer in well under a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from harness.core.durations import format_duration


class GridClock:
    """Elapsed time of a grid and an ETA for the rest of it, from the runs this process has finished.

    The ETA is (mean seconds per run finished so far) × (runs still to train, the current one
    included): runs of one grid differ in size, so it is an estimate that sharpens as runs end.
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._now = clock or time.monotonic
        self.started = self._now()
        self.durations: list[float] = []
        self._run_started: float | None = None

    def start_run(self) -> None:
        self._run_started = self._now()

    def end_run(self) -> None:
        if self._run_started is not None:
            self.durations.append(self._now() - self._run_started)
            self._run_started = None

    def elapsed(self) -> float:
        return self._now() - self.started

    def eta(self, remaining: int) -> float | None:
        """Seconds until ``remaining`` more runs are done; None before any run finished."""
        if not self.durations:
            return None
        return max(remaining, 0) * sum(self.durations) / len(self.durations)

    def describe(self, remaining: int) -> str:
        """``elapsed 3m05s, ETA 12m40s`` (``ETA ?`` until a run has finished)."""
        return f"elapsed {format_duration(self.elapsed())}, ETA {format_duration(self.eta(remaining))}"
