"""Ctrl-C or SIGTERM of ``harness run --executor ray``: the driver cancels its Ray tasks and records them KILLED."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest
from harness_processes import mlflow_runs, run_harness, start_harness, tag, write_experiment
from ray_cluster import RAY_TIMEOUT, LocalCluster, training_processes, wait_until

pytestmark = pytest.mark.slow

#: Two runs long enough (hundreds of epochs) to be interrupted while they train.
LONG = {
    "cells": ["vanilla"],
    "tasks": [{"name": "agreement", "options": {"train_size": 256, "validation_size": 32, "test_size": 32}}],
    "seeds": [0, 1],
    "model": {"hidden_size": 8, "embedding_size": 4},
    "training": {"max_epochs": 500, "batch_size": 16},
    "device": "cpu",
    "output_dir": "out",
    "reports_dir": "reports",
}


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_cancels_the_tasks_and_ends_every_run_killed(ray_cluster: LocalCluster, tmp_path: Path,
                                                              number: signal.Signals) -> None:
    write_experiment(tmp_path, "long", LONG)
    started = start_harness(tmp_path, "run", "long.yaml", "--executor", "ray", "--ray-address", ray_cluster.address)
    wait_until(lambda: training_processes() or started.process.poll() is not None, "a run training")
    assert started.process.poll() is None, started.finish().explain()
    started.signal(number)
    finished = started.finish(RAY_TIMEOUT)
    assert finished.returncode == 128 + number, finished.explain()
    with sqlite3.connect(tmp_path / "out" / "ledger.db") as connection:
        rows = connection.execute("SELECT status, reason FROM runs").fetchall()
    assert rows == [("KILLED", f"interrupted by {number.name}")] * 2
    runs = mlflow_runs(tmp_path / "out", "long")
    assert [r.info.status for r in runs] == ["KILLED"] * 2
    assert {tag(r, "failure_reason") for r in runs} == {f"interrupted by {number.name}"}
    # The tasks were cancelled, not left training on the cluster.
    wait_until(lambda: not training_processes(), "no run still training after the driver stopped", timeout=60)


def test_a_killed_driver_leaves_no_training_and_the_next_run_reconciles(ray_cluster: LocalCluster,
                                                                        tmp_path: Path) -> None:
    write_experiment(tmp_path, "long", LONG)
    started = start_harness(tmp_path, "run", "long.yaml", "--executor", "ray", "--ray-address", ray_cluster.address)
    wait_until(lambda: training_processes() or started.process.poll() is not None, "a run training")
    started.signal(signal.SIGKILL)
    assert started.finish().returncode == -signal.SIGKILL
    # Ray stops a dead driver's tasks; nothing trains on for nobody.
    wait_until(lambda: not training_processes(), "no run still training after the driver died", timeout=120)
    # The next run (a shorter grid: other keys) closes the dead driver's runs before its own.
    rerun = run_harness(tmp_path, "run", "long.yaml", "--executor", "ray", "--ray-address", ray_cluster.address,
                        "--set", "training.max_epochs=1", "--quiet")
    assert rerun.returncode == 0, rerun.explain()
    with sqlite3.connect(tmp_path / "out" / "ledger.db") as connection:
        statuses = sorted(s for (s,) in connection.execute("SELECT status FROM runs"))
    assert statuses == ["DONE", "DONE", "KILLED", "KILLED"]
    runs = mlflow_runs(tmp_path / "out", "long")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED", "KILLED", "KILLED"]
    assert sorted(tag(r, "reconciled") or "" for r in runs) == ["", "", "1", "1"]
