"""``executor: local`` with ``resources``: runs packed in a local process pool, recorded by the driver.

On a 2-core machine ``resources: {cpus: 1}`` trains two runs at once. The grid (2 cells × 1 task ×
2 seeds) must end with every run FINISHED once in the ledger, MLflow and results.csv, with the test
metrics and weights of the same file trained one run at a time (no ``resources``). Ctrl-C of the
driver stops its pool processes and ends the runs in flight KILLED.
"""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from harness_processes import Finished, mlflow_runs, run_all, start_harness, tag, write_experiment

TINY_TASK = {"train_size": 64, "validation_size": 32, "test_size": 32, "max_distance": 6}
GRID: dict[str, Any] = {
    "cells": ["vanilla", "gru_simple"],
    "tasks": [{"name": "agreement", "options": TINY_TASK}],
    "seeds": [0, 1],
    "model": {"hidden_size": 8, "embedding_size": 4},
    "training": {"max_epochs": 3, "batch_size": 16},
    "device": "cpu",
    "output_dir": "out",
    "reports_dir": "reports",
}
#: Long enough (hundreds of epochs) to be interrupted while the pool trains.
LONG = {**GRID, "cells": ["vanilla"], "training": {"max_epochs": 500, "batch_size": 16},
        "tasks": [{"name": "agreement", "options": {**TINY_TASK, "train_size": 256}}]}

needs_two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="packing two runs needs 2 cores")


@dataclass
class Scenario:
    pool_dir: Path
    local_dir: Path
    pool_run: Finished
    local_run: Finished


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    pool_dir, local_dir = tmp_path_factory.mktemp("pool"), tmp_path_factory.mktemp("local")
    write_experiment(pool_dir, "grid", {**GRID, "resources": {"cpus": 1}})
    write_experiment(local_dir, "grid", GRID)
    pool_run, local_run = run_all((pool_dir, ["run", "grid.yaml"]), (local_dir, ["run", "grid.yaml", "--quiet"]))
    return Scenario(pool_dir, local_dir, pool_run, local_run)


def ledger(output_dir: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(output_dir / "ledger.db") as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute("SELECT * FROM runs ORDER BY position")]


def results(directory: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    with open(directory / "reports" / "grid" / "results.csv", newline="", encoding="utf-8") as handle:
        return {(row["cell"], row["task"], row["seed"]): row for row in csv.DictReader(handle)}


@needs_two_cores
def test_the_pool_trains_two_runs_at_once(scenario: Scenario) -> None:
    assert scenario.pool_run.returncode == 0, scenario.pool_run.explain()
    assert "2 run(s) at once on the CPU, 1 thread(s) each" in scenario.pool_run.stderr, scenario.pool_run.explain()
    rows = ledger(scenario.pool_dir / "out")
    # A run is claimed only when a pool slot is free, so overlapping ledger intervals (claimed → ended)
    # are runs that trained at the same time, in two different processes.
    intervals = sorted((r["started_at"], r["updated_at"]) for r in rows)
    assert any(later[0] < earlier[1] for earlier, later in zip(intervals, intervals[1:])), intervals
    workers = {tag(r, "worker") for r in mlflow_runs(scenario.pool_dir / "out", "grid")}
    assert len(workers) == 2, workers  # host:pid of the two slot processes, reused run after run


def test_every_run_finishes_once_in_ledger_mlflow_and_results(scenario: Scenario) -> None:
    assert scenario.pool_run.returncode == 0, scenario.pool_run.explain()
    assert "grid: 4 finished, 0 failed, 0 skipped" in scenario.pool_run.stdout, scenario.pool_run.explain()
    rows = ledger(scenario.pool_dir / "out")
    assert len(rows) == 4 and {r["status"] for r in rows} == {"DONE"} and {r["attempts"] for r in rows} == {1}
    runs = mlflow_runs(scenario.pool_dir / "out", "grid")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert {tag(r, "run_key") for r in runs} == {r["key"] for r in rows}
    assert {tag(r, "executor") for r in runs} == {"local"}
    assert {r["status"] for r in results(scenario.pool_dir).values()} == {"FINISHED"}


def test_metrics_and_weights_equal_one_at_a_time(scenario: Scenario) -> None:
    assert scenario.local_run.returncode == 0, scenario.local_run.explain()
    pooled, local = results(scenario.pool_dir), results(scenario.local_dir)
    assert set(pooled) == set(local) and len(local) == 4
    metric_columns = [c for c in next(iter(local.values())) if c.startswith("test_")]
    assert metric_columns
    for key, row in local.items():
        assert {c: pooled[key][c] for c in metric_columns} == {c: row[c] for c in metric_columns}, key
    digests = {tag(r, "run_key"): tag(r, "model_sha256") for r in mlflow_runs(scenario.pool_dir / "out", "grid")}
    assert digests == {tag(r, "run_key"): tag(r, "model_sha256") for r in mlflow_runs(scenario.local_dir / "out", "grid")}


def pool_processes(driver: int) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(driver).children(recursive=True)
                if "spawn_main" in " ".join(p.cmdline())]
    except psutil.Error:
        return []


def running(output_dir: Path) -> int:
    """Runs the driver has submitted (RUNNING, their MLflow run opened)."""
    try:
        with sqlite3.connect(f"file:{output_dir / 'ledger.db'}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute("SELECT COUNT(*) FROM runs WHERE status = 'RUNNING' "
                                      "AND mlflow_run_id IS NOT NULL").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


@needs_two_cores
def test_sigint_stops_the_pool_and_ends_the_runs_killed(tmp_path: Path) -> None:
    write_experiment(tmp_path, "long", {**LONG, "resources": {"cpus": 1}})
    started = start_harness(tmp_path, "run", "long.yaml", "--quiet")
    deadline = time.monotonic() + 120
    while running(tmp_path / "out") < 2 and started.process.poll() is None:  # both slots' runs submitted
        assert time.monotonic() < deadline, "no two runs submitted to the pool within 120 s"
        time.sleep(0.2)
    assert started.process.poll() is None, started.finish().explain()
    children = pool_processes(started.pid)
    assert len(children) == 2, children
    time.sleep(1)
    started.signal(signal.SIGINT)
    finished = started.finish(120)
    assert finished.returncode == 130, finished.explain()
    with sqlite3.connect(tmp_path / "out" / "ledger.db") as connection:
        rows = connection.execute("SELECT status, reason FROM runs").fetchall()
    assert rows == [("KILLED", "interrupted by SIGINT")] * 2
    runs = mlflow_runs(tmp_path / "out", "long")
    assert [r.info.status for r in runs] == ["KILLED"] * 2
    gone = psutil.wait_procs(children, timeout=30)[1]
    assert not gone, f"pool processes still alive after the driver stopped: {gone}"
