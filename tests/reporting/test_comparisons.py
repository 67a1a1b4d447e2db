"""The verdict's statistics against hand-worked cases: pairing, Holm, ties, bounded intervals, power, Friedman."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from harness.reports.comparisons import compare, correct, seeds_needed
from harness.reports.intervals import metric_scale, summarize
from harness.reports.leaderboard import TaskScores, build_leaderboard

SEEDS = [str(s) for s in range(6)]


def _seeded(values: list[float]) -> dict[str, float]:
    return dict(zip(SEEDS, values))


def test_paired_design_where_welch_and_paired_disagree() -> None:
    # Seed k is hard or easy for both cells alike: the seeds spread widely, a beats b by ~0.01 on every seed.
    base = [0.60, 0.70, 0.80, 0.65, 0.75, 0.85]
    a = [v + 0.01 + 0.001 * (i % 2) for i, v in enumerate(base)]
    welch_p = stats.ttest_ind(a, base, equal_var=False).pvalue
    assert welch_p > 0.5  # unpaired, the seed spread hides the difference
    result = compare("t", "a", "b", _seeded(a), _seeded(base), higher_is_better=True, log_scale=False)
    assert result.test == "paired t" and result.n == 6
    differences = np.subtract(a, base)
    assert result.p == pytest.approx(stats.ttest_1samp(differences, 0).pvalue)
    assert result.p < 1e-6
    assert result.difference == pytest.approx(differences.mean())
    low, high = result.interval
    half = stats.t.ppf(0.975, 5) * differences.std(ddof=1) / math.sqrt(6)
    assert (low, high) == pytest.approx((differences.mean() - half, differences.mean() + half))
    assert result.p_wilcoxon == pytest.approx(stats.wilcoxon(differences).pvalue)
    corrected = correct([result])[0]
    assert corrected.better == "a" and corrected.verdict() == "a better (adjusted p < 0.05)"


def test_welch_only_where_the_seed_sets_differ() -> None:
    a = {"0": 0.9, "1": 0.92, "2": 0.91}
    b = {"3": 0.8, "4": 0.82, "5": 0.79}
    result = compare("t", "a", "b", a, b, higher_is_better=True, log_scale=False)
    assert result.test.startswith("Welch (seed sets differ")
    assert result.p == pytest.approx(stats.ttest_ind(list(a.values()), list(b.values()), equal_var=False).pvalue)


def test_holm_on_a_known_family() -> None:
    # Holm by hand: sorted p 0.01, 0.02, 0.03, 0.04 times 4, 3, 2, 1, then running maximum.
    pairs = [compare("t", f"a{i}", "b", _seeded([1.0 + d + 0.01 * (k % 3) for k in range(6)]),
                     _seeded([1.0] * 6), higher_is_better=True, log_scale=False) for i, d in enumerate([1, 2, 3, 4])]
    raw = [0.03, 0.01, 0.04, 0.02]
    pairs = [type(p)(**{**p.__dict__, "p": value}) for p, value in zip(pairs, raw)]
    adjusted = [c.p_adjusted for c in correct(pairs, "holm")]
    assert adjusted == pytest.approx([0.06, 0.04, 0.06, 0.06])
    bh = [c.p_adjusted for c in correct(pairs, "fdr_bh")]
    assert bh == pytest.approx([0.04, 0.04, 0.04, 0.04])
    assert [c.better for c in correct(pairs, "holm")] == [None, "a1", None, None]


def test_two_seeds_are_never_significant_and_say_how_many_to_run() -> None:
    result = correct([compare("t", "gru", "lstm", {"0": 0.9, "1": 0.7}, {"0": 0.85, "1": 0.72},
                              higher_is_better=True, log_scale=False)])[0]
    assert result.p is not None and result.p_adjusted is None and not result.significant
    d = np.array([0.05, -0.02])
    from statsmodels.stats.power import TTestPower
    n = max(5, math.ceil(TTestPower().solve_power(d.mean() / d.std(ddof=1), alpha=0.05, power=0.8)))
    assert result.seeds_needed == n
    assert result.verdict() == f"n = 2: too few seeds to test; run at least {n}"
    assert seeds_needed(0.3) == math.ceil(TTestPower().solve_power(0.3, alpha=0.05, power=0.8))


def test_a_tie_shares_a_rank() -> None:
    # gru and lstm differ by noise only; vanilla is far behind on every seed.
    noise = [0.004, -0.003, 0.002, -0.001, 0.003, -0.004]
    task = TaskScores("agreement", "accuracy", True, {
        "gru": _seeded([0.9 + e for e in noise]), "lstm": _seeded([0.9 - e for e in noise]),
        "vanilla": _seeded([0.55 + e / 2 for e in noise])})
    board = build_leaderboard([task])
    assert board.ranks["agreement"] == {"gru": 1.5, "lstm": 1.5, "vanilla": 3.0}
    assert board.cells[-1] == "vanilla"
    gru_lstm = next(c for c in board.comparisons if {c.a, c.b} == {"gru", "lstm"})
    assert gru_lstm.tested and not gru_lstm.significant
    assert "no significant difference" in gru_lstm.verdict()


def test_bounded_metric_at_its_bound_stays_in_range() -> None:
    at_one = summarize([1.0, 1.0, 1.0, 0.98], "bounded")
    assert 0 <= at_one.interval[0] <= at_one.interval[1] <= 1.0
    at_zero = summarize([0.0, 0.0, 0.02], "bounded")
    assert at_zero.interval[0] == 0.0 and at_zero.interval[1] <= 1.0
    assert summarize([1.0, 1.0], "bounded").interval == (1.0, 1.0)
    # The Student-t interval the old report printed leaves the range here:
    values = [0.05, 1.0, 1.0]
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert np.mean(values) + half > 1
    assert summarize(values, "bounded").interval[1] <= 1.0
    # A paired difference of a bounded metric keeps its interval inside [-1, 1], where the t interval does not.
    a, b = {"0": 0.05, "1": 1.0}, {"0": 0.9, "1": 0.95}
    t_low = compare("t", "a", "b", a, b, higher_is_better=True, log_scale=False).interval[0]
    assert t_low < -1
    low, high = compare("t", "a", "b", a, b, higher_is_better=True, log_scale=False, bounded=True).interval
    assert -1 <= low <= high <= 1 and (low, high) == pytest.approx((-0.85, 0.05))


def test_log_scale_for_positive_error_metrics() -> None:
    assert metric_scale("test_mse", [0.01, 0.02]) == "log"
    assert metric_scale("test_perplexity", [3.0, 4.0]) == "log"
    assert metric_scale("test_accuracy", [0.5, 0.9]) == "bounded"
    assert metric_scale("test_bleu", [20.0, 21.0]) == "linear"
    summary = summarize([0.001, 0.002, 0.5], "log")
    assert summary.interval[0] > 0
    assert summary.mean == pytest.approx(stats.gmean([0.001, 0.002, 0.5]))


def test_friedman_and_nemenyi_over_tasks() -> None:
    import scikit_posthocs as posthocs

    means = {"t1": (0.9, 0.8, 0.5), "t2": (0.95, 0.85, 0.6), "t3": (0.7, 0.75, 0.4), "t4": (0.99, 0.9, 0.5)}
    tasks = [TaskScores(name, "accuracy", True, {c: {"0": m} for c, m in zip(("gru", "lstm", "vanilla"), row)})
             for name, row in means.items()]
    board = build_leaderboard(tasks)
    table = np.array(list(means.values()))
    expected = stats.friedmanchisquare(*table.T)
    assert board.friedman.statistic == pytest.approx(expected.statistic)
    assert board.friedman.p == pytest.approx(expected.pvalue)
    assert board.friedman.mean_ranks == pytest.approx({"gru": 1.25, "lstm": 1.75, "vanilla": 3.0})
    nemenyi = posthocs.posthoc_nemenyi_friedman(table)
    assert board.friedman.nemenyi_p["gru"]["vanilla"] == pytest.approx(nemenyi.iloc[0, 2])
    # Demšar (2006), Table 5: q_0.05 for k = 3 is 2.343; CD = q * sqrt(k (k + 1) / (6 N)).
    assert board.friedman.critical_difference == pytest.approx(2.343 * math.sqrt(12 / 24), abs=1e-3)
    assert build_leaderboard(tasks[:2]).friedman is None


def test_the_verdict_says_same_on_every_seed_not_too_few_seeds_and_cites_memory_horizons() -> None:
    from harness.reports.verdict import verdict_paragraph

    solved = TaskScores("agreement[max_distance=8]", "accuracy", True, {
        "gru": _seeded([1.0] * 6), "lstm": _seeded([1.0] * 6), "vanilla": _seeded([1.0] * 6)})
    board = build_leaderboard([solved])
    board.extra["memory_horizon"] = {"agreement": {
        "gru": {"value": 24, "interval": [24, 24]}, "lstm": {"value": 48, "interval": [24, 48]},
        "vanilla": {"value": None, "interval": [None, 8]}}}
    text = verdict_paragraph(board, {"gru": "gru", "lstm": "lstm", "vanilla": "vanilla"})
    assert "GRU vs LSTM: the same score on every seed on agreement[max_distance=8]." in text
    assert "too few seeds" not in text
    assert "Memory horizon on agreement" in text and "lstm 48 [24, 48], gru 24 [24, 24], vanilla none [none, 8]" in text
