"""The static experiment report: results.csv, report.md and a self-contained index.html.

It reads only MLflow, through :class:`~harness.tracking.Tracker`, so a report can be
rebuilt at any time from the store alone. It never trains, never writes to MLflow and
never decides anything the data does not show: every sentence in "What the numbers
say" is computed from the runs.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness import report_plots as figures
from harness.comparisons import MIN_SEEDS
from harness.diagnostics_report import diagnostics_section
from harness.memory_horizon import DEFAULT_FRACTION
from harness.intervals import METHODS, metric_scale, summarize
from harness.leaderboard import Leaderboard, TaskScores, build_leaderboard
from harness.report_document import (Block, Bullets, Cell, Contents, Heading, Image, Para, Strong, Table,
                                     render_html, render_markdown)
from harness.report_plots import CHANCE, GROUPED
from harness.statistics import mean_ci
from harness.tracking import TAG_PREFIX, RunRecord, Tracker, latest_per_key
from harness.report_comparisons import comparison_blocks, wall_time_sentence
from harness.verdict import verdict_blocks

__all__ = ["ReportPaths", "TaskExtras", "SummarySection", "build_report", "COMPARISON_TAG"]

#: Tag (``harness.comparison``) of the run a report is logged to; never read as a grid run.
COMPARISON_TAG = "comparison"
#: A cell whose longest-distance accuracy is within this of chance is called "at chance".
CHANCE_MARGIN = 0.05
RUN_METRICS = ("wall_time_s", "train_tokens_per_s", "peak_memory_mb", "epochs")
STATUS_ORDER = ("FINISHED", "FAILED", "KILLED", "RUNNING")


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
        horizon_fraction: the memory horizon's criterion (:mod:`harness.memory_horizon`).
        sections: extra sections after the verdict, each adding keys to summary.json.
    Returns:
        The paths written. Rebuilding gives identical files apart from the timestamp.
    """
    all_records = [r for r in tracker.runs() if not r.tag(COMPARISON_TAG)]
    runs = sorted((_Run(r) for r in latest_per_key(all_records)), key=_Run.sort_key)
    report_dir = Path(report_dir)
    plot_dir = report_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    tasks = [_Task(name, [r for r in runs if r.task == name]) for name in sorted({r.task for r in runs}, key=_natural)]
    csv_path = report_dir / "results.csv"
    _write_csv(csv_path, runs, {t.name: t for t in tasks})

    board = build_leaderboard([t.scores() for t in tasks if t.primary], correction)
    # Memory horizons, gradient flow, clipping (harness.diagnostics_report): first, since the verdict cites them.
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


def _task_sections(tasks: Sequence[_Task], board: Leaderboard, tracker: Tracker, plot_dir: Path,
                   reference: dict | None, task_extras: TaskExtras | None, plots: list[Path]) -> list[Block]:
    """Every task's section, in name order; the plots drawn are appended to ``plots``."""
    colors = figures.colors(sorted({label for task in tasks for label in task.cells}))
    blocks: list[Block] = []
    used: set[str] = set()
    for task in tasks:
        stem = _unique(_slug(task.name), used)
        blocks += _task_section(task, board, tracker, plot_dir, stem, colors, plots)
        blocks += _reference_section(task, reference)
        if task_extras is not None:
            extra = task_extras(task.name, plot_dir, stem)
            plots += [plot_dir.parent / b.path for b in extra if isinstance(b, Image)]
            blocks += extra
    return blocks


# ---------------------------------------------------------------------------
# Runs and tasks as the report sees them.
# ---------------------------------------------------------------------------


def _natural(label: str) -> list[tuple[int, float | str]]:
    """Sort key that orders a sweep's variants by value: agreement[max_distance=8] before [max_distance=24]."""
    return [(0, float(part)) if index % 2 else (1, part)
            for index, part in enumerate(re.split(r"(\d+(?:\.\d+)?)", label)) if part]


