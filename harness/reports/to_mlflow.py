"""The report written back to MLflow: one ``comparison`` run per experiment, updated on every rebuild.

A user who lives in ``mlflow ui`` finds the verdict there: report.md, index.html, summary.json,
results.csv and the plots as artifacts, each cell's mean rank and per-task primary metric as metrics.
The run lives in its own MLflow experiment, ``<experiment>.comparison``, beside the grid's, so that
every run of the grid's experiment stays a grid run for the scripts and tools that count them.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from harness.runs.tracking import TAG_PREFIX, Tracker

if TYPE_CHECKING:
    from harness.reports.report import ReportPaths

__all__ = ["log_comparison", "comparison_run_id", "comparison_experiment_id"]

#: The comparison run's tag; the report never reads a run carrying it as a grid run.
TAG = TAG_PREFIX + "comparison"
#: The comparison experiment's name is the grid experiment's plus this.
SUFFIX = ".comparison"


def comparison_experiment_id(tracker: Tracker) -> str:
    """The comparison experiment beside ``tracker``'s (created on first use), artifacts in a sub-folder."""
    main = tracker.client.get_experiment(tracker.experiment_id)
    name = f"{main.name}{SUFFIX}"
    found = tracker.client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = f"{main.artifact_location.rstrip('/')}/comparison" if main.artifact_location else None
    try:
        experiment_id = tracker.client.create_experiment(name, artifact_location=location)
    except Exception:  # another process created it in between: use theirs
        found = tracker.client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id
    tracker.client.set_experiment_tag(tracker.experiment_id, TAG_PREFIX + "comparison_experiment", name)
    return experiment_id


def comparison_run_id(tracker: Tracker, experiment_id: str) -> str | None:
    """The experiment's comparison run, or None before the first report."""
    runs = tracker.client.search_runs([experiment_id], filter_string=f"tags.`{TAG}` = '1'",
                                      max_results=1, order_by=["attributes.start_time ASC"])
    return runs[0].info.run_id if runs else None


def log_comparison(tracker: Tracker, paths: ReportPaths) -> str:
    """Create or update the comparison run with the report's files and numbers; returns its id."""
    from mlflow.entities import Metric, RunTag

    experiment_id = comparison_experiment_id(tracker)
    run_id = comparison_run_id(tracker, experiment_id)
    if run_id is None:
        run_id = tracker.client.create_run(experiment_id, run_name="comparison",
                                           tags={TAG: "1", "mlflow.note.content": "The report of this experiment "
                                                 "(harness report): its verdict, leaderboard and comparisons."}
                                           ).info.run_id
    else:
        tracker.client.update_run(run_id, status="RUNNING")
    board = paths.leaderboard
    now = int(time.time() * 1000)
    metrics = [Metric(f"mean_rank/{_key(c)}", r, now, 0) for c, r in board.mean_rank.items()]
    for task in board.tasks:
        for cell, summary in board.summaries[task.name].items():
            metrics.append(Metric(f"{_key(task.name)}/{_key(cell)}/{_key(task.primary_metric)}", summary.mean, now, 0))
    if board.friedman is not None:
        metrics.append(Metric("friedman_p", board.friedman.p, now, 0))
    tags = [RunTag(TAG_PREFIX + "correction", board.correction),
            RunTag(TAG_PREFIX + "leader", board.cells[0] if board.cells else "")]
    for start in range(0, len(metrics), 500):
        tracker.client.log_batch(run_id, metrics=metrics[start:start + 500], tags=tags if start == 0 else [])
    if not metrics:
        tracker.client.log_batch(run_id, tags=tags)
    for path in (paths.markdown, paths.html, paths.summary, paths.results_csv):
        tracker.client.log_artifact(run_id, str(path))
    for plot in paths.plots:
        tracker.client.log_artifact(run_id, str(plot), "plots")
    tracker.client.set_terminated(run_id, "FINISHED")
    return run_id


def _key(text: str) -> str:
    """An MLflow metric-name part: letters, digits and ``_ - . space`` only."""
    return re.sub(r"[^A-Za-z0-9_.\- ]", "_", text) or "_"
