"""The report is logged to MLflow (SQLite) as one comparison run per experiment; a rebuild updates it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.reports.to_mlflow import TAG, comparison_experiment_id, log_comparison
from harness.reports.report import build_report
from harness.runs.tracking import Tracker

TASKS = {"agreement": ("accuracy", True, {"gru": 0.9, "lstm": 0.88, "vanilla": 0.6}),
         "adding": ("mse", False, {"gru": 0.01, "lstm": 0.012, "vanilla": 0.4}),
         "copy": ("cross_entropy", False, {"gru": 0.2, "lstm": 0.21, "vanilla": 0.69})}


def _fill(tracker: Tracker, seeds: range) -> None:
    for task, (metric, higher, means) in TASKS.items():
        for cell, mean in means.items():
            for seed in seeds:
                run_id = tracker.start_run(f"{cell}-{task}-s{seed}", {
                    "run_key": f"{cell}|{task}|{seed}", "cell": cell, "cell_name": cell, "task": task,
                    "seed": seed, "primary_metric": metric, "higher_is_better": higher}, {})
                tracker.log_metrics(run_id, {"val_loss": 1.0, "train_loss": 1.0}, step=0)
                tracker.log_metrics(run_id, {f"test_{metric}": mean * (1 + 0.01 * seed), "wall_time_s": 5.0})
                tracker.end_run(run_id, "FINISHED")


def test_comparison_run_holds_the_report_and_is_updated_not_duplicated(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "exp", tmp_path / "artifacts")
    _fill(tracker, range(2))
    paths = build_report("exp", tracker, tmp_path / "report")
    first = log_comparison(tracker, paths)
    again = build_report("exp", tracker, tmp_path / "report")  # the comparison run is not read as a grid run
    assert json.loads(again.summary.read_text())["cells"] == json.loads(paths.summary.read_text())["cells"]
    assert log_comparison(tracker, again) == first
    comparison = tracker.client.get_experiment_by_name("exp.comparison")
    assert comparison.experiment_id == comparison_experiment_id(tracker)
    runs = tracker.client.search_runs([comparison.experiment_id])
    assert [r.info.run_id for r in runs] == [first] and runs[0].data.tags[TAG] == "1"
    assert len(tracker.runs()) == 3 * 3 * 2  # the grid's experiment holds only the grid's runs
    run = tracker.client.get_run(first)
    assert run.info.status == "FINISHED"
    summary = json.loads(paths.summary.read_text())
    for cell, rank in summary["mean_rank"].items():
        assert run.data.metrics[f"mean_rank/{cell}"] == pytest.approx(rank)
    assert run.data.metrics["agreement/gru/accuracy"] == pytest.approx(summary["tasks"]["agreement"]["cells"]["gru"]["mean"])
    assert run.data.metrics["friedman_p"] == pytest.approx(summary["friedman"]["p"])
    names = {a.path for a in tracker.client.list_artifacts(first)}
    assert {"report.md", "index.html", "summary.json", "results.csv", "plots"} <= names
    plots = {a.path for a in tracker.client.list_artifacts(first, "plots")}
    assert "plots/verdict-critical_difference.png" in plots and "plots/verdict-forest.png" in plots