class _Run:
    """A RunRecord read through the layout of :mod:`harness.tracking`."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.run_id = record.run_id
        self.metrics = record.metrics
        self.cell = record.tag("cell") or record.tag("cell_name") or "?"
        self.cell_name = record.tag("cell_name")
        self.task = record.tag("task") or "?"
        self.seed = record.tag("seed")
        self.status = record.tag("status") or record.status
        self.reason = record.tag("failure_reason")

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"

    def sort_key(self) -> tuple[str, str, tuple[int, int, str]]:
        seed = self.seed.strip()
        numeric = seed.lstrip("-").isdigit()
        return self.task, self.cell, (0, int(seed) if numeric else 0, "" if numeric else seed)


@dataclass
class _Task:
    """One task's runs, grouped by cell label, with its primary metric and direction."""

    name: str
    runs: list[_Run]
    cells: dict[str, list[_Run]] = field(init=False)

    def __post_init__(self) -> None:
        self.cells = {label: [r for r in self.runs if r.cell == label] for label in sorted({r.cell for r in self.runs})}
        primaries = Counter(r.record.tag("primary_metric") for r in self.runs if r.record.tag("primary_metric"))
        self.primary_name = primaries.most_common(1)[0][0] if primaries else ""
        directions = Counter(r.record.tag("higher_is_better").lower() for r in self.runs)
        self.higher = directions.most_common(1)[0][0] in ("true", "1", "yes")
        keys = {k for r in self.runs if r.finished for k in r.metrics if k.startswith("test_")}
        self.primary = f"test_{self.primary_name}" if f"test_{self.primary_name}" in keys else ""
        self.metrics = [self.primary] * bool(self.primary) + sorted(k for k in keys - {self.primary} if "/" not in k)
        self.groups = sorted(k[len(GROUPED):] for k in keys if k.startswith(GROUPED))
        self.group_name = _most_common(r.record.tag("group_name") for r in self.runs) or "distance"
        chance = _most_common(r.record.tag("chance") for r in self.runs)
        self.chance = float(chance) if _is_number(chance) else CHANCE
        self.log_scale = bool(self.primary) and metric_scale(self.primary, self.all_values(self.primary)) == "log"

    def all_values(self, key: str) -> list[float]:
        return [v for label in self.cells for v in self.values(label, key)]

    def seed_values(self, label: str, key: str) -> dict[str, float]:
        """``{seed: value}`` of the finished runs, for comparisons paired by seed."""
        return {r.seed: r.metrics[key] for r in self.finished(label)
                if key in r.metrics and math.isfinite(r.metrics[key])}

    def scores(self) -> TaskScores:
        return TaskScores(self.name, self.primary_name, self.higher,
                          {label: self.seed_values(label, self.primary) for label in self.cells})

    def finished(self, label: str) -> list[_Run]:
        return [r for r in self.cells[label] if r.finished]

    def unfinished(self) -> list[_Run]:
        return [r for r in self.runs if not r.finished]

    def values(self, label: str, key: str) -> list[float]:
        return [r.metrics[key] for r in self.finished(label) if key in r.metrics and math.isfinite(r.metrics[key])]

    def cell_name(self, label: str) -> str:
        return self.cells[label][0].cell_name

    def ranking(self) -> list[str]:
        """Cells with a primary-metric value, best first (ties keep label order)."""
        scored = [(label, self.values(label, self.primary)) for label in self.cells] if self.primary else []
        sign = -1 if self.higher else 1
        return [label for label, v in sorted((s for s in scored if s[1]), key=lambda s: sign * sum(s[1]) / len(s[1]))]

    def direction(self) -> str:
        return "higher is better" if self.higher else "lower is better"


# ---------------------------------------------------------------------------
# results.csv
# ---------------------------------------------------------------------------


