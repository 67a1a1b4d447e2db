"""The static experiment report: results.csv, report.md and a self-contained index.html.

It reads only MLflow, through :class:`~harness.runs.tracking.Tracker`, so a report can be
rebuilt at any time from the store alone. It never trains, never writes to MLflow and
never decides anything the data does not show: every sentence in "What the numbers
say" is computed from the runs.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from harness.reports import plots as figures
from harness.reports.comparisons import MIN_SEEDS
from harness.reports.diagnostics import diagnostics_section
from harness.reports.document import (
    Block,
    Bullets,
    Contents,
    Heading,
    Image,
    Para,
    render_html,
    render_markdown,
)
from harness.reports.intervals import METHODS
from harness.reports.leaderboard import Leaderboard, build_leaderboard
from harness.reports.memory_horizon import DEFAULT_FRACTION
from harness.reports.runs_view import (
    STATUS_ORDER,
    ReportRun,
    ReportTask,
    natural_order,
    write_results_csv,
)
from harness.reports.task_section import reference_section, task_section
from harness.reports.verdict import verdict_blocks
from harness.runs.tracking import Tracker, latest_per_key

__all__ = ["ReportPaths", "TaskExtras", "SummarySection", "build_report", "COMPARISON_TAG"]

#: Tag (``harness.comparison``) of the run a report is logged to; never read as a grid run.
COMPARISON_TAG = "comparison"


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`build_report` wrote the report."""

    directory: Path
    results_csv: Path
    markdown: Path
    html: Path
    plots: tuple[Path, ...]
    summary: Path
    leaderboard: Leaderboard


#: Extra blocks for a task's section: ``(task label, plot folder, file stem) -> blocks`` (e.g. tuning).
TaskExtras = Callable[[str, Path, str], list[Block]]
#: A section after the verdict: ``(leaderboard, plot folder) -> (blocks, summary.json keys)`` (e.g. memory horizons).
SummarySection = Callable[[Leaderboard, Path], tuple[list[Block], dict[str, object]]]


def build_report(experiment_name: str, tracker: Tracker, report_dir: Path, *,
                 experiment_file: str | None = None, note: str = "",
                 task_extras: TaskExtras | None = None, correction: str = "holm", reference_cell: str = "lstm",
                 horizon_fraction: float = DEFAULT_FRACTION, sections: Sequence[SummarySection] = ()) -> ReportPaths:
    """(Re)write the report of one experiment from its MLflow runs.

    Only the latest attempt of every run key counts (a killed attempt is superseded by
    its rerun); runs that did not finish are listed with their reason but never averaged.

    Args:
        experiment_name: shown in the header (the tracker already points at the experiment).
        tracker: the MLflow store to read.
        report_dir: receives ``results.csv``, ``report.md``, ``index.html`` and ``plots/``
            (which the report owns: PNGs there that this build did not draw are removed).
        experiment_file: the experiment file's path, shown in the header.
        note: free text shown in the header.
        task_extras: appends blocks to each task's section; PNGs it draws must go to the
            plot folder and be shown through Image blocks (so stale-plot clean-up keeps them).
        correction: the multiple-comparison correction (statsmodels' name: holm, fdr_bh).
        reference_cell: the cell the forest plot subtracts.
        horizon_fraction: the memory horizon's criterion (:mod:`harness.reports.memory_horizon`).
        sections: extra sections after the verdict, each adding keys to summary.json.
    Returns:
        The paths written. Rebuilding gives identical files apart from the timestamp.
    """
    all_records = [r for r in tracker.runs() if not r.tag(COMPARISON_TAG)]
    runs = sorted((ReportRun(r) for r in latest_per_key(all_records)), key=ReportRun.sort_key)
    report_dir = Path(report_dir)
    plot_dir = report_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    tasks = [ReportTask(name, [r for r in runs if r.task == name]) for name in sorted({r.task for r in runs}, key=natural_order)]
    csv_path = report_dir / "results.csv"
    write_results_csv(csv_path, runs, {t.name: t for t in tasks})

    board = build_leaderboard([t.scores() for t in tasks if t.primary], correction)
    # Memory horizons, gradient flow, clipping (harness.reports.diagnostics): first, since the verdict cites them.
    diagnostic_blocks, diagnostic_keys = diagnostics_section([r.record for r in runs], report_dir,
                                                             fraction=horizon_fraction)
    board.extra.update(diagnostic_keys)
    top, plots = verdict_blocks(board, {r.cell: r.cell_name for r in runs}, plot_dir, reference_cell)
    for section in sections:
        extra_blocks, keys = section(board, plot_dir)
        top += extra_blocks
        plots += [report_dir / b.path for b in extra_blocks if isinstance(b, Image)]
        board.extra.update(keys)
    top += diagnostic_blocks
    plots += [report_dir / b.path for b in diagnostic_blocks if isinstance(b, Image)]
    header = _header(experiment_name, experiment_file, note, runs, len(all_records) - len(runs))
    reference = json.loads(tracker.experiment_tag("reference") or "null")
    task_blocks = _task_sections(tasks, board, tracker, plot_dir, reference, task_extras, plots)
    figures.remove_stale_plots(plot_dir, plots)
    body = top + [Heading(2, "About this report")] + header + task_blocks
    blocks = [Contents(tuple(b.text for b in body if isinstance(b, Heading) and b.level == 2)), *body]

    title = f"Report: {experiment_name}"
    md_path, html_path = report_dir / "report.md", report_dir / "index.html"
    summary_path = report_dir / "summary.json"
    summary_path.write_text(json.dumps({"experiment": experiment_name, **board.as_dict()}, indent=2) + "\n",
                            encoding="utf-8")
    md_path.write_text(render_markdown(title, blocks), encoding="utf-8")
    html_path.write_text(render_html(title, blocks, report_dir), encoding="utf-8")
    return ReportPaths(report_dir, csv_path, md_path, html_path, tuple(plots), summary_path, board)


