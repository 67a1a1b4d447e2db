"""harness.reports.statistics against values worked out by hand (and, once, against scipy's own test)."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from harness.reports.statistics import hedges_g, mean_ci, welch

#: Two-sided 95% critical value of Student's t with 2 degrees of freedom (any t table: 4.303).
T_975_DF2 = 4.302652729749464


def test_mean_ci_of_one_two_three() -> None:
    # mean 2, s = 1, se = 1 / sqrt(3), half-width = t(0.975, 2) * se
    result = mean_ci([1.0, 2.0, 3.0])
    assert result.mean == 2.0
    assert result.n == 3
    assert result.half_width == pytest.approx(T_975_DF2 / math.sqrt(3), rel=1e-12)
    assert (result.low, result.high) == pytest.approx((2 - 2.4841377, 2 + 2.4841377), rel=1e-7)


def test_mean_ci_of_two_values() -> None:
    # mean 5, s = sqrt(2), se = 1, t(0.975, 1) = tan(pi * 0.475) = 12.7062
    result = mean_ci([4.0, 6.0])
    assert result.mean == 5.0
    assert result.half_width == pytest.approx(math.tan(math.pi * 0.475), rel=1e-9)


def test_mean_ci_other_confidence() -> None:
    # t(0.95, 1) = tan(pi * 0.45) = 6.3138; se = 1 as above
    assert mean_ci([4.0, 6.0], confidence=0.9).half_width == pytest.approx(math.tan(math.pi * 0.45), rel=1e-9)


def test_mean_ci_of_one_value_has_no_interval() -> None:
    result = mean_ci([0.7])
    assert result.mean == 0.7 and result.n == 1
    assert math.isnan(result.half_width) and math.isnan(result.low)


def test_mean_ci_of_constant_values_is_a_point() -> None:
    result = mean_ci([0.5, 0.5, 0.5])
    assert (result.mean, result.half_width) == (0.5, 0.0)


@pytest.mark.parametrize("values, confidence", [([], 0.95), ([1.0, 2.0], 0.0), ([1.0, 2.0], 1.0)])
def test_mean_ci_rejects_bad_input(values: list[float], confidence: float) -> None:
    with pytest.raises(ValueError):
        mean_ci(values, confidence)


def test_welch_by_hand() -> None:
    # a = 1,2,3: mean 2, var 1; b = 4,5,6,7: mean 5.5, var 5/3
    # se^2 = 1/3 + 5/12 = 3/4; t = -3.5 / sqrt(3/4) = -4.0415
    # df = (3/4)^2 / ((1/3)^2 / 2 + (5/12)^2 / 3) = (9/16) / (49/432) = 243/49 = 4.9592
    # pooled var = (2 * 1 + 3 * 5/3) / 5 = 7/5; d = -3.5 / sqrt(7/5); J = 1 - 3 / (4 * 7 - 9) = 16/19
    result = welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0])
    assert result.difference == -3.5
    assert (result.n_a, result.n_b) == (3, 4)
    assert result.df == pytest.approx(243 / 49, rel=1e-12)
    assert result.hedges_g == pytest.approx(16 / 19 * -3.5 / math.sqrt(7 / 5), rel=1e-12)
    assert result.hedges_g == pytest.approx(-2.49098, abs=1e-5)
    # p = 2 * P(T_{243/49} > 4.0415) = 0.01008; the interval is -3.5 -/+ t(0.975, 4.959) * sqrt(3/4)
    assert result.p == pytest.approx(0.010077, abs=1e-6)
    half = stats.t.ppf(0.975, 243 / 49) * math.sqrt(0.75)
    assert (result.ci_low, result.ci_high) == pytest.approx((-3.5 - half, -3.5 + half), rel=1e-12)
    assert half == pytest.approx(2.2317, abs=1e-4)


def test_welch_agrees_with_scipy() -> None:
    a, b = [0.91, 0.93, 0.90, 0.95], [0.88, 0.86, 0.90]
    ours, theirs = welch(a, b), stats.ttest_ind(a, b, equal_var=False)
    assert ours.p == pytest.approx(theirs.pvalue, rel=1e-10)
    assert ours.df == pytest.approx(theirs.df, rel=1e-10)


def test_welch_is_antisymmetric() -> None:
    a, b = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]
    forward, backward = welch(a, b), welch(b, a)
    assert backward.difference == -forward.difference
    assert backward.hedges_g == pytest.approx(-forward.hedges_g)
    assert backward.p == pytest.approx(forward.p)
    assert (backward.ci_low, backward.ci_high) == pytest.approx((-forward.ci_high, -forward.ci_low))


def test_welch_needs_two_values_per_side() -> None:
    with pytest.raises(ValueError, match="at least 2 values per side"):
        welch([1.0], [2.0, 3.0])


def test_welch_without_variance_is_undefined_not_an_error() -> None:
    result = welch([1.0, 1.0], [2.0, 2.0])
    assert result.difference == -1.0
    assert math.isnan(result.p) and math.isnan(result.ci_low) and math.isnan(result.hedges_g)


def test_hedges_g_by_hand() -> None:
    # a = 2,4: mean 3, var 2; b = 0,2: mean 1, var 2; pooled sd sqrt(2); d = 2 / sqrt(2); J = 1 - 3/7
    assert hedges_g([2.0, 4.0], [0.0, 2.0]) == pytest.approx(4 / 7 * math.sqrt(2), rel=1e-12)
    assert math.isnan(hedges_g([1.0], [1.0, 2.0]))