def _write_csv(path: Path, runs: Sequence[_Run], tasks: dict[str, _Task]) -> None:
    test_keys = sorted({k for r in runs for k in r.metrics if k.startswith("test_")})
    columns = ["cell", "task", "seed", "status", "failure_reason", "primary_metric", "higher_is_better",
               "primary_value", *test_keys, "param_count", "hidden_size",
               "execution_path", *RUN_METRICS, "cell_name", "family", "memory_measure", "run_id", "path"]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for run in runs:
            task = tasks[run.task]
            primary = run.metrics.get(task.primary) if task.primary and run.finished else None
            tags = {"cell": run.cell, "task": run.task, "seed": run.seed, "status": run.status,
                    "failure_reason": run.reason, "run_id": run.run_id, "path": run.record.artifact_uri,
                    "hidden_size": run.record.hidden_size,
                    "primary_metric": task.primary_name, "higher_is_better": str(task.higher).lower(),
                    "primary_value": "" if primary is None else _csv_number(primary)}
            row = [tags[c] if c in tags else
                   _csv_number(run.metrics[c]) if c in run.metrics else run.record.tag(c) for c in columns]
            writer.writerow(row)


def _csv_number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _header(name: str, file: str | None, note: str, runs: Sequence[_Run], superseded: int) -> list[Block]:
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


def _task_section(task: _Task, board: Leaderboard, tracker: Tracker, plot_dir: Path, stem: str,
                  colors: dict[str, str], plots: list[Path]) -> list[Block]:
    blocks: list[Block] = [Heading(2, f"Task: {task.name}"), Heading(3, "What the numbers say"),
                            Para(" ".join(_narrative(task, board))), Heading(3, "Cells"), _cell_table(task, board)]
    if task.unfinished():
        items = [f"{r.cell}, seed {r.seed}: {r.status}: {_short(r.reason) or 'no reason recorded'}"
                 for r in task.unfinished()]
        blocks += [Para("Runs that did not finish (excluded from every mean):"), Bullets(tuple(items))]
    blocks += comparison_blocks(task.name, task.primary, task.direction(), board)
    notes = _metric_notes(task)
    if notes:
        blocks += [Heading(3, "How the metrics were computed"), Bullets(tuple(notes))]
    if task.groups:
        blocks += [Heading(3, f"Accuracy by {task.group_name}"), _group_table(task)]
    cost = wall_time_sentence(task)
    drawn = [("learning_curves", figures.plot_learning_curves), ("accuracy_by_distance", figures.plot_groups)]
    if cost is None:
        drawn.append(("quality_vs_time", figures.plot_quality_vs_time))
    else:
        blocks += [Heading(3, "Cost"), Para(cost)]
    for kind, plot in drawn:
        path = plot_dir / f"{stem}-{kind}.png"
        if figures.draw(path, lambda axes: plot(axes, task, tracker, colors)):  # called at once, inside the loop
            plots.append(path)
            blocks.append(Image(path.relative_to(plot_dir.parent), f"{task.name}: {kind.replace('_', ' ')}"))
    return blocks


def _metric_notes(task: _Task) -> list[str]:
    """The task's notes (tags ``note.<key>``) of its finished runs; differing values are all listed."""
    values: dict[str, list[str]] = {}
    for run in task.runs:
        if not run.finished:
            continue
        for tag, value in run.record.tags.items():
            if tag.startswith(TAG_PREFIX + "note.") and value not in values.setdefault(tag, []):
                values[tag].append(value)
    return [f"{tag[len(TAG_PREFIX + 'note.'):]}: {' | '.join(found)}" for tag, found in sorted(values.items())]


