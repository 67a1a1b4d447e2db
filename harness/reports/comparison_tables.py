"""A task's pairwise comparison table and the wall-time check that decides whether cost is worth a plot."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

from harness.reports.comparisons import ALPHA, Comparison
from harness.reports.document import Block, Heading, Para, Table

if TYPE_CHECKING:
    from harness.reports.leaderboard import Leaderboard
    from harness.reports.runs_view import ReportTask

__all__ = ["comparison_blocks", "wall_time_sentence"]


def comparison_blocks(task: str, primary: str, direction: str, board: Leaderboard) -> list[Block]:
    """Every pair of cells on ``task`` with raw and adjusted p-values and the verdict."""
    pairs = board.comparisons_of(task)
    if not pairs:
        return []
    name = {"holm": "Holm–Bonferroni", "fdr_bh": "Benjamini–Hochberg"}.get(board.correction, board.correction)
    log = pairs[0].scale == "log"
    note = (f"Primary metric {primary} ({direction}). Each pair is compared on the seeds both ran (paired t-test on "
            f"the per-seed {'log ratios' if log else 'differences'}; Wilcoxon's signed-rank p alongside). "
            f"{'A / B is the geometric mean ratio' if log else 'A − B is the mean paired difference'} with its "
            f"95% interval (paired t; for metrics in [0, 1] a percentile bootstrap over seeds, which stays in "
            f"[-1, 1]). p-values are adjusted with {name} within this task (p adj. task) and across every "
            f"comparison of the report (p adj. report); the verdict uses the report-wide one at α = {ALPHA}.")
    header = ("A", "B", "n", "test", "A / B" if log else "A − B", "95% interval", "p", "p Wilcoxon",
              "p adj. task", "p adj. report", "verdict")
    return [Heading(3, "Comparisons (paired by seed)"), Para(note), Table(header, tuple(_row(c) for c in pairs))]


def _row(c: Comparison) -> tuple[str, ...]:
    interval = "—" if c.interval is None else f"[{_fmt(c.interval[0])}, {_fmt(c.interval[1])}]"
    return (c.a, c.b, str(c.n), c.test, _fmt(c.difference), interval, _p(c.p), _p(c.p_wilcoxon),
            _p(c.p_adjusted_task), _p(c.p_adjusted), c.verdict())


def wall_time_sentence(task: ReportTask) -> str | None:
    """None when the cells' wall times differ beyond their seed noise (draw quality vs time), else why not.

    The check is a one-way ANOVA of log wall time across cells (scipy.stats.f_oneway), at α.
    """
    times = {label: [math.log(v) for v in task.values(label, "wall_time_s") if v > 0] for label in task.cells}
    times = {label: v for label, v in times.items() if v}
    if len(times) < 2:
        return "Quality vs time is not drawn: fewer than two cells recorded a wall time."
    if any(len(v) < 2 for v in times.values()):
        return None  # no noise estimate: show the points and let the reader judge
    if all(np.ptp(v) == 0 for v in times.values()):
        return None if len({v[0] for v in times.values()}) > 1 else "Every cell took the same wall time."
    p = float(stats.f_oneway(*times.values()).pvalue)
    if p < ALPHA:
        return None
    means = ", ".join(f"{label} {math.exp(np.mean(v)):.3g} s" for label, v in times.items())
    return (f"The cells cost the same here: their wall times ({means}; geometric means over seeds) do not differ "
            f"beyond seed-to-seed noise (one-way ANOVA on log wall time, p = {p:.3g}), so quality vs time is "
            f"not drawn.")


def _fmt(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _p(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.3g}"
