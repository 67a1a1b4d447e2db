"""Small, pure statistics for comparing cells over seeds: t intervals, Welch's test, Hedges' g.

Only numbers in, numbers out: no MLflow, no formatting. The report (``harness.reports.report``)
decides what to compare and how to print it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

__all__ = ["MeanCI", "WelchResult", "mean_ci", "welch", "hedges_g"]


@dataclass(frozen=True)
class MeanCI:
    """A sample mean with its Student-t confidence interval.

    With one value, ``half_width``, ``low`` and ``high`` are NaN: one seed gives no interval.
    """

    mean: float
    half_width: float
    n: int
    confidence: float

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


@dataclass(frozen=True)
class WelchResult:
    """Welch's unequal-variance comparison of two samples, ``a`` minus ``b``.

    ``p``, ``ci_low`` and ``ci_high`` are NaN when both samples have zero variance (the
    t statistic is then undefined); ``hedges_g`` is NaN when the pooled deviation is zero.
    """

    difference: float
    ci_low: float
    ci_high: float
    p: float
    hedges_g: float
    df: float
    n_a: int
    n_b: int


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> MeanCI:
    """Mean of ``values`` and the half-width of its Student-t interval, ``t(n-1) * s / sqrt(n)``.

    Raises:
        ValueError: ``values`` is empty, or ``confidence`` is not in (0, 1).
    """
    _check_confidence(confidence)
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return MeanCI(mean, math.nan, 1, confidence)
    sd = math.sqrt(_variance(values, mean))
    t = stats.t.ppf((1 + confidence) / 2, n - 1)
    return MeanCI(mean, float(t * sd / math.sqrt(n)), n, confidence)


def welch(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> WelchResult:
    """Welch's t-test of ``mean(a) - mean(b)``: the difference, its CI, the two-sided p and Hedges' g.

    The degrees of freedom are Welch-Satterthwaite's; the interval uses the same t
    distribution as the test, so it excludes 0 exactly when ``p < 1 - confidence``.

    Raises:
        ValueError: a side has fewer than 2 values (no variance, so no test), or
            ``confidence`` is not in (0, 1).
    """
    _check_confidence(confidence)
    n_a, n_b = len(a), len(b)
    if n_a < 2 or n_b < 2:
        raise ValueError(f"Welch's test needs at least 2 values per side, got n={n_a} and n={n_b}")
    mean_a, mean_b = math.fsum(a) / n_a, math.fsum(b) / n_b
    var_a, var_b = _variance(a, mean_a), _variance(b, mean_b)
    difference = mean_a - mean_b
    se_a, se_b = var_a / n_a, var_b / n_b  # squared standard errors
    se = math.sqrt(se_a + se_b)
    if se == 0:
        return WelchResult(difference, math.nan, math.nan, math.nan, hedges_g(a, b), math.nan, n_a, n_b)
    df = (se_a + se_b) ** 2 / (se_a**2 / (n_a - 1) + se_b**2 / (n_b - 1))
    t_stat = difference / se
    p = float(2 * stats.t.sf(abs(t_stat), df))
    half = float(stats.t.ppf((1 + confidence) / 2, df)) * se
    return WelchResult(difference, difference - half, difference + half, p, hedges_g(a, b), df, n_a, n_b)


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float:
    """Hedges' g of ``a`` over ``b``: Cohen's d with the pooled SD, times ``1 - 3 / (4 (n_a + n_b) - 9)``.

    The factor is Hedges' usual small-sample correction (the approximation of his exact
    gamma-function factor). NaN when the pooled SD is zero or a side has fewer than 2 values.
    """
    n_a, n_b = len(a), len(b)
    if n_a < 2 or n_b < 2:
        return math.nan
    mean_a, mean_b = math.fsum(a) / n_a, math.fsum(b) / n_b
    pooled = ((n_a - 1) * _variance(a, mean_a) + (n_b - 1) * _variance(b, mean_b)) / (n_a + n_b - 2)
    if pooled == 0:
        return math.nan
    correction = 1 - 3 / (4 * (n_a + n_b) - 9)
    return correction * (mean_a - mean_b) / math.sqrt(pooled)


def _variance(values: Sequence[float], mean: float) -> float:
    """Sample variance (n - 1 in the denominator)."""
    return math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