def _reference_section(task: _Task, reference: dict | None) -> list[Block]:
    """Ours vs published, for reproduction presets whose file carries a ``reference`` block."""
    published = (reference or {}).get("results", {}).get(task.name)
    if not published:
        return []
    tolerance = reference.get("tolerance")
    header = ("cell", "metric", "published", "ours (mean ± 95% CI)", "ours − published")
    header += ("within tolerance",) if tolerance is not None else ()
    rows = []
    for label in sorted(set(published) | set(task.cells)):
        for metric, value in zip(reference["metrics"], published.get(label, [None] * len(reference["metrics"]))):
            ours = task.values(label, metric) if label in task.cells else []
            row = [label, metric, "—" if value is None else _fmt(value), _fmt_pm(ours)]
            difference = sum(ours) / len(ours) - value if ours and value is not None else None
            row.append("—" if difference is None else f"{difference:+.4g}")
            if tolerance is not None:
                row.append("—" if difference is None else ("yes" if abs(difference) <= tolerance else "no"))
            rows.append(tuple(row))
    note = f"Published numbers: {reference['source']}."
    if tolerance is not None:
        note += f" Tolerance: ±{tolerance:g} (absolute)."
    return [Heading(3, "Ours vs published"), Para(note), Table(header, tuple(rows))]


def _cell_table(task: _Task, board: Leaderboard) -> Table:
    names = [k[len("test_"):] + (" ↑" if task.higher else " ↓") * (k == task.primary) for k in task.metrics]
    header = ("cell", *names, "finished", "not finished", "params", "hidden", "path", "wall time (s)")
    ranks = board.ranks.get(task.name, {})
    alone = [label for label, rank in ranks.items() if rank == 1]
    best = alone[0] if len(alone) == 1 else None  # bold only a winner the tests separate from the rest
    rows = []
    for label, runs in task.cells.items():
        done = task.finished(label)
        values = [_fmt_ci(task.values(label, k), len(done), metric_scale(k, task.all_values(k)))
                  for k in task.metrics]
        wall = task.values(label, "wall_time_s")
        row: list[Cell] = [label, *values, str(len(done)), str(len(runs) - len(done)),
                            _distinct(r.record.tag("param_count") for r in runs),
                            _distinct(r.record.hidden_size for r in runs),
                            _distinct(r.record.tag("execution_path") for r in done),
                            _fmt(sum(wall) / len(wall)) if wall else "—"]
        if label == best:
            row[0], row[1] = Strong(label), Strong(str(row[1]))
        rows.append(tuple(row))
    return Table(header, tuple(rows))


def _group_table(task: _Task) -> Table:
    rows = tuple((label, *(_fmt_ci(task.values(label, GROUPED + g), len(task.finished(label)), "bounded")
                           for g in task.groups))
                 for label in task.cells)
    return Table((task.group_name, *task.groups), rows)


# ---------------------------------------------------------------------------
# "What the numbers say": sentences computed from the data.
# ---------------------------------------------------------------------------


def _narrative(task: _Task, board: Leaderboard) -> list[str]:
    done = sum(r.finished for r in task.runs)
    excluded = len(task.runs) - done
    tail = [f"{excluded} run(s) did not finish and are excluded from every mean."] if excluded else []
    if not done:
        return ["No run of this task finished, so there is nothing to compare.", *tail]
    ranking = task.ranking()
    if not ranking:
        return [f"No finished run logged the primary metric test_{task.primary_name}.", *tail]
    sentences = _ranking_sentences(task, ranking, board)
    if task.groups:
        sentences += _distance_sentences(task)
    sentences += _param_sentence(task)
    return sentences + tail


def _ranking_sentences(task: _Task, ranking: list[str], board: Leaderboard) -> list[str]:
    best, metric = ranking[0], task.primary[len("test_"):]
    vb = task.values(best, task.primary)
    scale = metric_scale(task.primary, task.all_values(task.primary))
    sentences = [f"Best mean by {metric} ({task.direction()}): {best} with {_fmt_ci(vb, len(vb), scale)} over "
                 f"{len(vb)} seed(s), out of {len(ranking)} cell(s) with results."]
    if len(ranking) < 2:
        return sentences
    runner = ranking[1]
    vr = task.values(runner, task.primary)
    text = f"The runner-up is {runner} with {_fmt_ci(vr, len(vr), scale)}."
    pair = next((c for c in board.comparisons_of(task.name) if {c.a, c.b} == {best, runner}), None)
    if pair is not None:
        p = "" if pair.p is None or math.isnan(pair.p) else f"{pair.test} p = {_fmt_p(pair.p)}"
        adjusted = "" if pair.p_adjusted is None else f", adjusted {_fmt_p(pair.p_adjusted)}"
        text += f" {best} vs {runner}: {pair.verdict()}" + (f" ({p}{adjusted})." if p else ".")
    return sentences + [text]


