"""Figures of the diagnostics: metric against the swept value, and gradient flow through time."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from harness.reports.memory_horizon import SweptTask
from harness.reports.plots import draw

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def plot_sweep(path: Path, task: SweptTask, colors: Mapping[str, str], thresholds: Sequence[float]) -> bool:
    """Mean primary metric per cell against the swept value, the band spanning the seeds' min–max,
    with the chance level and the criterion ("solved") level."""

    def paint(axes: Axes) -> bool:
        positions = np.arange(len(task.values))
        for offset, (cell, table) in zip(_offsets(len(task.scores)), task.scores.items()):
            with np.errstate(all="ignore"):
                finite = np.where(np.isfinite(table), table, np.nan)
                if not np.isfinite(finite).any():
                    continue
                mean, low, high = (np.nanmean(finite, 0), np.nanmin(finite, 0), np.nanmax(finite, 0))
            axes.plot(positions + offset, mean, "o-", color=colors.get(cell), label=cell, markersize=4)
            axes.fill_between(positions + offset, low, high, color=colors.get(cell), alpha=0.15, linewidth=0)
        if task.chance[0] is not None:
            axes.plot(positions, [c if c is not None else math.nan for c in task.chance], ":", color="grey",
                      label="chance")
        axes.plot(positions, thresholds, "--", color="black", linewidth=0.8, label="criterion (solved)")
        axes.set_xticks(list(positions), [str(v) for v in task.values])
        direction = "higher is better" if task.higher_is_better else "lower is better"
        axes.set(title=f"{task.task}: {task.metric} by {task.option} (band: seed min-max)",
                 xlabel=f"{task.option} (harder to the right)", ylabel=f"{task.metric} ({direction})")
        return True

    return draw(path, paint)


def plot_gradient_flow(path: Path, task: str, flows: Mapping[str, Sequence[Mapping[str, Any]]],
                       colors: Mapping[str, str], state: str = "a") -> bool:
    """‖∂L/∂state<T-d>‖ against d on a log scale, one colour per cell; solid: trained, dashed: at init.

    ``flows``: cell → the runs' ``gradient_flow.json`` columns (averaged over the runs here).
    """

    def paint(axes: Axes) -> bool:
        drawn = False
        for cell, runs in flows.items():
            for when, style in (("init", "--"), ("trained", "-")):
                curve = mean_flow(runs, when, state)
                if curve:
                    distances, norms = zip(*curve)
                    axes.plot(distances, norms, style, color=colors.get(cell),
                              label=f"{cell} ({when})", linewidth=1.2)
                    drawn = True
        axes.set_yscale("log")
        axes.set(title=f"{task}: ||dL/d{state}<T-d>||, solid trained, dashed init",
                 xlabel="distance d from the step where the loss is read", ylabel="gradient norm (log)")
        return drawn

    return draw(path, paint)


def mean_flow(runs: Sequence[Mapping[str, Any]], when: str, state: str) -> list[tuple[int, float]]:
    """(distance, mean norm over runs) of one state at one moment; zero norms are left out (log scale)."""
    by_distance: dict[int, list[float]] = {}
    for columns in runs:
        for w, s, d, n in zip(columns["when"], columns["state"], columns["distance"], columns["norm"]):
            if w == when and s == state and n > 0 and math.isfinite(n):
                by_distance.setdefault(int(d), []).append(float(n))
    return [(d, float(np.mean(v))) for d, v in sorted(by_distance.items())]


def _offsets(count: int) -> list[float]:
    """Small horizontal offsets so overlapping lines stay visible."""
    return [(i - (count - 1) / 2) * 0.04 for i in range(count)]
