"""Pairwise comparisons of cells on one task, paired by seed, with family-wise correction and power.

Numbers in, numbers out: scipy.stats for the tests, statsmodels for the corrections and the
power analysis. The report decides which pairs form a family and how to print them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

__all__ = ["ALPHA", "MIN_SEEDS", "POWER", "Comparison", "compare", "correct", "seeds_needed"]

#: Significance level of every verdict; the p-values are printed regardless.
ALPHA = 0.05
#: Fewer paired seeds than this: the p-value is shown but no verdict says "significant".
MIN_SEEDS = 5
#: Target power of the "run at least N seeds" advice.
POWER = 0.8


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b`` on one task's primary metric (``difference`` is a − b on the test's scale).

    ``scale`` is ``"log"`` for positive metrics compared as ratios (``difference`` and
    ``interval`` are then a / b), else ``"linear"``. ``p_adjusted`` is None for a pair that
    was not tested (too few seeds), which never enters a correction family.
    """

    task: str
    a: str
    b: str
    n: int
    test: str
    p: float | None
    difference: float | None
    interval: tuple[float, float] | None
    scale: str
    higher_is_better: bool
    p_wilcoxon: float | None = None
    p_adjusted: float | None = None
    p_adjusted_task: float | None = None
    correction: str = ""
    seeds_needed: int | None = None

    @property
    def tested(self) -> bool:
        """Whether this pair is a real test (enough seeds, a defined p)."""
        return self.n >= MIN_SEEDS and self.p is not None and not math.isnan(self.p)

    @property
    def significant(self) -> bool:
        return self.tested and self.p_adjusted is not None and self.p_adjusted < ALPHA

    @property
    def better(self) -> str | None:
        """The better cell when the difference is significant, else None."""
        if not self.significant or self.difference is None:
            return None
        neutral = 1.0 if self.scale == "log" else 0.0
        return self.a if (self.difference > neutral) == self.higher_is_better else self.b

    def verdict(self) -> str:
        if self.n < 2:
            return f"n = {self.n}: too few seeds to test; run at least {MIN_SEEDS}"
        if not self.tested:
            advice = f"run at least {self.seeds_needed}" if self.seeds_needed else "no difference observed"
            if self.n >= MIN_SEEDS:
                return "no variance in the differences: test undefined"
            return f"n = {self.n}: too few seeds to test; {advice}"
        if self.better is not None:
            return f"{self.better} better (adjusted p < {ALPHA})"
        tail = f"; about {self.seeds_needed} seeds would settle it" if self.seeds_needed else ""
        return f"no significant difference{tail}"

    def as_dict(self) -> dict[str, object]:
        return {"task": self.task, "a": self.a, "b": self.b, "n": self.n, "test": self.test,
                "p": _clean(self.p), "p_wilcoxon": _clean(self.p_wilcoxon), "p_adjusted": _clean(self.p_adjusted),
                "p_adjusted_task": _clean(self.p_adjusted_task), "correction": self.correction,
                "difference": _clean(self.difference), "scale": self.scale,
                "interval": None if self.interval is None else [_clean(v) for v in self.interval],
                "seeds_needed": self.seeds_needed, "verdict": self.verdict()}


def compare(task: str, a: str, b: str, values_a: Mapping[str, float], values_b: Mapping[str, float], *,
            higher_is_better: bool, log_scale: bool, bounded: bool = False, confidence: float = 0.95) -> Comparison:
    """Compare two cells' per-seed values (``{seed: value}``), paired on their common seeds.

    Two or more common seeds: a paired t-test on the per-seed differences (on log values for a
    log-scale metric), with Wilcoxon's signed-rank p alongside. Fewer common seeds but two or more
    values a side: Welch's test, named as such because pairing was impossible. For a ``bounded``
    metric (in [0, 1]) the interval of the paired difference is a percentile bootstrap over seeds,
    which stays inside [-1, 1]; the test is still the paired t-test.
    """
    scale = "log" if log_scale else "linear"
    transform = np.log if log_scale else np.asarray
    common = sorted(set(values_a) & set(values_b))
    base = Comparison(task, a, b, len(common), "", None, None, None, scale, higher_is_better)
    if len(common) >= 2:
        da = transform(np.array([values_a[s] for s in common], dtype=float))
        db = transform(np.array([values_b[s] for s in common], dtype=float))
        result = _paired(base, da - db, confidence)
        if bounded and result.interval is not None:
            result = replace(result, interval=_bootstrap_interval(da - db, confidence))
        return result
    if len(values_a) >= 2 and len(values_b) >= 2:
        xa = transform(np.array(list(values_a.values()), dtype=float))
        xb = transform(np.array(list(values_b.values()), dtype=float))
        return _welch(base, xa, xb, confidence)
    if common:
        d = float(transform(np.array([values_a[common[0]]]))[0] - transform(np.array([values_b[common[0]]]))[0])
        return replace(base, test="none (one seed)", difference=_back(d, scale))
    return replace(base, test="none (no common seed)")