def _task_sections(tasks: Sequence[ReportTask], board: Leaderboard, tracker: Tracker, plot_dir: Path,
                   reference: dict | None, task_extras: TaskExtras | None, plots: list[Path]) -> list[Block]:
    """Every task's section, in name order; the plots drawn are appended to ``plots``."""
    colors = figures.colors(sorted({label for task in tasks for label in task.cells}))
    blocks: list[Block] = []
    used: set[str] = set()
    for task in tasks:
        stem = _unique(_slug(task.name), used)
        blocks += task_section(task, board, tracker, plot_dir, stem, colors, plots)
        blocks += reference_section(task, reference)
        if task_extras is not None:
            extra = task_extras(task.name, plot_dir, stem)
            plots += [plot_dir.parent / b.path for b in extra if isinstance(b, Image)]
            blocks += extra
    return blocks


def _header(name: str, file: str | None, note: str, runs: Sequence[ReportRun], superseded: int) -> list[Block]:
    counts = Counter(r.status for r in runs)
    order = [s for s in STATUS_ORDER if s in counts] + sorted(set(counts) - set(STATUS_ORDER))
    by_status = ", ".join(f"{s} {counts[s]}" for s in order) or "none"
    items = [f"Experiment: {name}", f"Experiment file: {file or 'not given'}",
             f"Generated: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}",
             f"Runs (latest attempt per run key): {len(runs)} ({by_status}); superseded attempts: {superseded}"]
    if note:
        items.append(f"Note: {note}")
    method = (f"Each value is over the seeds of the finished runs, with a 95% interval that respects the metric: "
              f"bounded metrics: {METHODS['bounded']}; positive error metrics: {METHODS['log']}; others: "
              f"{METHODS['linear']}. A single seed shows its value and n=1. Runs that did not finish are listed "
              f"with their reason and never averaged in. Comparisons pair the cells by seed (seed k gives every "
              f"cell the same data and order): a paired t-test, with Wilcoxon's signed-rank p alongside; Welch's "
              f"test only where the seed sets share fewer than 2 seeds. With fewer than {MIN_SEEDS} paired seeds "
              f"no comparison is called significant.")
    blocks: list[Block] = [Bullets(tuple(items)), Para(method)]
    if not runs:
        blocks.append(Para("No runs are recorded for this experiment yet."))
    return blocks


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "task"


def _unique(stem: str, used: set[str]) -> str:
    candidate, index = stem, 2
    while candidate.lower() in used:
        candidate, index = f"{stem}-{index}", index + 1
    used.add(candidate.lower())
    return candidate
