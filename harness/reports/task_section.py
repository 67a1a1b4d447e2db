"""One task's section of the report: its cell table, distance groups, published numbers and the
sentences of "What the numbers say", each computed from the runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from harness.reports import plots as figures
from harness.reports.comparison_tables import comparison_blocks, wall_time_sentence
from harness.reports.document import (
    Block,
    Bullets,
    Cell,
    Heading,
    Image,
    Para,
    Strong,
    Table,
)
from harness.reports.intervals import metric_scale, summarize
from harness.reports.leaderboard import Leaderboard
from harness.reports.plots import GROUPED
from harness.reports.runs_view import ReportTask, distinct, is_number
from harness.reports.statistics import mean_ci
from harness.runs.tracking import TAG_PREFIX, Tracker

#: A cell whose longest-distance accuracy is within this of chance is called "at chance".
CHANCE_MARGIN = 0.05


def task_section(task: ReportTask, board: Leaderboard, tracker: Tracker, plot_dir: Path, stem: str,
                  colors: dict[str, str], plots: list[Path]) -> list[Block]:
    blocks: list[Block] = [Heading(2, f"Task: {task.name}"), Heading(3, "What the numbers say"),
                            Para(" ".join(_narrative(task, board))), Heading(3, "Cells"), _cell_table(task, board)]
    if task.unfinished():
        items = [f"{r.cell}, seed {r.seed}: {r.status}: {shorten(r.reason) or 'no reason recorded'}"
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


def _metric_notes(task: ReportTask) -> list[str]:
    """The task's notes (tags ``note.<key>``) of its finished runs; differing values are all listed."""
    values: dict[str, list[str]] = {}
    for run in task.runs:
        if not run.finished:
            continue
        for tag, value in run.record.tags.items():
            if tag.startswith(TAG_PREFIX + "note.") and value not in values.setdefault(tag, []):
                values[tag].append(value)
    return [f"{tag[len(TAG_PREFIX + 'note.'):]}: {' | '.join(found)}" for tag, found in sorted(values.items())]


def reference_section(task: ReportTask, reference: dict | None) -> list[Block]:
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
            row = [label, metric, "—" if value is None else format_number(value), format_spread(ours)]
            difference = sum(ours) / len(ours) - value if ours and value is not None else None
            row.append("—" if difference is None else f"{difference:+.4g}")
            if tolerance is not None:
                row.append("—" if difference is None else ("yes" if abs(difference) <= tolerance else "no"))
            rows.append(tuple(row))
    note = f"Published numbers: {reference['source']}."
    if tolerance is not None:
        note += f" Tolerance: ±{tolerance:g} (absolute)."
    return [Heading(3, "Ours vs published"), Para(note), Table(header, tuple(rows))]


def _cell_table(task: ReportTask, board: Leaderboard) -> Table:
    names = [k[len("test_"):] + (" ↑" if task.higher else " ↓") * (k == task.primary) for k in task.metrics]
    header = ("cell", *names, "finished", "not finished", "params", "hidden", "path", "wall time (s)")
    ranks = board.ranks.get(task.name, {})
    alone = [label for label, rank in ranks.items() if rank == 1]
    best = alone[0] if len(alone) == 1 else None  # bold only a winner the tests separate from the rest
    rows = []
    for label, runs in task.cells.items():
        done = task.finished(label)
        values = [format_interval(task.values(label, k), len(done), metric_scale(k, task.all_values(k)))
                  for k in task.metrics]
        wall = task.values(label, "wall_time_s")
        row: list[Cell] = [label, *values, str(len(done)), str(len(runs) - len(done)),
                            distinct(r.record.tag("param_count") for r in runs),
                            distinct(r.record.hidden_size for r in runs),
                            distinct(r.record.tag("execution_path") for r in done),
                            format_number(sum(wall) / len(wall)) if wall else "—"]
        if label == best:
            row[0], row[1] = Strong(label), Strong(str(row[1]))
        rows.append(tuple(row))
    return Table(header, tuple(rows))


def _group_table(task: ReportTask) -> Table:
    rows = tuple((label, *(format_interval(task.values(label, GROUPED + g), len(task.finished(label)), "bounded")
                           for g in task.groups))
                 for label in task.cells)
    return Table((task.group_name, *task.groups), rows)


def _narrative(task: ReportTask, board: Leaderboard) -> list[str]:
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


def _ranking_sentences(task: ReportTask, ranking: list[str], board: Leaderboard) -> list[str]:
    best, metric = ranking[0], task.primary[len("test_"):]
    vb = task.values(best, task.primary)
    scale = metric_scale(task.primary, task.all_values(task.primary))
    sentences = [f"Best mean by {metric} ({task.direction()}): {best} with {format_interval(vb, len(vb), scale)} over "
                 f"{len(vb)} seed(s), out of {len(ranking)} cell(s) with results."]
    if len(ranking) < 2:
        return sentences
    runner = ranking[1]
    vr = task.values(runner, task.primary)
    text = f"The runner-up is {runner} with {format_interval(vr, len(vr), scale)}."
    pair = next((c for c in board.comparisons_of(task.name) if {c.a, c.b} == {best, runner}), None)
    if pair is not None:
        p = "" if pair.p is None or math.isnan(pair.p) else f"{pair.test} p = {format_p(pair.p)}"
        adjusted = "" if pair.p_adjusted is None else f", adjusted {format_p(pair.p_adjusted)}"
        text += f" {best} vs {runner}: {pair.verdict()}" + (f" ({p}{adjusted})." if p else ".")
    return sentences + [text]


def _distance_sentences(task: ReportTask) -> list[str]:
    first, last = task.groups[0], task.groups[-1]
    pairs, at_chance = [], []
    for label in task.cells:
        short, long = task.values(label, GROUPED + first), task.values(label, GROUPED + last)
        if short and long:
            mean_long = sum(long) / len(long)
            pairs.append(f"{label} {format_number(sum(short) / len(short))} → {format_number(mean_long)}")
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


def _param_sentence(task: ReportTask) -> list[str]:
    counts = {}
    for label, runs in task.cells.items():
        numbers = [float(r.record.tag("param_count")) for r in runs if is_number(r.record.tag("param_count"))]
        if numbers:
            counts[label] = max(numbers)
    if len(set(counts.values())) < 2:
        return []
    low, high = min(counts, key=counts.__getitem__), max(counts, key=counts.__getitem__)
    spread = 100 * (counts[high] - counts[low]) / counts[low] if counts[low] else math.inf
    return [f"Recurrent parameter counts differ: from {format_number(counts[low])} ({low}) to {format_number(counts[high])} "
            f"({high}), {spread:.0f}% more."]


def format_number(value: float) -> str:
    return f"{value:.4g}"


def format_p(p: float) -> str:
    return f"{p:.3g}"


def format_interval(values: Sequence[float], finished: int, scale: str = "linear") -> str:
    """``mean [low, high]`` on the metric's scale; ``value (n=1)`` for one seed; the n when fewer than finished."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{format_number(values[0])} (n=1)"
    summary = summarize(values, scale)
    assert summary.interval is not None
    text = f"{format_number(summary.mean)} [{format_number(summary.interval[0])}, {format_number(summary.interval[1])}]"
    return text + (f" (n={summary.n})" if summary.n < finished else "")


def format_spread(values: Sequence[float]) -> str:
    """``mean ± t half-width`` (the reference table compares means with published numbers)."""
    if len(values) < 2:
        return format_interval(values, len(values))
    stats = mean_ci(values)
    return f"{format_number(stats.mean)} ± {format_number(stats.half_width)}"


def shorten(reason: str, limit: int = 300) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"
