"""Per-run diagnostics beside training: the gradient-flow probe and the pre-clipping gradient norms.

The runner makes one :class:`RunDiagnostics` per run, passes its callbacks to training and logs
what it measured to MLflow at the end, also when the run diverged (the norms up to that step).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from harness.experiment import DiagnosticsSettings, TrainingSettings
from harness.training.batching import make_loader
from harness.training.families import FAMILY_MODULES
from harness.training.finite import gradient_norm
from harness.training.gradient_flow import probe_network
from harness.core.tasks import Task, TaskData

#: Histogram bins of the pre-clipping norms: log-spaced, 10^-4 … 10^4, plus under and overflow.
NORM_BIN_EDGES = [0.0, *np.logspace(-4, 4, 17).tolist(), math.inf]


class _NormSeries:
    """0-d norms kept on their device, moved to the host :attr:`FLUSH_EVERY` at a time: reading each one
    at once would make every step wait for the GPU."""

    FLUSH_EVERY = 256

    def __init__(self) -> None:
        self._host: list[float] = []
        self._pending: list[torch.Tensor] = []

    def append(self, norm: torch.Tensor | None) -> None:
        if norm is not None:
            self._pending.append(norm)
            if len(self._pending) >= self.FLUSH_EVERY:
                self.values()

    def values(self) -> list[float]:
        if self._pending:
            self._host += torch.stack(self._pending).float().cpu().tolist()
            self._pending.clear()
        return self._host


class GradientNormMonitor(pl.Callback):
    """The global L2 norm of the gradient at every optimizer step, before Lightning clips it and after."""

    def __init__(self) -> None:
        self._before, self._after = _NormSeries(), _NormSeries()

    @property
    def norms(self) -> list[float]:
        """Every step's norm before clipping so far, in order."""
        return self._before.values()

    @property
    def clipped_norms(self) -> list[float]:
        """Every step's norm after clipping (what the optimizer applied), in order."""
        return self._after.values()

    def on_before_optimizer_step(self, trainer: pl.Trainer, module: pl.LightningModule, optimizer: Any) -> None:
        # Lightning calls this hook after backward and before its gradient clipping (precision plugin).
        self._before.append(gradient_norm(module))

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_index: int) -> None:
        # The step is done and the gradients are still the clipped ones the optimizer used (Lightning
        # clears them before the next backward).
        self._after.append(gradient_norm(module))


def clipping_summary(norms: list[float], threshold: float | None,
                     clipped: list[float] = ()) -> tuple[dict[str, float], dict[str, Any]]:
    """MLflow metrics (fraction of steps above the threshold, quantiles; the largest norm after clipping,
    at most the threshold when clipping works) and the histogram artifact."""
    values = np.asarray(norms, dtype=float)
    finite = values[np.isfinite(values)]
    metrics: dict[str, float] = {"grad_norm_steps": float(len(values))}
    if len(finite):
        metrics.update(grad_norm_median=float(np.median(finite)), grad_norm_p90=float(np.quantile(finite, 0.9)),
                       grad_norm_max=float(finite.max()))
    after = np.asarray(clipped, dtype=float)
    if len(after) and np.isfinite(after).all():
        metrics["grad_norm_after_clip_max"] = float(after.max())
    if threshold is not None and len(values):
        metrics["grad_clipped_fraction"] = float(np.mean(~(values <= threshold)))  # a NaN/inf norm was clipped too
    counts, _ = np.histogram(np.clip(finite, 0.0, 1e300), bins=NORM_BIN_EDGES[:-1] + [1e300])
    histogram = {"bin_edges": NORM_BIN_EDGES, "counts": counts.tolist(), "nonfinite": int(len(values) - len(finite)),
                 "clip_threshold": threshold, "steps": len(values)}
    return metrics, histogram


class RunDiagnostics:
    """What one run measures besides training; ``callbacks`` go to training, ``log`` writes to MLflow."""

    def __init__(self, settings: DiagnosticsSettings, task: Task, data: TaskData, training: TrainingSettings,
                 seed: int) -> None:
        self.settings, self.task, self.data, self.training = settings, task, data, training
        self.monitor = GradientNormMonitor()
        self.flow: dict[str, list[Any]] = {"when": [], "state": [], "distance": [], "norm": [], "examples": []}
        self._batch: dict[str, Any] | None = None
        if settings.gradient_flow:
            loader = make_loader(task.family, data, "validation", settings.probe_size, seed=seed,
                                 bptt_steps=training.bptt_steps)
            self._batch = next(iter(loader))  # the same fixed batch before and after training

    def callbacks(self) -> list[pl.Callback]:
        return [self.monitor]

    def probe(self, net: nn.Module, when: str) -> None:
        """Gradient flow of the net as it is now (``when``: "init" or "trained"); no-op unless switched on."""
        if self._batch is None:
            return
        def loss_of(probe: nn.Module) -> Tensor:
            module = FAMILY_MODULES[self.task.family](probe, self.task, self.data, self.training)
            loss_sum, count, _, _ = module.compute(self._batch, predict=False)
            return loss_sum / max(count, 1)  # the mean loss training differentiates

        columns = probe_network(net, loss_of)
        self.flow["when"] += [when] * len(columns["distance"])
        for key, values in columns.items():
            self.flow[key] += values

    def log(self, tracker: Any, run_id: str) -> None:
        metrics, histogram = clipping_summary(self.monitor.norms, self.training.gradient_clip_norm,
                                              self.monitor.clipped_norms)
        tracker.log_metrics(run_id, metrics)
        chance = self.task.chance_level()
        if chance is not None:
            tracker.set_tags(run_id, {"chance_level": repr(float(chance))})
        tracker.log_text(run_id, json.dumps(histogram, indent=1), "gradient_norms.json")
        if self.flow["when"]:
            tracker.log_text(run_id, json.dumps(self.flow), "gradient_flow.json")

