"""Reproduction presets: the published numbers a file carries appear next to ours in the report."""

from __future__ import annotations

import json

import pytest

from harness.core.errors import ConfigError
from harness.experiment import load_experiment
from harness.reports.report import build_report
from harness.reports.statistics import mean_ci
from harness.runs.tracking import Tracker

REFERENCE = {"source": "Someone et al. 2014, Table 9", "metrics": ["test_nll"], "tolerance": 0.1,
             "results": {"jsb": {"gru": [8.54], "lstm": [8.67], "tanh": [None]}}}


def test_report_shows_ours_vs_published_with_tolerance(tmp_path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "preset", tmp_path / "artifacts")
    tracker.set_experiment_tag("reference", json.dumps(REFERENCE))
    ours = {"gru": [8.50, 8.56], "lstm": [8.90, 8.94]}
    for cell, values in ours.items():
        for seed, value in enumerate(values):
            run_id = tracker.start_run(f"{cell}-{seed}", {
                "run_key": f"{cell}{seed}", "cell": cell, "cell_name": cell, "task": "jsb", "seed": seed,
                "primary_metric": "nll", "higher_is_better": False}, {})
            tracker.log_metrics(run_id, {"test_nll": value})
            tracker.end_run(run_id, "FINISHED")
    text = build_report("preset", tracker, tmp_path / "report").markdown.read_text()
    assert "### Ours vs published" in text
    assert "Someone et al. 2014, Table 9" in text and "Tolerance: ±0.1" in text
    gru = mean_ci(ours["gru"])
    assert f"| gru | test_nll | 8.54 | {gru.mean:.4g} ± {gru.half_width:.4g} | {gru.mean - 8.54:+.4g} | yes |" in text
    lstm_line = next(line for line in text.splitlines() if line.startswith("| lstm | test_nll | 8.67 |"))
    assert lstm_line.endswith("| +0.25 | no |")
    # A published row we did not run, and a cell without a published number.
    assert "| tanh | test_nll | — | — | — | — |" in text


def test_reference_values_must_match_the_metrics(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "# bad reference: harness run bad.yaml\n"
        "cells: [gru]\n"
        "tasks: [agreement]\n"
        "seeds: [0]\n"
        "reference:\n"
        "  source: paper\n"
        "  metrics: [test_nll, test_train_nll]\n"
        "  results: {agreement: {gru: [1.0]}}\n"
    )
    with pytest.raises(ConfigError, match=r"bad.yaml:5: reference: .*results.agreement.gru has 1 values for 2"):
        load_experiment(path)
