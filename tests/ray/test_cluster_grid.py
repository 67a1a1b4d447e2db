"""The done-when scenario: a 2 cells × 2 tasks × 3 seeds grid on a 3-node Ray cluster, faults included.

``harness run --executor ray --ray-address`` trains the grid while one worker node is removed
(a run training on it) and a training worker process is killed with SIGKILL; Ray runs the lost
tasks again. It must end with 12 FINISHED runs, one per key, in the ledger, MLflow and
results.csv, with the same metrics and weights as the local executor's run of the same file.
"""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ray_cluster import RAY_TIMEOUT, LocalCluster, training_processes, wait_until
from harness_processes import Finished, mlflow_client, mlflow_runs, start_harness, tag, write_experiment

pytestmark = pytest.mark.slow

TINY_TASK = {"train_size": 256, "validation_size": 32, "test_size": 32}
GRID: dict[str, Any] = {
    "cells": ["vanilla", "gru_simple"],
    "tasks": [{"name": "agreement", "options": {**TINY_TASK, "max_distance": 6}},
              {"name": "copy", "options": {**TINY_TASK, "delay": 3, "copy_length": 3}}],
    "seeds": [0, 1, 2],
    "model": {"hidden_size": 8, "embedding_size": 4},
    "training": {"max_epochs": 2, "batch_size": 16},
    "device": "cpu",
    "output_dir": "out",
    "reports_dir": "reports",
}


@dataclass
class Scenario:
    ray_dir: Path
    local_dir: Path
    ray_run: Finished
    local_run: Finished
    removed_while_training: bool  # a run was training on the node when it was removed
    killed_while_training: bool  # the SIGKILLed worker process was training a run


@pytest.fixture(scope="module")
def scenario(ray_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    ray_dir, local_dir = tmp_path_factory.mktemp("ray"), tmp_path_factory.mktemp("local")
    for folder in (ray_dir, local_dir):
        write_experiment(folder, "grid", GRID)
    local = start_harness(local_dir, "run", "grid.yaml", "--quiet")
    started = start_harness(ray_dir, "run", "grid.yaml", "--executor", "ray", "--ray-address", ray_cluster.address,
                            "--quiet")
    victim = ray_cluster.workers[0]
    victim_raylet = ray_cluster.raylet_pid(victim)
    others = [pid for pid in map(ray_cluster.raylet_pid, ray_cluster.nodes()) if pid != victim_raylet]
    # First a worker process killed mid-run (on a node that stays), then a node removed mid-run.
    busy = wait_until(lambda: [p for pid in others for p in training_processes(pid)]
                      or started.process.poll() is not None, "a run training on a node that stays")
    killed_while_training = busy is not True
    if killed_while_training:
        os.kill(busy[0].pid, signal.SIGKILL)
    wait_until(lambda: training_processes(victim_raylet) or started.process.poll() is not None,
               "a run training on the node to remove")
    removed_while_training = bool(training_processes(victim_raylet))
    ray_cluster.cluster.remove_node(victim)
    ray_cluster.workers.remove(victim)
    return Scenario(ray_dir, local_dir, started.finish(RAY_TIMEOUT * 2), local.finish(RAY_TIMEOUT * 2),
                    removed_while_training, killed_while_training)


def ledger(output_dir: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(output_dir / "ledger.db") as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute("SELECT * FROM runs ORDER BY position")]


def results(directory: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    with open(directory / "reports" / "grid" / "results.csv", newline="", encoding="utf-8") as handle:
        return {(row["cell"], row["task"], row["seed"]): row for row in csv.DictReader(handle)}


def test_faults_struck_while_runs_were_training(scenario: Scenario) -> None:
    assert scenario.removed_while_training, "the node was removed before any run trained on it"
    assert scenario.killed_while_training, "the grid ended before a worker process could be killed"


def test_the_grid_finishes_every_run(scenario: Scenario) -> None:
    assert scenario.ray_run.returncode == 0, scenario.ray_run.explain()
    assert "grid: 12 finished, 0 failed, 0 skipped" in scenario.ray_run.stdout, scenario.ray_run.explain()
    assert scenario.local_run.returncode == 0, scenario.local_run.explain()


def test_ledger_holds_one_done_row_per_key_attempted_once(scenario: Scenario) -> None:
    rows = ledger(scenario.ray_dir / "out")
    assert len(rows) == 12 and len({r["key"] for r in rows}) == 12
    assert {r["status"] for r in rows} == {"DONE"}
    assert {r["attempts"] for r in rows} == {1}  # Ray's retries are not new attempts of the driver
    assert {r["key"] for r in rows} == {r["key"] for r in ledger(scenario.local_dir / "out")}


def test_mlflow_holds_exactly_one_finished_run_per_key(scenario: Scenario) -> None:
    runs = mlflow_runs(scenario.ray_dir / "out", "grid")
    assert len(runs) == 12
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len({tag(r, "run_key") for r in runs}) == 12
    assert {tag(r, "executor") for r in runs} == {"ray"}
    client = mlflow_client(scenario.ray_dir / "out")
    for run in runs:  # the per-epoch history came back from the worker and was replayed
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [0, 1]


def test_results_and_weights_equal_the_local_executors(scenario: Scenario) -> None:
    on_ray, local = results(scenario.ray_dir), results(scenario.local_dir)
    assert set(on_ray) == set(local) and len(on_ray) == 12
    metric_columns = [c for c in next(iter(local.values())) if c.startswith("test_")]
    assert metric_columns
    for key, row in local.items():
        assert on_ray[key]["status"] == "FINISHED"
        assert {c: on_ray[key][c] for c in metric_columns} == {c: row[c] for c in metric_columns}, key
    digests = {tag(r, "run_key"): tag(r, "model_sha256") for r in mlflow_runs(scenario.ray_dir / "out", "grid")}
    local_runs = mlflow_runs(scenario.local_dir / "out", "grid")
    assert digests == {tag(r, "run_key"): tag(r, "model_sha256") for r in local_runs}
