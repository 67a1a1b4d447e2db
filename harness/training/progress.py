"""Progress inside a run: Lightning's tqdm bar in a terminal, plain timed lines in logs.

A terminal (stdout and stderr both a TTY) gets one bar per epoch: batches done/total, rate,
elapsed, ETA and the running training loss. Anything else (CI logs, ``nohup``, pipes) gets no
bar characters at all: the per-epoch line, plus a line every ``$HARNESS_PROGRESS_MINUTES``
minutes inside an epoch that takes longer.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, TextIO

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

from harness.core.errors import ConfigError
from harness.core.durations import format_duration

#: Minutes between progress lines inside an epoch when output is not a terminal (0: none).
PROGRESS_MINUTES_ENV = "HARNESS_PROGRESS_MINUTES"
DEFAULT_PROGRESS_MINUTES = 1.0
#: ``0``: no bars even in a terminal (e.g. for several drivers sharing one).
PROGRESS_BAR_ENV = "HARNESS_PROGRESS_BAR"


def progress_minutes() -> float:
    """``$HARNESS_PROGRESS_MINUTES`` (default 1); raises ConfigError (exit 2) for anything but a number ≥ 0."""
    text = os.environ.get(PROGRESS_MINUTES_ENV, "").strip()
    if not text:
        return DEFAULT_PROGRESS_MINUTES
    try:
        minutes = float(text)
    except ValueError:
        minutes = -1.0
    if not math.isfinite(minutes) or minutes < 0:
        raise ConfigError(f"${PROGRESS_MINUTES_ENV} is {text!r}: give minutes between progress lines inside an "
                          "epoch, e.g. 5 or 0.5 (0: none)")
    return minutes


def is_terminal() -> bool:
    """Whether to draw a bar: Lightning's bar writes to stdout, the harness's lines to stderr; both a terminal."""
    return os.environ.get(PROGRESS_BAR_ENV, "") != "0" and sys.stdout.isatty() and sys.stderr.isatty()


def progress_callbacks(verbose: bool) -> list[pl.Callback]:
    """The run's progress callback: a bar in a terminal, timed lines otherwise, none when quiet.

    Put them before the callback that prints the per-epoch line, so an epoch's bar is closed
    (left on its own line) before that line is printed.
    """
    if not verbose:
        return []
    if is_terminal():
        return [RunningLossBar(leave=True)]
    minutes = progress_minutes()
    return [TimedProgressLines(minutes * 60.0)] if minutes > 0 else []


def has_bar(callbacks: list[pl.Callback]) -> bool:
    """Lightning's ``enable_progress_bar``: it refuses a bar callback when that is False."""
    return any(isinstance(callback, TQDMProgressBar) for callback in callbacks)


def running_loss(module: pl.LightningModule) -> float | None:
    """The training loss averaged over the epoch's batches so far (FamilyModule), if the module keeps one."""
    metrics = getattr(module, "current_epoch_metrics", None)
    value = metrics().get("train_loss") if callable(metrics) else None
    return float(value) if value is not None else None


class RunningLossBar(TQDMProgressBar):
    """Lightning's tqdm bar, with the epoch's running training loss next to the last validation loss.

    With ``leave=True`` each epoch leaves its finished bar on a line of its own.
    """

    def on_train_start(self, *_: Any) -> None:
        # Lightning draws a bar here and, with leave=True, a fresh one each epoch, so the first
        # would stay behind as an empty "Training: 0/?" line; each epoch's own bar is enough.
        if not self._leave:
            super().on_train_start()

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        super().on_train_epoch_start(trainer)
        # Counted from 1 of max_epochs, as the per-epoch lines count (Lightning counts from 0).
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = dict(super().get_metrics(trainer, pl_module))
        loss = running_loss(pl_module)
        return {"loss": loss, **items} if loss is not None else items


class TimedProgressLines(pl.Callback):
    """Inside an epoch, one plain line every ``interval_s`` seconds (a log has no bar to watch)."""

    def __init__(self, interval_s: float, stream: TextIO | None = None) -> None:
        self.interval_s = interval_s
        self.stream = stream
        self._epoch_started = self._last_line = time.monotonic()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = self._last_line = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.monotonic()
        if now - self._last_line < self.interval_s:
            return
        self._last_line = now
        print(self.describe(trainer, pl_module, batch_idx + 1, now - self._epoch_started),
              file=self.stream or sys.stderr, flush=True)

    @staticmethod
    def describe(trainer: pl.Trainer, pl_module: pl.LightningModule, done: int, elapsed: float) -> str:
        """``epoch 2/10: batch 420/1327 (32%), 2.10 batches/s, elapsed 3m20s, ETA 7m12s, loss 4.123``."""
        total = trainer.num_training_batches
        rate = done / elapsed if elapsed > 0 else math.nan
        if isinstance(total, int) and total > 0:
            where = f"batch {done}/{total} ({100 * done // total}%)"
            eta = format_duration((total - done) / rate if rate > 0 else None)
        else:  # an iterable of unknown length
            where, eta = f"batch {done}", "?"
        loss = running_loss(pl_module)
        shown_loss = f", loss {loss:.4g}" if loss is not None else ""
        return (f"    epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {where}, {rate:.3g} batches/s, "
                f"elapsed {format_duration(elapsed)}, ETA {eta}{shown_loss}")
