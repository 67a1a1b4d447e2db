"""The report's figures: one PNG each, drawn without pyplot (no global state)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from harness.statistics import mean_ci

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from harness.reporting import _Task
    from harness.tracking import Tracker

#: Chance accuracy drawn on the accuracy-by-distance chart (binary agreement tasks).
CHANCE = 0.5
#: Small figures keep the HTML (which embeds them) light.
DPI = 80
GROUPED = "test_accuracy/"



def draw(path: Path, paint: Callable[[Axes], bool]) -> bool:
    """Draw onto a fresh figure and save it; False (nothing written) when there is nothing to show."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.6), dpi=DPI)
    axes = figure.add_subplot()
    if not paint(axes):
        path.unlink(missing_ok=True)
        return False
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI, metadata={"Software": None})
    return True


def plot_learning_curves(axes: Axes, task: _Task, tracker: Tracker, colors: dict[str, str]) -> bool:
    drawn = False
    for label in task.cells:
        for key, style in (("val_loss", "-"), ("train_loss", "--")):
            steps = _mean_curve([tracker.metric_history(r.run_id, key) for r in task.finished(label)])
            if steps:
                xs, ys = zip(*steps)
                axes.plot(xs, ys, style, color=colors[label], label=_mpl(label) if key == "val_loss" else None)
                drawn = True
    axes.set(title=_mpl(f"{task.name}: val_loss (solid), train_loss (dashed), mean over seeds"),
             xlabel="epoch", ylabel="loss")
    axes.xaxis.get_major_locator().set_params(integer=True)
    return drawn


def plot_groups(axes: Axes, task: _Task, tracker: Tracker, colors: dict[str, str]) -> bool:
    if not task.groups:
        return False
    positions = range(len(task.groups))
    for label in task.cells:
        stats = [mean_ci(v) if v else None for v in (task.values(label, GROUPED + g) for g in task.groups)]
        means = [s.mean if s else math.nan for s in stats]
        axes.plot(positions, means, "o-", color=colors[label], label=_mpl(label))
        low = [s.low if s and s.n > 1 else m for s, m in zip(stats, means)]
        high = [s.high if s and s.n > 1 else m for s, m in zip(stats, means)]
        axes.fill_between(positions, low, high, color=colors[label], alpha=0.2, linewidth=0)
    axes.axhline(CHANCE, linestyle="--", color="grey", label="chance")
    axes.set_xticks(list(positions), [_mpl(g) for g in task.groups], rotation=30)
    axes.set(title=_mpl(f"{task.name}: test accuracy by distance (mean, 95% CI)"), xlabel="distance bucket",
             ylabel="accuracy", ylim=(-0.02, 1.02))
    return True


def plot_quality_vs_time(axes: Axes, task: _Task, tracker: Tracker, colors: dict[str, str]) -> bool:
    drawn = False
    for label in task.cells:
        points = [(r.metrics["wall_time_s"], r.metrics[task.primary]) for r in task.finished(label)
                  if task.primary and "wall_time_s" in r.metrics and task.primary in r.metrics]
        if points:
            xs, ys = zip(*points)
            axes.scatter(xs, ys, color=colors[label], label=_mpl(label))
            drawn = True
    axes.set(title=_mpl(f"{task.name}: {task.primary} vs wall time ({task.direction()})"),
             xlabel="wall time (s)", ylabel=_mpl(task.primary))
    return drawn


def _mean_curve(histories: Sequence[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    by_step: dict[int, list[float]] = {}
    for history in histories:
        for step, value in dict(history).items():  # the last value logged at a step wins
            by_step.setdefault(step, []).append(value)
    return [(step, sum(v) / len(v)) for step, v in sorted(by_step.items())]


def colors(labels: Sequence[str]) -> dict[str, str]:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    palette = colormaps["tab10"].colors
    return {label: to_hex(palette[i % len(palette)]) for i, label in enumerate(labels)}


def _mpl(text: str) -> str:
    """Text matplotlib shows verbatim: no mathtext, and a legend label may not start with "_"."""
    text = text.replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def remove_stale_plots(plot_dir: Path, keep: Sequence[Path]) -> None:
    for path in plot_dir.glob("*.png"):
        if path not in keep:
            path.unlink()
