"""The verdict's numbers: per-task intervals, corrected comparisons, tie-aware ranks, Friedman/Nemenyi.

Input is plain per-seed values of each task's primary metric; output is a :class:`Leaderboard`
whose :meth:`~Leaderboard.as_dict` is the body of ``summary.json``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.reports.comparisons import ALPHA, Comparison, compare, correct
from harness.reports.intervals import CellSummary, metric_scale, summarize

__all__ = ["TaskScores", "Friedman", "Leaderboard", "build_leaderboard"]


@dataclass(frozen=True)
class TaskScores:
    """One task's primary metric: ``values[cell][seed]``."""

    name: str
    primary_metric: str
    higher_is_better: bool
    values: Mapping[str, Mapping[str, float]]

    @property
    def scale(self) -> str:
        return metric_scale(self.primary_metric, [v for seeds in self.values.values() for v in seeds.values()])


@dataclass(frozen=True)
class Friedman:
    """Friedman's test over tasks and the Nemenyi post-hoc test with its critical difference."""

    statistic: float
    p: float
    tasks: tuple[str, ...]
    cells: tuple[str, ...]
    mean_ranks: dict[str, float]
    critical_difference: float
    nemenyi_p: dict[str, dict[str, float]]

    def as_dict(self) -> dict[str, object]:
        return {"test": "Friedman", "statistic": self.statistic, "p": self.p, "tasks": list(self.tasks),
                "cells": list(self.cells), "post_hoc": "Nemenyi", "mean_ranks": self.mean_ranks,
                "critical_difference": self.critical_difference, "alpha": ALPHA, "nemenyi_p": self.nemenyi_p}


@dataclass
class Leaderboard:
    """Everything the verdict states; ``extra`` holds sections other modules add to summary.json."""

    cells: list[str]
    tasks: list[TaskScores]
    summaries: dict[str, dict[str, CellSummary]]
    ranks: dict[str, dict[str, float]]
    mean_rank: dict[str, float]
    comparisons: list[Comparison]
    correction: str
    friedman: Friedman | None
    friedman_reason: str
    extra: dict[str, object] = field(default_factory=dict)

    def task(self, name: str) -> TaskScores:
        return next(t for t in self.tasks if t.name == name)

    def comparisons_of(self, task: str) -> list[Comparison]:
        return [c for c in self.comparisons if c.task == task]

    def as_dict(self) -> dict[str, object]:
        tasks = {t.name: {"primary_metric": t.primary_metric, "higher_is_better": t.higher_is_better,
                          "scale": t.scale,
                          "cells": {c: {**s.as_dict(), "rank": self.ranks[t.name].get(c)}
                                    for c, s in self.summaries[t.name].items()}} for t in self.tasks}
        return {"cells": self.cells, "tasks": tasks, "mean_rank": self.mean_rank, "correction": self.correction,
                "alpha": ALPHA, "friedman": self.friedman.as_dict() if self.friedman else None,
                "friedman_not_computed": self.friedman_reason or None,
                "comparisons": [c.as_dict() for c in self.comparisons], **self.extra}


def build_leaderboard(tasks: Sequence[TaskScores], correction: str = "holm") -> Leaderboard:
    """All pairs of cells per task, corrected per task and across the report, then ranks and Friedman."""
    tasks = [t for t in tasks if any(t.values.values())]
    summaries = {t.name: {c: summarize(list(v.values()), t.scale) for c, v in sorted(t.values.items()) if v}
                 for t in tasks}
    comparisons: list[Comparison] = []
    for t in tasks:
        pairs = [compare(t.name, a, b, t.values[a], t.values[b], higher_is_better=t.higher_is_better,
                         log_scale=t.scale == "log", bounded=t.scale == "bounded") for a, b in itertools.combinations(sorted(summaries[t.name]), 2)]
        comparisons += correct(pairs, correction, field="p_adjusted_task")
    comparisons = correct(comparisons, correction)
    ranks = {t.name: _ranks(t, summaries[t.name], comparisons) for t in tasks}
    cells = sorted({c for r in ranks.values() for c in r})
    mean_rank = {c: float(np.mean([r[c] for r in ranks.values() if c in r])) for c in cells}
    raw = {c: float(np.mean([_raw_rank(t, summaries[t.name], c) for t in tasks if c in summaries[t.name]]))
           for c in cells}
    cells.sort(key=lambda c: (mean_rank[c], raw[c], c))
    friedman, reason = _friedman(tasks, summaries, cells)
    return Leaderboard(cells, tasks, summaries, ranks, {c: mean_rank[c] for c in cells}, comparisons, correction,
                       friedman, reason)


