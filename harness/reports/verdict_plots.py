"""The verdict's figures: the critical-difference diagram (Demšar 2006) and the forest plot of paired differences."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from harness.reports.comparisons import Comparison
from harness.reports.palette import cell_color
from harness.reports.plots import DPI, _mpl

if TYPE_CHECKING:
    from harness.reports.leaderboard import Friedman, Leaderboard

__all__ = ["draw_critical_difference", "draw_forest", "oriented"]


def draw_critical_difference(path: Path, friedman: Friedman) -> None:
    """Mean ranks on a line, cells Nemenyi cannot separate joined by a bar, and the CD drawn to scale."""
    import pandas as pd
    import scikit_posthocs as posthocs
    from matplotlib.figure import Figure

    cells = list(friedman.cells)
    figure = Figure(figsize=(7.5, 1.2 + 0.35 * len(cells)), dpi=DPI)
    axes = figure.add_subplot()
    ranks = pd.Series(friedman.mean_ranks)
    matrix = pd.DataFrame(friedman.nemenyi_p).loc[cells, cells]
    posthocs.critical_difference_diagram(ranks, matrix, ax=axes, color_palette={c: cell_color(c) for c in cells},
                                         label_fmt_left="{label} ({rank:.2f})  ",
                                         label_fmt_right="  ({rank:.2f}) {label}")
    from matplotlib.transforms import offset_copy

    start = min(friedman.mean_ranks.values())  # from the best cell: cells beyond the bar are separated from it
    # In points above the rank axis (skp draws it along the top), clear of its tick labels at any figure height.
    bar = offset_copy(axes.get_xaxis_transform(), fig=figure, y=30, units="points")
    label = offset_copy(axes.get_xaxis_transform(), fig=figure, y=33, units="points")
    axes.plot([start, start + friedman.critical_difference], [1.0, 1.0], color="black", linewidth=2,
              transform=bar, clip_on=False)
    axes.text(start + friedman.critical_difference / 2, 1.0, f"CD = {friedman.critical_difference:.2f}",
              ha="center", va="bottom", fontsize="small", transform=label)
    axes.set_title(f"Mean rank over {len(friedman.tasks)} tasks (1 = best). Friedman p = {friedman.p:.3g}; "
                   f"bars join cells the Nemenyi test cannot separate (α = 0.05)", fontsize="small", pad=52)
    figure.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})


def oriented(comparison: Comparison, cell: str) -> tuple[float | None, tuple[float, float] | None]:
    """The difference and interval as ``cell`` minus the other (a ratio ``cell`` / other on the log scale)."""
    difference, interval = comparison.difference, comparison.interval
    if comparison.a == cell or difference is None:
        return difference, interval
    if comparison.scale == "log":
        flipped = None if interval is None else (1 / interval[1], 1 / interval[0])
        return 1 / difference, flipped
    return -difference, None if interval is None else (-interval[1], -interval[0])


def draw_forest(path: Path, board: Leaderboard, reference: str) -> bool:
    """One panel per task: each cell's paired difference to ``reference`` with its 95% interval.

    False (nothing written) when the reference cell is in no task.
    """
    from matplotlib.figure import Figure

    tasks = [t for t in board.tasks if reference in board.summaries[t.name] and len(board.summaries[t.name]) > 1]
    if not tasks:
        path.unlink(missing_ok=True)
        return False
    cells = [c for c in board.cells if c != reference]
    figure = Figure(figsize=(7.5, 0.6 + sum(0.3 * len(cells) + 0.7 for _ in tasks)), dpi=DPI)
    panels = figure.subplots(len(tasks), 1, squeeze=False,
                             gridspec_kw={"height_ratios": [len(cells) + 1 for _ in tasks]})[:, 0]
    for axes, task in zip(panels, tasks):
        _forest_panel(axes, board, task.name, cells, reference)
    figure.suptitle(_mpl(f"Paired difference to {reference} per task (mean over common seeds; 95% interval: paired "
                         f"t, or percentile bootstrap for metrics in [0, 1]); right of the line = larger than "
                         f"{reference}"), fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return True


def _forest_panel(axes, board: Leaderboard, task: str, cells: list[str], reference: str) -> None:  # type: ignore[no-untyped-def]
    scores = board.task(task)
    log = scores.scale == "log"
    for row, cell in enumerate(cells):
        pair = next((c for c in board.comparisons_of(task) if {c.a, c.b} == {cell, reference}), None)
        difference, interval = oriented(pair, cell) if pair else (None, None)
        if difference is None or not math.isfinite(difference):
            axes.text(1.0 if log else 0.0, row, "  no common seeds", va="center", fontsize="x-small", color="grey")
            continue
        low, high = interval if interval else (difference, difference)
        axes.plot([low, high], [row, row], color=cell_color(cell), linewidth=2)
        axes.plot([difference], [row], "o", color=cell_color(cell))
    axes.axvline(1.0 if log else 0.0, color="grey", linestyle="--", linewidth=1)
    if log:
        from matplotlib.ticker import FuncFormatter

        axes.set_xscale("log")
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        low, high = axes.get_xlim()
        narrow = high / low < 20  # less than about a decade shown: label the minor ticks too
        axes.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:.2g}" if narrow else ""))
        axes.tick_params(axis="x", which="minor", labelsize="x-small")
    arrow = "↑ better" if scores.higher_is_better else "↓ better"
    unit = f"{scores.primary_metric} ratio to {reference} (log)" if log else f"{scores.primary_metric} − {reference}"
    axes.set_yticks(range(len(cells)), [_mpl(c) for c in cells])
    axes.set_ylim(-0.7, len(cells) - 0.3)
    axes.invert_yaxis()
    axes.set_title(_mpl(f"{task}: {unit} ({arrow})"), fontsize="small", loc="left")
    axes.grid(alpha=0.3, axis="x")
