"""The runs of a report as it reads them: one :class:`ReportRun` per MLflow run (latest attempt per key),
grouped into one :class:`ReportTask` per task with its primary metric and direction; and results.csv."""

from __future__ import annotations

import csv
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.reports.intervals import metric_scale
from harness.reports.leaderboard import TaskScores
from harness.reports.plots import CHANCE, GROUPED
from harness.runs.tracking import RunRecord

RUN_METRICS = ("wall_time_s", "train_tokens_per_s", "peak_memory_mb", "epochs")
STATUS_ORDER = ("FINISHED", "FAILED", "KILLED", "RUNNING")


def natural_order(label: str) -> list[tuple[int, float | str]]:
    """Sort key that orders a sweep's variants by value: agreement[max_distance=8] before [max_distance=24]."""
    return [(0, float(part)) if index % 2 else (1, part)
            for index, part in enumerate(re.split(r"(\d+(?:\.\d+)?)", label)) if part]


class ReportRun:
    """A RunRecord read through the layout of :mod:`harness.runs.tracking`."""

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
class ReportTask:
    """One task's runs, grouped by cell label, with its primary metric and direction."""

    name: str
    runs: list[ReportRun]
    cells: dict[str, list[ReportRun]] = field(init=False)

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
        self.group_name = most_common(r.record.tag("group_name") for r in self.runs) or "distance"
        chance = most_common(r.record.tag("chance") for r in self.runs)
        self.chance = float(chance) if is_number(chance) else CHANCE
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

    def finished(self, label: str) -> list[ReportRun]:
        return [r for r in self.cells[label] if r.finished]

    def unfinished(self) -> list[ReportRun]:
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


def write_results_csv(path: Path, runs: Sequence[ReportRun], tasks: dict[str, ReportTask]) -> None:
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


def most_common(values: Iterable[str]) -> str:
    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else ""


def distinct(values: Iterable[str]) -> str:
    present = sorted({v for v in values if v}, key=lambda v: (not is_number(v), float(v) if is_number(v) else 0, v))
    return ", ".join(present) or "—"


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
