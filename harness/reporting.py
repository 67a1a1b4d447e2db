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
from harness.report_document import (Block, Bullets, Cell, Heading, Image, Para, Strong, Table, render_html,
                                     render_markdown)
from harness.report_plots import CHANCE, GROUPED
from harness.statistics import mean_ci, welch
from harness.tracking import TAG_PREFIX, RunRecord, Tracker, latest_per_key

__all__ = ["ReportPaths", "TaskExtras", "build_report"]

GRU_FAMILY = ("gru", "gru_simple")
LSTM_FAMILY = ("lstm", "peephole_lstm")
VANILLA = "vanilla"
#: A cell whose longest-distance accuracy is within this of chance is called "at chance".
CHANCE_MARGIN = 0.05
#: Significance level the comparison verdicts use; the p-values are printed regardless.
ALPHA = 0.05
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


#: Extra blocks for a task's section: ``(task label, plot folder, file stem) -> blocks`` (e.g. tuning).
TaskExtras = Callable[[str, Path, str], list[Block]]


def build_report(experiment_name: str, tracker: Tracker, report_dir: Path, *,
                 experiment_file: str | None = None, note: str = "",
                 task_extras: TaskExtras | None = None) -> ReportPaths:
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
    Returns:
        The paths written. Rebuilding gives identical files apart from the timestamp.
    """
    all_records = tracker.runs()
    runs = sorted((_Run(r) for r in latest_per_key(all_records)), key=_Run.sort_key)
    report_dir = Path(report_dir)
    plot_dir = report_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    csv_path = report_dir / "results.csv"
    _write_csv(csv_path, runs)

    labels = sorted({r.cell for r in runs})
    colors = figures.colors(labels)
    blocks = _header(experiment_name, experiment_file, note, runs, len(all_records) - len(runs))
    plots: list[Path] = []
    used: set[str] = set()
    reference = json.loads(tracker.experiment_tag("reference") or "null")
    for name in sorted({r.task for r in runs}):
        task = _Task(name, [r for r in runs if r.task == name])
        stem = _unique(_slug(name), used)
        blocks += _task_section(task, tracker, plot_dir, stem, colors, plots)
        blocks += _reference_section(task, reference)
        if task_extras is not None:
            extra = task_extras(name, plot_dir, stem)
            plots += [report_dir / b.path for b in extra if isinstance(b, Image)]
            blocks += extra
    figures.remove_stale_plots(plot_dir, plots)

    title = f"Report: {experiment_name}"
    md_path, html_path = report_dir / "report.md", report_dir / "index.html"
    md_path.write_text(render_markdown(title, blocks), encoding="utf-8")
    html_path.write_text(render_html(title, blocks, report_dir), encoding="utf-8")
    return ReportPaths(report_dir, csv_path, md_path, html_path, tuple(plots))


# ---------------------------------------------------------------------------
# Runs and tasks as the report sees them.
# ---------------------------------------------------------------------------


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
        return [label for label, v in sorted((s for s in scored if s[1]), key=lambda s: sign * mean_ci(s[1]).mean)]

    def direction(self) -> str:
        return "higher is better" if self.higher else "lower is better"


# ---------------------------------------------------------------------------
# results.csv
# ---------------------------------------------------------------------------


def _write_csv(path: Path, runs: Sequence[_Run]) -> None:
    test_keys = sorted({k for r in runs for k in r.metrics if k.startswith("test_")})
    columns = ["cell", "task", "seed", "status", "failure_reason", *test_keys, "param_count", "hidden_size",
               "execution_path", *RUN_METRICS, "cell_name", "family", "memory_measure", "run_id", "path"]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for run in runs:
            tags = {"cell": run.cell, "task": run.task, "seed": run.seed, "status": run.status,
                    "failure_reason": run.reason, "run_id": run.run_id, "path": run.record.artifact_uri,
                    "hidden_size": run.record.hidden_size}
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
    method = ("Each value is the mean over seeds of the finished runs ± the half-width of its 95% Student-t "
              "interval; a single seed shows its value and n=1. Runs that did not finish are listed with their "
              "reason and never averaged in. Comparisons use Welch's t-test on the primary metric.")
    blocks: list[Block] = [Bullets(tuple(items)), Para(method)]
    if not runs:
        blocks.append(Para("No runs are recorded for this experiment yet."))
    return blocks


def _task_section(task: _Task, tracker: Tracker, plot_dir: Path, stem: str,
                  colors: dict[str, str], plots: list[Path]) -> list[Block]:
    blocks: list[Block] = [Heading(2, f"Task: {task.name}"), Heading(3, "What the numbers say"),
                            Para(" ".join(_narrative(task))), Heading(3, "Cells"), _cell_table(task)]
    if task.unfinished():
        items = [f"{r.cell}, seed {r.seed}: {r.status}: {_short(r.reason) or 'no reason recorded'}"
                 for r in task.unfinished()]
        blocks += [Para("Runs that did not finish (excluded from every mean):"), Bullets(tuple(items))]
    blocks += _comparisons(task)
    notes = _metric_notes(task)
    if notes:
        blocks += [Heading(3, "How the metrics were computed"), Bullets(tuple(notes))]
    if task.groups:
        blocks += [Heading(3, "Accuracy by distance"), _group_table(task)]
    for kind, plot in (("learning_curves", figures.plot_learning_curves),
                       ("accuracy_by_distance", figures.plot_groups),
                       ("quality_vs_time", figures.plot_quality_vs_time)):
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
            row = [label, metric, "—" if value is None else _fmt(value), _fmt_ci(ours, len(ours))]
            difference = mean_ci(ours).mean - value if ours and value is not None else None
            row.append("—" if difference is None else f"{difference:+.4g}")
            if tolerance is not None:
                row.append("—" if difference is None else ("yes" if abs(difference) <= tolerance else "no"))
            rows.append(tuple(row))
    note = f"Published numbers: {reference['source']}."
    if tolerance is not None:
        note += f" Tolerance: ±{tolerance:g} (absolute)."
    return [Heading(3, "Ours vs published"), Para(note), Table(header, tuple(rows))]


def _cell_table(task: _Task) -> Table:
    names = [k[len("test_"):] + (" ↑" if task.higher else " ↓") * (k == task.primary) for k in task.metrics]
    header = ("cell", *names, "finished", "not finished", "params", "hidden", "path", "wall time (s)")
    best = (task.ranking() or [None])[0]
    rows = []
    for label, runs in task.cells.items():
        done = task.finished(label)
        values = [_fmt_ci(task.values(label, k), len(done)) for k in task.metrics]
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
    rows = tuple((label, *(_fmt_ci(task.values(label, GROUPED + g), len(task.finished(label))) for g in task.groups))
                 for label in task.cells)
    return Table(("cell", *task.groups), rows)


def _comparisons(task: _Task) -> list[Block]:
    labels = list(task.cells)
    gru = [c for c in labels if task.cell_name(c) in GRU_FAMILY]
    lstm = [c for c in labels if task.cell_name(c) in LSTM_FAMILY]
    vanilla = [c for c in labels if task.cell_name(c) == VANILLA]
    sections = [("GRU vs LSTM", [(g, s) for g in gru for s in lstm]),
                ("Each cell vs vanilla", [(c, v) for v in vanilla for c in labels if c not in vanilla])]
    blocks: list[Block] = []
    for title, pairs in sections:
        if not pairs:
            continue
        blocks.append(Heading(3, title))
        if not task.primary:
            blocks.append(Para(f"No finished run logged the primary metric test_{task.primary_name}."))
            continue
        blocks.append(Para(f"Primary metric {task.primary} ({task.direction()}); difference = mean A − mean B "
                            f"with its 95% Welch interval; Welch's t-test (two-sided); a positive Hedges' g "
                            f"means A is larger. n counts finished seeds."))
        header = ("A", "B", "n A", "n B", "mean A − B", "95% CI", "p (Welch)", "Hedges' g", "verdict")
        blocks.append(Table(header, tuple(_comparison_row(task, a, b) for a, b in pairs)))
    return blocks


def _comparison_row(task: _Task, a: str, b: str) -> tuple[str, ...]:
    va, vb = task.values(a, task.primary), task.values(b, task.primary)
    diff = _fmt(sum(va) / len(va) - sum(vb) / len(vb)) if va and vb else "—"
    if len(va) < 2 or len(vb) < 2:
        return a, b, str(len(va)), str(len(vb)), diff, "—", "—", "—", "n too small for a test: fewer than 2 finished seeds on a side"
    result = welch(va, vb)
    if math.isnan(result.p):
        verdict = "no variance on either side: test undefined"
    elif result.p < ALPHA:
        better = a if (result.difference > 0) == task.higher else b
        verdict = f"{better} better, significant at {ALPHA}"
    else:
        verdict = f"no significant difference at {ALPHA}"
    ci = f"({_fmt(result.ci_low)}, {_fmt(result.ci_high)})" if not math.isnan(result.ci_low) else "—"
    return (a, b, str(result.n_a), str(result.n_b), diff, ci, _fmt_p(result.p),
            "—" if math.isnan(result.hedges_g) else f"{result.hedges_g:.3g}", verdict)


# ---------------------------------------------------------------------------
# "What the numbers say": sentences computed from the data.
# ---------------------------------------------------------------------------


def _narrative(task: _Task) -> list[str]:
    done = sum(r.finished for r in task.runs)
    excluded = len(task.runs) - done
    tail = [f"{excluded} run(s) did not finish and are excluded from every mean."] if excluded else []
    if not done:
        return ["No run of this task finished, so there is nothing to compare.", *tail]
    ranking = task.ranking()
    if not ranking:
        return [f"No finished run logged the primary metric test_{task.primary_name}.", *tail]
    sentences = _ranking_sentences(task, ranking)
    if task.groups:
        sentences += _distance_sentences(task)
    sentences += _param_sentence(task)
    return sentences + tail


def _ranking_sentences(task: _Task, ranking: list[str]) -> list[str]:
    best, metric = ranking[0], task.primary[len("test_"):]
    vb = task.values(best, task.primary)
    sentences = [f"Best by {metric} ({task.direction()}): {best} with {_fmt_ci(vb, len(vb))} over "
                 f"{len(vb)} seed(s), out of {len(ranking)} cell(s) with results."]
    if len(ranking) < 2:
        return sentences
    runner = ranking[1]
    vr = task.values(runner, task.primary)
    text = f"The runner-up is {runner} with {_fmt_ci(vr, len(vr))}."
    if len(vb) < 2 or len(vr) < 2:
        text += " With a single seed on a side there is no interval to compare, so the ranking is not established."
    else:
        b, r = mean_ci(vb), mean_ci(vr)
        overlap = b.low <= r.high and r.low <= b.high
        text += (" Their 95% intervals overlap, so more seeds are needed to separate them." if overlap
                 else " Their 95% intervals do not overlap.")
        p = welch(vb, vr).p
        if not math.isnan(p):
            text += f" Welch's test: p = {_fmt_p(p)}."
    return sentences + [text]


def _distance_sentences(task: _Task) -> list[str]:
    first, last = task.groups[0], task.groups[-1]
    pairs, at_chance = [], []
    for label in task.cells:
        short, long = task.values(label, GROUPED + first), task.values(label, GROUPED + last)
        if short and long:
            mean_long = sum(long) / len(long)
            pairs.append(f"{label} {_fmt(sum(short) / len(short))} → {_fmt(mean_long)}")
            if abs(mean_long - CHANCE) <= CHANCE_MARGIN:
                at_chance.append(label)
    if not pairs:
        return []
    text = f"Mean accuracy from the shortest distance bucket ({first}) to the longest ({last}): {'; '.join(pairs)}."
    if at_chance:
        verb = "is" if len(at_chance) == 1 else "are"
        text += f" At the longest distance {', '.join(at_chance)} {verb} within {CHANCE_MARGIN} of chance ({CHANCE})."
    else:
        text += f" No cell is within {CHANCE_MARGIN} of chance ({CHANCE}) at the longest distance."
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


def _fmt_ci(values: Sequence[float], finished: int) -> str:
    """``mean ± half-width``; ``value (n=1)`` for one seed; the n when fewer seeds than finished runs."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{_fmt(values[0])} (n=1)"
    stats = mean_ci(values)
    text = f"{_fmt(stats.mean)} ± {_fmt(stats.half_width)}"
    return text + (f" (n={stats.n})" if stats.n < finished else "")


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