def _paired(base: Comparison, d: np.ndarray, confidence: float) -> Comparison:
    mean = float(np.mean(d))
    sd = float(np.std(d, ddof=1))
    if sd == 0:
        p = math.nan if mean == 0 else 0.0
        interval = (_back(mean, base.scale),) * 2
        return replace(base, test="paired t", p=p, difference=_back(mean, base.scale), interval=interval,
                       seeds_needed=None if mean == 0 else MIN_SEEDS)
    result = stats.ttest_rel(d, np.zeros_like(d))
    low, high = result.confidence_interval(confidence)
    wilcoxon = stats.wilcoxon(d).pvalue if np.any(d != 0) else math.nan
    return replace(base, test="paired t", p=float(result.pvalue), p_wilcoxon=float(wilcoxon),
                   difference=_back(mean, base.scale), interval=(_back(low, base.scale), _back(high, base.scale)),
                   seeds_needed=seeds_needed(mean / sd))


def _welch(base: Comparison, xa: np.ndarray, xb: np.ndarray, confidence: float) -> Comparison:
    result = stats.ttest_ind(xa, xb, equal_var=False)
    mean = float(np.mean(xa) - np.mean(xb))
    interval = result.confidence_interval(confidence)
    pooled = math.sqrt((np.var(xa, ddof=1) + np.var(xb, ddof=1)) / 2)
    needed = seeds_needed(mean / pooled, paired=False) if pooled > 0 else None
    return replace(base, n=min(len(xa), len(xb)), test="Welch (seed sets differ, pairing impossible)",
                   p=float(result.pvalue), difference=_back(mean, base.scale),
                   interval=(_back(interval.low, base.scale), _back(interval.high, base.scale)), seeds_needed=needed)


def seeds_needed(effect: float, *, paired: bool = True, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Seeds for ``power`` at ``alpha`` (two-sided) for a standardised ``effect``; None when it is 0.

    Paired: statsmodels' TTestPower on the differences (effect = mean / sd of the differences);
    unpaired: TTestIndPower, seeds per cell. Never below :data:`MIN_SEEDS`.
    """
    from statsmodels.stats.power import TTestIndPower, TTestPower

    if not math.isfinite(effect) or effect == 0:
        return None
    analysis = TTestPower() if paired else TTestIndPower()
    # Start from the normal approximation and step up until statsmodels' exact t power reaches the target
    # (the t test needs a few more seeds than the z test; its root finder fails for tiny effects).
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    nobs = max(MIN_SEEDS, math.ceil((1 if paired else 2) * (z / abs(effect)) ** 2))  # per cell when unpaired
    for _ in range(1000):
        if analysis.power(abs(effect), nobs, alpha, alternative="two-sided") >= power:
            return nobs
        nobs += 1
    return nobs


def correct(comparisons: Sequence[Comparison], method: str = "holm", *, field: str = "p_adjusted") -> list[Comparison]:
    """Adjust the p-values of the tested comparisons as one family (statsmodels' multipletests).

    Untested pairs keep ``None``; ``field`` is ``p_adjusted`` (the report-wide family) or
    ``p_adjusted_task`` (one task's family).
    """
    from statsmodels.stats.multitest import multipletests

    indices = [i for i, c in enumerate(comparisons) if c.tested]
    adjusted: dict[int, float] = {}
    if indices:
        _, corrected, _, _ = multipletests([comparisons[i].p for i in indices], alpha=ALPHA, method=method)
        adjusted = dict(zip(indices, (float(v) for v in corrected)))
    return [replace(c, correction=method, **{field: adjusted.get(i)}) for i, c in enumerate(comparisons)]


def _bootstrap_interval(d: np.ndarray, confidence: float) -> tuple[float, float]:
    if np.all(d == d[0]):
        return float(d[0]), float(d[0])
    result = stats.bootstrap((d,), np.mean, confidence_level=confidence, n_resamples=10_000, method="percentile",
                             random_state=np.random.default_rng(0))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _back(value: float, scale: str) -> float:
    return float(math.exp(value)) if scale == "log" else float(value)


def _clean(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value
