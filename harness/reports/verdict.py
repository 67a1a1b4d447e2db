"""The report's opening: the verdict paragraph, the leaderboard, the CD diagram and the forest plot.

Every sentence is generated from a :class:`~harness.reports.leaderboard.Leaderboard` and states no more
than its corrected tests support; every number in it is also in ``summary.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from harness.reports.comparisons import ALPHA, MIN_SEEDS, POWER, Comparison
from harness.reports.document import Block, Heading, Image, Para, Strong, Table
from harness.reports.leaderboard import Leaderboard
from harness.reports.verdict_plots import draw_critical_difference, draw_forest

__all__ = ["GRU_FAMILY", "LSTM_FAMILY", "VANILLA", "verdict_paragraph", "verdict_blocks", "fmt"]

GRU_FAMILY = ("gru", "gru_simple")
LSTM_FAMILY = ("lstm", "peephole_lstm")
VANILLA = "vanilla"


def fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def verdict_blocks(board: Leaderboard, names: Mapping[str, str], plot_dir: Path, reference: str
                   ) -> tuple[list[Block], list[Path]]:
    """Headings, paragraph, leaderboard table and the two figures (paths returned for stale-plot clean-up)."""
    blocks: list[Block] = [Heading(2, "Verdict"), Para(verdict_paragraph(board, names)),
                           Heading(2, "Leaderboard"), Para(_leaderboard_note(board)), leaderboard_table(board)]
    plots: list[Path] = []
    blocks.append(Heading(2, "Critical-difference diagram"))
    if board.friedman is not None:
        path = plot_dir / "verdict-critical_difference.png"
        draw_critical_difference(path, board.friedman)
        plots.append(path)
        blocks += [Para(f"Friedman's test over {len(board.friedman.tasks)} tasks and {len(board.friedman.cells)} "
                        f"cells (on each task's mean primary metric): χ² = {board.friedman.statistic:.3g}, "
                        f"p = {board.friedman.p:.3g}. Post-hoc: Nemenyi's test, critical difference "
                        f"{board.friedman.critical_difference:.3g} in mean rank at α = {ALPHA}."),
                   Image(path.relative_to(plot_dir.parent), "critical-difference diagram")]
    else:
        blocks.append(Para(f"Not drawn: Friedman's test {board.friedman_reason}."))
    blocks.append(Heading(2, f"Differences to {reference}"))
    path = plot_dir / "verdict-forest.png"
    if draw_forest(path, board, reference):
        plots.append(path)
        blocks.append(Image(path.relative_to(plot_dir.parent), f"forest plot: each cell minus {reference}"))
    else:
        blocks.append(Para(f"Not drawn: the reference cell {reference} has no results "
                           f"(set report.reference_cell in the experiment file)."))
    return blocks, plots


def _leaderboard_note(board: Leaderboard) -> str:
    return ("Each entry: the task's primary metric over seeds with its 95% interval (bounded metrics: percentile "
            "bootstrap over seeds; error metrics such as MSE or perplexity: geometric mean, t-interval on the log "
            "scale), then the cell's rank on that task in parentheses. Cells share a rank (the mean of their "
            f"positions) where the paired test, corrected with {_correction_name(board.correction)} across the "
            f"report, cannot separate them; with fewer than {MIN_SEEDS} seeds no pair is tested, so all tie. "
            "Sorted by mean rank over tasks.")


def leaderboard_table(board: Leaderboard) -> Table:
    header = ("#", "cell", "mean rank", *(f"{t.name}: {t.primary_metric} {'↑' if t.higher_is_better else '↓'}"
                                          for t in board.tasks))
    rows = []
    for position, cell in enumerate(board.cells, 1):
        entries: list[str | Strong] = []
        for task in board.tasks:
            summary = board.summaries[task.name].get(cell)
            if summary is None:
                entries.append("—")
                continue
            interval = "" if summary.interval is None else f" [{fmt(summary.interval[0])}, {fmt(summary.interval[1])}]"
            rank = board.ranks[task.name][cell]
            text = f"{fmt(summary.mean)}{interval} ({rank:g}){'' if summary.n > 1 else ' n=1'}"
            alone = rank == 1 and sum(r == 1 for r in board.ranks[task.name].values()) == 1
            entries.append(Strong(text) if alone else text)
        rows.append((str(position), cell, f"{board.mean_rank[cell]:.2f}", *entries))
    return Table(header, tuple(rows))


def verdict_paragraph(board: Leaderboard, names: Mapping[str, str]) -> str:
    """Best overall, GRU vs LSTM, where vanilla fails, and how many seeds would settle what is open."""
    if not board.tasks:
        return "No task has a finished run with its primary metric yet, so there is no verdict."
    parts = [_overall(board), _gru_lstm(board, names), _vanilla(board, names), _horizons(board), _seeds(board)]
    return " ".join(p for p in parts if p)


def _overall(board: Leaderboard) -> str:
    leader = board.cells[0]
    best = board.mean_rank[leader]
    sharing = [c for c in board.cells if board.mean_rank[c] == best]
    if len(sharing) == len(board.cells) > 1:
        text = (f"Over {len(board.tasks)} task(s) no cell is ahead: the corrected paired tests separate no pair on "
                f"any task, so all cells share mean rank {best:.2f}.")
    elif len(sharing) > 1:
        text = (f"Over {len(board.tasks)} task(s), {', '.join(sharing)} share the best mean rank ({best:.2f}; "
                f"ranks are shared where the corrected paired tests cannot separate cells).")
    else:
        text = (f"Over {len(board.tasks)} task(s), {leader} has the best mean rank ({best:.2f}; ranks are shared "
                f"where the corrected paired tests cannot separate cells).")
    alone = [t.name for t in board.tasks if list(board.ranks[t.name].values()).count(1.0) == 1
             and board.ranks[t.name].get(leader) == 1.0]
    if alone and len(sharing) == 1:
        text += f" It is alone at the top on {', '.join(alone)}."
    return text + " " + _friedman_sentence(board)


def _friedman_sentence(board: Leaderboard) -> str:
    friedman = board.friedman
    if friedman is None:
        return f"Friedman's test was not run ({board.friedman_reason}), so the overall order is descriptive."
    ranks = friedman.mean_ranks
    top = min(ranks, key=ranks.__getitem__)
    text = (f"On the task means (one value per cell and task, ignoring seed spread), {top} has the best Friedman "
            f"mean rank ({ranks[top]:.2f});")
    if friedman.p >= ALPHA:
        return text + (f" Friedman's test does not reject that all cells rank equally (p = {friedman.p:.3g}), "
                       f"so no cell is established as best overall.")
    text += f" Friedman's test rejects equal ranks (p = {friedman.p:.3g}),"
    cd = friedman.critical_difference
    separated = sorted(f"{a} ahead of {b}" for a in ranks for b in ranks if ranks[b] - ranks[a] > cd)
    if separated:
        return text + f" and Nemenyi's test (CD = {cd:.3g}) places {'; '.join(separated)}."
    return text + f" but Nemenyi's test separates no pair of cells (CD = {cd:.3g})."


def _family_pairs(board: Leaderboard, names: Mapping[str, str], first: tuple[str, ...], second: tuple[str, ...]
                  ) -> list[Comparison]:
    return [c for c in board.comparisons if (names.get(c.a) in first and names.get(c.b) in second)
            or (names.get(c.a) in second and names.get(c.b) in first)]


def _gru_lstm(board: Leaderboard, names: Mapping[str, str]) -> str:
    pairs = _family_pairs(board, names, GRU_FAMILY, LSTM_FAMILY)
    if not pairs:
        return ""
    won = [f"{c.better} beats {c.b if c.better == c.a else c.a} on {c.task} (adjusted p = {c.p_adjusted:.3g})"
           for c in pairs if c.better]
    tied = sorted({c.task for c in pairs if c.tested and not c.better})
    # Enough seeds but nothing to test: every paired difference is zero (e.g. all cells at 1.0).
    same = sorted({c.task for c in pairs if not c.tested and c.n >= MIN_SEEDS})
    untested = sorted({c.task for c in pairs if not c.tested and c.n < MIN_SEEDS})
    parts = []
    if won:
        parts.append("; ".join(won))
    if tied:
        pairs_word = "for the other pairs " if won else ""
        parts.append(f"no significant difference {pairs_word}on {', '.join(tied)}")
    if same:
        parts.append(f"the same score on every seed on {', '.join(same)}")
    if untested:
        sizes = [c.seeds_needed for c in pairs if not c.tested and c.n < MIN_SEEDS and c.seeds_needed]
        advice = f" (at the observed differences, {min(sizes)} to {max(sizes)} seeds per cell)" if sizes else ""
        parts.append(f"too few seeds to test on {', '.join(untested)}{advice}")
    return "GRU vs LSTM: " + "; ".join(parts) + "."


def _vanilla(board: Leaderboard, names: Mapping[str, str]) -> str:
    vanillas = [c for c in board.cells if names.get(c) == VANILLA]
    sentences = []
    for cell in vanillas:
        fails, worst, fine = [], [], []
        for task in board.tasks:
            pairs = [c for c in board.comparisons_of(task.name) if cell in (c.a, c.b)]
            if not pairs:
                continue
            if all(c.better not in (None, cell) for c in pairs):
                fails.append(task.name)
            elif _worst_mean(board, task.name) == cell:
                worst.append(task.name)
            else:
                fine.append(task.name)
        if fails:
            sentences.append(f"{cell} is significantly worse than every other cell on {', '.join(fails)}.")
        if worst:
            sentences.append(f"{cell} has the worst mean on {', '.join(worst)}, but that is not established: no "
                             f"corrected test separates it from every other cell there (too few seeds, or no "
                             f"significant difference).")
        if fine:
            sentences.append(f"On {', '.join(fine)} {cell} is not behind every other cell.")
    return " ".join(sentences)


def _horizons(board: Leaderboard) -> str:
    """The memory horizons of swept tasks (``harness.reports.diagnostics`` puts them in ``board.extra``)."""
    horizons = board.extra.get("memory_horizon") or {}
    sentences = []
    for task, cells in sorted(horizons.items()):  # type: ignore[union-attr]
        ordered = sorted(cells.items(), key=lambda item: -(item[1]["value"] if item[1]["value"] is not None
                                                          else -math.inf))
        listed = ", ".join(f"{cell} {_horizon_text(entry)}" for cell, entry in ordered)
        sentences.append(f"Memory horizon on {task} (the hardest swept value still solved, 95% bootstrap "
                         f"interval over seeds): {listed}.")
    return " ".join(sentences)


def _horizon_text(entry: Mapping[str, object]) -> str:
    def shown(value: object) -> str:
        return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    low, high = entry.get("interval") or (None, None)  # type: ignore[misc]
    return f"{shown(entry['value'])} [{shown(low)}, {shown(high)}]"


def _worst_mean(board: Leaderboard, task: str) -> str:
    summaries = board.summaries[task]
    sign = 1 if board.task(task).higher_is_better else -1
    return min(summaries, key=lambda c: sign * summaries[c].mean)


def _seeds(board: Leaderboard) -> str:
    open_pairs = [c for c in board.comparisons if c.better is None]
    sized = [c.seeds_needed for c in open_pairs if c.seeds_needed]
    if not open_pairs:
        return "Every pairwise comparison is settled at the seeds run."
    n_max = max((c.n for c in board.comparisons), default=0)
    text = f"{len(open_pairs)} of {len(board.comparisons)} pairwise comparisons are open at up to {n_max} seeds"
    if sized:
        text += (f"; at the observed paired effects, {POWER:.0%} power at α = {ALPHA} needs between {min(sized)} "
                 f"and {max(sized)} seeds per cell")
    unsized = len(open_pairs) - len(sized)
    if unsized:
        text += f"; {unsized} showed no difference at all and cannot be sized"
    return text + "."


def _correction_name(method: str) -> str:
    return {"holm": "Holm–Bonferroni", "fdr_bh": "Benjamini–Hochberg"}.get(method, method)
