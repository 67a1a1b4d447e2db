"""A cell's centre and interval on one metric, on the metric's own scale.

Bounded metrics (accuracy, F1, rates in [0, 1]) get a percentile bootstrap over seeds, which
cannot leave the range of the data; positive error metrics (MSE, perplexity, losses) a Student-t
interval of the log values, exponentiated (a geometric mean that stays positive); others a
Student-t interval of the mean.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["CellSummary", "metric_scale", "summarize", "METHODS"]

_BOUNDED = re.compile(r"(accuracy|(^|_)f1$|precision|recall|exact_match|_rate$|^rate$)")
_POSITIVE = re.compile(r"(mse|mae|perplexity|loss|nll|cross_entropy|bits_per_character|bpc|error)")
#: How each scale's interval is built, in the words the report prints.
METHODS = {
    "bounded": "95% percentile bootstrap over seeds (10,000 resamples; stays inside [0, 1])",
    "log": "geometric mean with a 95% Student-t interval on the log values (stays positive)",
    "linear": "mean with a 95% Student-t interval",
}
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class CellSummary:
    """``mean`` (geometric on the log scale), its ``interval`` (None below 2 seeds), n and the scale."""

    mean: float
    interval: tuple[float, float] | None
    n: int
    scale: str

    def as_dict(self) -> dict[str, object]:
        return {"mean": self.mean, "interval": None if self.interval is None else list(self.interval),
                "n": self.n, "scale": self.scale}


def metric_scale(name: str, values: Sequence[float]) -> str:
    """``bounded``, ``log`` or ``linear`` from the metric's name, checked against its values."""
    metric = name.removeprefix("test_").lower()
    if _BOUNDED.search(metric) and all(0.0 <= v <= 1.0 for v in values):
        return "bounded"
    if _POSITIVE.search(metric) and all(v > 0 for v in values):
        return "log"
    return "linear"


def summarize(values: Sequence[float], scale: str, confidence: float = 0.95, seed: int = 0) -> CellSummary:
    """The centre and interval of ``values`` (one per seed) on ``scale``.

    Raises:
        ValueError: no values.
    """
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("summarize needs at least one value")
    if scale == "log":
        centre, interval = _t_interval(np.log(data), confidence)
        return CellSummary(math.exp(centre), None if interval is None else (math.exp(interval[0]),
                                                                            math.exp(interval[1])), data.size, scale)
    if scale == "bounded":
        return CellSummary(float(np.mean(data)), _bootstrap(data, confidence, seed), data.size, scale)
    centre, interval = _t_interval(data, confidence)
    return CellSummary(centre, interval, data.size, scale)


def _t_interval(data: np.ndarray, confidence: float) -> tuple[float, tuple[float, float] | None]:
    centre = float(np.mean(data))
    if data.size < 2:
        return centre, None
    sd = float(np.std(data, ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, data.size - 1)) * sd / math.sqrt(data.size)
    return centre, (centre - half, centre + half)


def _bootstrap(data: np.ndarray, confidence: float, seed: int) -> tuple[float, float] | None:
    if data.size < 2:
        return None
    if np.all(data == data[0]):  # every resample has the same mean
        return float(data[0]), float(data[0])
    result = stats.bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
                             method="percentile", random_state=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return float(low), float(high)