def _distance_sentences(task: _Task) -> list[str]:
    first, last = task.groups[0], task.groups[-1]
    pairs, at_chance = [], []
    for label in task.cells:
        short, long = task.values(label, GROUPED + first), task.values(label, GROUPED + last)
        if short and long:
            mean_long = sum(long) / len(long)
            pairs.append(f"{label} {_fmt(sum(short) / len(short))} → {_fmt(mean_long)}")
            if abs(mean_long - task.chance) <= CHANCE_MARGIN:
                at_chance.append(label)
    if not pairs:
        return []
    group = task.group_name
    text = f"Mean accuracy from the first {group} bucket ({first}) to the last ({last}): {'; '.join(pairs)}."
    if at_chance:
        verb = "is" if len(at_chance) == 1 else "are"
        text += (f" At the last {group} bucket {', '.join(at_chance)} {verb} within {CHANCE_MARGIN} of chance "
                 f"({task.chance:g}).")
    else:
        text += f" No cell is within {CHANCE_MARGIN} of chance ({task.chance:g}) at the last {group} bucket."
    return [text]


def _param_sentence(task: _Task) -> list[str]:
    counts = {}
    for label, runs in task.cells.items():
        numbers = [float(r.record.tag("param_count")) for r in runs if _is_number(r.record.tag("param_count"))]
        if numbers:
            counts[label] = max(numbers)
    if len(set(counts.values())) < 2:
        return []
    low, high = min(counts, key=counts.__getitem__), max(counts, key=counts.__getitem__)
    spread = 100 * (counts[high] - counts[low]) / counts[low] if counts[low] else math.inf
    return [f"Recurrent parameter counts differ: from {_fmt(counts[low])} ({low}) to {_fmt(counts[high])} "
            f"({high}), {spread:.0f}% more."]


# ---------------------------------------------------------------------------
# Formatting.
# ---------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _fmt_p(p: float) -> str:
    return f"{p:.3g}"


def _fmt_ci(values: Sequence[float], finished: int, scale: str = "linear") -> str:
    """``mean [low, high]`` on the metric's scale; ``value (n=1)`` for one seed; the n when fewer than finished."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{_fmt(values[0])} (n=1)"
    summary = summarize(values, scale)
    assert summary.interval is not None
    text = f"{_fmt(summary.mean)} [{_fmt(summary.interval[0])}, {_fmt(summary.interval[1])}]"
    return text + (f" (n={summary.n})" if summary.n < finished else "")


def _fmt_pm(values: Sequence[float]) -> str:
    """``mean ± t half-width`` (the reference table compares means with published numbers)."""
    if len(values) < 2:
        return _fmt_ci(values, len(values))
    stats = mean_ci(values)
    return f"{_fmt(stats.mean)} ± {_fmt(stats.half_width)}"


def _most_common(values: Iterable[str]) -> str:
    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else ""


def _distinct(values: Iterable[str]) -> str:
    present = sorted({v for v in values if v}, key=lambda v: (not _is_number(v), float(v) if _is_number(v) else 0, v))
    return ", ".join(present) or "—"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _short(reason: str, limit: int = 300) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "task"


def _unique(stem: str, used: set[str]) -> str:
    candidate, index = stem, 2
    while candidate.lower() in used:
        candidate, index = f"{stem}-{index}", index + 1
    used.add(candidate.lower())
    return candidate
