"""The report's figures: one PNG each, drawn without pyplot (no global state)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.reports import palette
from harness.reports.intervals import CellSummary, summarize

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from harness.reports.runs_view import ReportTask
    from harness.runs.tracking import Tracker

#: Chance accuracy drawn on the accuracy-by-group chart when the runs record no chance level.
CHANCE = 0.5
#: Saved at this DPI and shown at two thirds of its pixel width in the HTML: sharp on high-DPI screens.
DPI = 150
GROUPED = "test_accuracy/"


def draw(path: Path, paint: Callable[[Axes], bool], size: tuple[float, float] = (7.5, 4.0)) -> bool:
    """Draw onto a fresh figure and save it; False (nothing written) when there is nothing to show.

    The legend goes outside the axes, to the right, so it never covers data.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=DPI)
    axes = figure.add_subplot()
    if not paint(axes):
        path.unlink(missing_ok=True)
        return False
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    figure.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return True


def plot_learning_curves(axes: Axes, task: ReportTask, tracker: Tracker, colors: dict[str, str]) -> bool:
    """Mean over seeds with a band from the lowest to the highest seed; epochs from 1 as the terminal prints."""
    drawn, positive = False, True
    for label in task.cells:
        for key, style in (("val_loss", "-"), ("train_loss", "--")):
            steps = _seed_spread([tracker.metric_history(r.run_id, key) for r in task.finished(label)])
            if steps:
                xs = [step + 1 for step, _, _, _ in steps]
                means, lows, highs = ([s[i] for s in steps] for i in (1, 2, 3))
                axes.plot(xs, means, style, color=colors[label], label=_mpl(label) if key == "val_loss" else None,
                          marker="o" if len(xs) < 4 else None, markersize=4)
                axes.fill_between(xs, lows, highs, color=colors[label], alpha=0.15, linewidth=0)
                positive = positive and min(lows) > 0
                drawn = True
    if drawn and positive and task.log_scale:
        axes.set_yscale("log")
    axes.set(title=_mpl(f"{task.name}: val_loss (solid), train_loss (dashed); band: seed min–max"),
             xlabel="epoch", ylabel="loss" + (" (log scale)" if axes.get_yscale() == "log" else ""))
    axes.xaxis.get_major_locator().set_params(integer=True)
    return drawn


def plot_groups(axes: Axes, task: ReportTask, tracker: Tracker, colors: dict[str, str]) -> bool:
    """Accuracy per group: markers, a small offset per cell so overlapping lines stay visible, and chance."""
    if not task.groups:
        return False
    markers = "osD^vP*X"
    width = 0.25 / max(1, len(task.cells))
    for index, label in enumerate(task.cells):
        offset = (index - (len(task.cells) - 1) / 2) * width
        positions = [p + offset for p in range(len(task.groups))]
        summaries = [_bounded(task.values(label, GROUPED + g)) for g in task.groups]
        means = [s.mean if s else math.nan for s in summaries]
        errors = [[m - s.interval[0] if s and s.interval else 0 for s, m in zip(summaries, means)],
                  [s.interval[1] - m if s and s.interval else 0 for s, m in zip(summaries, means)]]
        axes.errorbar(positions, means, yerr=errors, fmt=markers[index % len(markers)] + "-", color=colors[label],
                      label=_mpl(label), capsize=2, markersize=5, linewidth=1.2)
    axes.axhline(task.chance, linestyle="--", color="grey", label=f"chance ({task.chance:g})")
    axes.set_xticks(list(range(len(task.groups))), [_mpl(g) for g in task.groups], rotation=30)
    axes.set(title=_mpl(f"{task.name}: test accuracy by {task.group_name} (mean, 95% bootstrap interval)"),
             xlabel=_mpl(task.group_name), ylabel="accuracy", ylim=(-0.02, 1.02))
    return True


def plot_quality_vs_time(axes: Axes, task: ReportTask, tracker: Tracker, colors: dict[str, str]) -> bool:
    drawn = False
    for label in task.cells:
        points = [(r.metrics["wall_time_s"], r.metrics[task.primary]) for r in task.finished(label)
                  if task.primary and "wall_time_s" in r.metrics and task.primary in r.metrics]
        if points:
            xs, ys = zip(*points)
            axes.scatter(xs, ys, color=colors[label], label=_mpl(label))
            drawn = True
    if drawn and task.log_scale:
        axes.set_yscale("log")
    axes.set(title=_mpl(f"{task.name}: {task.primary} vs wall time ({task.direction()})"),
             xlabel="wall time (s)", ylabel=_mpl(task.primary))
    return drawn


def _bounded(values: list[float]) -> CellSummary | None:
    return summarize(values, "bounded" if all(0 <= v <= 1 for v in values) else "linear") if values else None


def _seed_spread(histories: Sequence[list[tuple[int, float]]]) -> list[tuple[int, float, float, float]]:
    """``(step, mean, min, max)`` over the runs that logged each step."""
    by_step: dict[int, list[float]] = {}
    for history in histories:
        for step, value in dict(history).items():  # the last value logged at a step wins
            by_step.setdefault(step, []).append(value)
    return [(step, sum(v) / len(v), min(v), max(v)) for step, v in sorted(by_step.items())]


def colors(labels: Sequence[str]) -> dict[str, str]:
    """Each label's colour from its name alone (:mod:`harness.reports.palette`), the same in every report."""
    return palette.colors(labels)


def _mpl(text: str) -> str:
    """Text matplotlib shows verbatim: no mathtext, and a legend label may not start with "_"."""
    text = text.replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def remove_stale_plots(plot_dir: Path, keep: Sequence[Path]) -> None:
    for path in plot_dir.glob("*.png"):
        if path not in keep:
            path.unlink()
