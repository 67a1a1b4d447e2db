"""SIGINT/SIGTERM handling shared by grid runs and tuning trials.

A signal becomes :class:`RunInterrupted`, raised at once, or — inside :meth:`Interrupts.critical`,
around bookkeeping that must not be torn in half (an MLflow write, a ledger update, an Optuna
tell) — remembered and raised at the next :meth:`Interrupts.check`.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class RunInterrupted(BaseException):
    """SIGINT/SIGTERM arrived: end the current run as KILLED and stop.

    A BaseException, not KeyboardInterrupt: Lightning answers KeyboardInterrupt with
    sys.exit(1), but re-raises other BaseExceptions after its own clean-up.
    """

    def __init__(self, signal_number: int) -> None:
        self.signal_number = signal_number
        super().__init__(f"interrupted by {signal.Signals(signal_number).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number


class Interrupts:
    """The pending interrupt of one process, and where it may be raised."""

    def __init__(self) -> None:
        self.pending: RunInterrupted | None = None
        self._depth = 0

    @contextmanager
    def installed(self) -> Iterator[None]:
        """SIGINT and SIGTERM handlers for the duration of the block; the old ones come back after."""
        def handler(signum: int, frame: Any) -> None:
            if self.pending is not None:
                return  # already stopping; a repeat (Ctrl-C reaching a worker and its parent) changes nothing
            self.pending = RunInterrupted(signum)
            if not self._depth:
                raise self.pending

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for number, old in previous.items():
                signal.signal(number, old)

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A signal arriving in here is remembered, and raised at the next :meth:`check`."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def check(self) -> None:
        if self.pending is not None:
            raise self.pending
