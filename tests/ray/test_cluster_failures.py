"""A run whose training raises on a Ray worker ends as the local executor ends it; the grid goes on.

The diverging configuration of tests/runner/test_nonfinite.py: a ReLU vanilla RNN with learning
rate 100 and no clipping on ``adding`` (inf/NaN loss), beside a tanh one that finishes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from harness_processes import mlflow_client, mlflow_runs, run_harness, tag, write_experiment
from ray_cluster import LocalCluster

pytestmark = pytest.mark.slow

GRID = {
    "cells": [{"name": "vanilla", "options": {"activation": "tanh"}},
              {"name": "vanilla", "options": {"activation": "relu"}}],
    "tasks": [{"name": "adding", "options": {"train_size": 64, "validation_size": 32, "test_size": 32, "length": 12}}],
    "seeds": [0],
    "model": {"hidden_size": 8},
    "training": {"max_epochs": 1, "batch_size": 16, "learning_rate": 100.0, "gradient_clip_norm": None},
    "device": "cpu",
    "output_dir": "out",
    "reports_dir": "reports",
}


def test_a_nonfinite_run_on_ray_ends_failed_and_the_other_finishes(ray_cluster: LocalCluster,
                                                                   tmp_path: Path) -> None:
    write_experiment(tmp_path, "diverging", GRID)
    finished = run_harness(tmp_path, "run", "diverging.yaml", "--executor", "ray", "--ray-address",
                           ray_cluster.address, "--quiet")
    assert finished.returncode == 1, finished.explain()
    assert "diverging: 1 finished, 1 failed, 0 skipped" in finished.stdout, finished.explain()
    runs = {tag(r, "cell"): r for r in mlflow_runs(tmp_path / "out", "diverging")}
    bad, good = runs["vanilla(activation=relu)"], runs["vanilla(activation=tanh)"]
    assert (bad.info.status, good.info.status) == ("FAILED", "FINISHED")
    assert (tag(bad, "failure_reason") or "").startswith("nonfinite: training loss is ")
    artifacts = {a.path for a in mlflow_client(tmp_path / "out").list_artifacts(bad.info.run_id)}
    assert "error.txt" in artifacts  # the worker's traceback, recorded by the driver
    with sqlite3.connect(tmp_path / "out" / "ledger.db") as connection:
        statuses = sorted(s for (s,) in connection.execute("SELECT status FROM runs"))
    assert statuses == ["DONE", "FAILED"]