def _ordered(task: TaskScores, summaries: Mapping[str, CellSummary]) -> list[str]:
    sign = -1 if task.higher_is_better else 1
    return sorted(summaries, key=lambda c: (sign * summaries[c].mean, c))


def _raw_rank(task: TaskScores, summaries: Mapping[str, CellSummary], cell: str) -> int:
    return _ordered(task, summaries).index(cell) + 1


def _ranks(task: TaskScores, summaries: Mapping[str, CellSummary], comparisons: Sequence[Comparison]
           ) -> dict[str, float]:
    """Fractional ranks by mean; a cell ties with the group it follows unless significantly worse than its head.

    Tied cells share the mean of their positions (1, 2.5, 2.5, 4 ...), as Friedman's ranks do.
    """
    separated = {frozenset((c.a, c.b)) for c in comparisons if c.task == task.name and c.significant}
    groups: list[list[str]] = []
    for cell in _ordered(task, summaries):
        if groups and frozenset((groups[-1][0], cell)) not in separated:
            groups[-1].append(cell)
        else:
            groups.append([cell])
    ranks, position = {}, 1
    for group in groups:
        shared = position + (len(group) - 1) / 2
        ranks.update({cell: shared for cell in group})
        position += len(group)
    return ranks


def _friedman(tasks: Sequence[TaskScores], summaries: Mapping[str, Mapping[str, CellSummary]],
              cells: Sequence[str]) -> tuple[Friedman | None, str]:
    """Friedman over the tasks where every cell has a value; Nemenyi's post-hoc and CD (Demšar 2006)."""
    import scikit_posthocs as posthocs
    from scipy import stats

    complete = [c for c in cells if all(c in summaries[t.name] for t in tasks)]
    if len(tasks) < 3 or len(complete) < 3:
        return None, (f"needs at least 3 tasks and 3 cells with results on every task; "
                      f"this report has {len(tasks)} task(s) and {len(complete)} such cell(s)")
    # Rows are tasks (blocks), columns cells; higher is better after the sign flip.
    table = np.array([[summaries[t.name][c].mean * (1 if t.higher_is_better else -1) for c in complete]
                      for t in tasks])
    result = stats.friedmanchisquare(*table.T)
    ranks = np.mean([stats.rankdata(-row) for row in table], axis=0)
    nemenyi = posthocs.posthoc_nemenyi_friedman(table)
    k, n = len(complete), len(tasks)
    q_alpha = stats.studentized_range.ppf(1 - ALPHA, k, np.inf) / math.sqrt(2)
    cd = float(q_alpha * math.sqrt(k * (k + 1) / (6 * n)))
    matrix = {a: {b: float(nemenyi.iloc[i, j]) for j, b in enumerate(complete)} for i, a in enumerate(complete)}
    statistic, p = float(result.statistic), float(result.pvalue)
    if not math.isfinite(statistic):
        return None, "every cell ties on every task: Friedman's statistic is undefined"
    return Friedman(statistic, p, tuple(t.name for t in tasks), tuple(complete),
                    {c: float(r) for c, r in zip(complete, ranks)}, cd, matrix), ""
