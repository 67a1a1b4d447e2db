"""Memory horizon: per swept task and cell, the hardest swept setting at which the cell still succeeds.

Success means the cell's mean primary metric over seeds is at least ``fraction`` of the way from the
chance level to the best cell's mean at the easiest setting (the first value listed). The horizon is
the last value before the first setting where the cell falls short; its interval is a percentile
bootstrap over seeds (scipy.stats.bootstrap), resampling seeds jointly because seed k gives every cell
and setting the same data and order.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from harness.runs.sweeps import sweep_point
from harness.runs.tracking import RunRecord

#: Default criterion: 95% of the way from chance to the best cell's score at the easiest setting.
DEFAULT_FRACTION = 0.95
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass
class SweptTask:
    """One swept task's primary metric for every cell, seed and swept value (NaN where a run is missing)."""

    task: str
    option: str
    values: list[Any]  # in listed order: values[0] is the easiest
    metric: str  # "test_<primary metric>"
    higher_is_better: bool
    chance: list[float | None]  # per value
    seeds: list[str]
    scores: dict[str, np.ndarray]  # cell label → (seeds, values)

    def thresholds(self, fraction: float, seeds: np.ndarray | None = None) -> np.ndarray:
        """The criterion's level at every value; without a chance level the worst cell mean anywhere stands
        in for it. Where the chance level changes with the value (copy's per-step cross-entropy falls as
        blanks are added), the gain over chance is scaled with it: the same share of chance removed."""
        means = self._means(seeds)
        easiest = [m[0] for m in means.values() if math.isfinite(m[0])]
        best = (max if self.higher_is_better else min)(easiest)
        chance = self.chance[0]
        if chance is None:
            everything = [v for m in means.values() for v in m if math.isfinite(v)]
            chance = (min if self.higher_is_better else max)(everything)
        gain = fraction * (best - chance)
        if chance and all(c is not None for c in self.chance) and len(set(self.chance)) > 1:
            return np.array([c + gain * c / chance for c in self.chance])
        return np.full(len(self.values), chance + gain)

    def horizon_position(self, cell: str, fraction: float, seeds: np.ndarray | None = None) -> int:
        """Index of the last value before the first failure; -1 when the cell fails at the easiest."""
        levels = self.thresholds(fraction, seeds)
        position = -1
        for mean, level in zip(self._means(seeds)[cell], levels):
            reached = mean >= level if self.higher_is_better else mean <= level
            if not (math.isfinite(mean) and reached):
                break
            position += 1
        return position

    def _means(self, seeds: np.ndarray | None) -> dict[str, np.ndarray]:
        rows = slice(None) if seeds is None else seeds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a value no seed reached: NaN, i.e. not solved
            return {cell: np.nanmean(table[rows], axis=0) for cell, table in self.scores.items()}


def swept_tasks(records: Sequence[RunRecord]) -> list[SweptTask]:
    """The swept tasks among finished runs (the latest attempt of each run key), in name order."""
    by_task: dict[str, list[tuple[Any, RunRecord]]] = {}
    for record in records:
        point = sweep_point(record)
        if point is not None and record.status == "FINISHED":
            by_task.setdefault(point.task, []).append((point, record))
    return [_swept_task(name, runs) for name, runs in sorted(by_task.items())]


def _swept_task(name: str, runs: list[tuple[Any, RunRecord]]) -> SweptTask:
    positions = sorted({p.position: p.value for p, _ in runs}.items())
    values = [value for _, value in positions]
    index = {position: i for i, (position, _) in enumerate(positions)}
    seeds = sorted({r.tag("seed") for _, r in runs}, key=lambda s: (len(s), s))
    cells = sorted({r.tag("cell") for _, r in runs})
    primary = next(r.tag("primary_metric") for _, r in runs)
    higher = next(r.tag("higher_is_better") for _, r in runs).lower() in ("true", "1")
    scores = {cell: np.full((len(seeds), len(values)), np.nan) for cell in cells}
    chance: list[float | None] = [None] * len(values)
    for point, record in runs:
        value = record.metrics.get(f"test_{primary}", math.nan)
        scores[record.tag("cell")][seeds.index(record.tag("seed")), index[point.position]] = value
        if record.tag("chance_level"):
            chance[index[point.position]] = float(record.tag("chance_level"))
    return SweptTask(name, runs[0][0].option, values, f"test_{primary}",
                     higher, chance, seeds, scores)


def memory_horizons(task: SweptTask, fraction: float = DEFAULT_FRACTION) -> dict[str, dict[str, Any]]:
    """cell → {value, interval, criterion}: the horizon (None: fails at the easiest setting), its bootstrap
    interval over seeds as [low, high] values, and the criterion in words and numbers."""
    levels = task.thresholds(fraction)
    criterion = {"fraction": fraction, "threshold": float(levels[0]), "thresholds": levels.tolist(),
                 "metric": task.metric,
                 "chance": task.chance[0], "higher_is_better": task.higher_is_better,
                 "description": f"{fraction:.0%} of the way from chance to the best cell at {task.option}="
                                f"{task.values[0]}"}
    result = {}
    for cell in task.scores:
        position = task.horizon_position(cell, fraction)
        low, high = _bootstrap_positions(task, cell, fraction)
        result[cell] = {"value": _value_at(task, position), "interval": [_value_at(task, low), _value_at(task, high)],
                        "position": position, "criterion": criterion}
    return result


def _bootstrap_positions(task: SweptTask, cell: str, fraction: float) -> tuple[int, int]:
    seeds = np.arange(len(task.seeds))
    if len(seeds) < 2:
        position = task.horizon_position(cell, fraction)
        return position, position

    def statistic(sample: np.ndarray) -> float:
        return float(task.horizon_position(cell, fraction, sample.astype(int)))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a degenerate bootstrap distribution (every resample alike) is fine here
        result = stats.bootstrap((seeds,), statistic, vectorized=False, n_resamples=BOOTSTRAP_RESAMPLES,
                                 confidence_level=CONFIDENCE, method="percentile", random_state=0)
    low, high = result.confidence_interval
    if not (math.isfinite(low) and math.isfinite(high)):
        position = task.horizon_position(cell, fraction)
        return position, position
    return math.floor(low), math.ceil(high)


def _value_at(task: SweptTask, position: int) -> Any:
    return task.values[position] if position >= 0 else None
