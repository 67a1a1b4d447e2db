"""A Ray task run again after its worker process was killed resumes from the run's checkpoint.

One run (gru on a small adding problem, 6 epochs), trained as one process and data-parallel
(``training.devices: 2``: the Ray worker is rank 0 and starts rank 1; only a node added with two
CPUs fits the task). Its training worker is SIGKILLed as soon as the epoch-1 checkpoint exists
under ``out/checkpoints/<run key>/``; Ray runs the task again, which resumes from the newest
verified checkpoint. The driver records the resume (the ``resumed_from_epoch`` tag, its log line)
and the run ends with exactly the test metrics and weights of the same run trained without
interruption (by the local executor, beside it).
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from harness_processes import Started, mlflow_client, mlflow_runs, start_harness, tag, write_experiment
from ray_cluster import RAY_TIMEOUT, LocalCluster, node_with_cpus, training_processes

pytestmark = pytest.mark.slow

NAME = "resumed"
STEPS_PER_EPOCH = 20  # train_size / batch_size
EPOCHS = 6
GRID = {
    "cells": ["gru"],
    "tasks": [{"name": "adding", "options": {"train_size": 320, "validation_size": 32, "test_size": 32,
                                             "length": 10}}],
    "seeds": [0],
    "model": {"hidden_size": 8},
    "training": {"max_epochs": EPOCHS, "batch_size": 16, "cpu_threads": 1},
    "device": "cpu",
    "output_dir": "out",
    "reports_dir": "reports",
}
#: The same run data-parallel over two CPU ranks (the global batch of 16 is 8 + 8), on fewer examples:
#: the ranks meet at every step, which on a busy 2-core machine waits for whichever was descheduled.
DATA_PARALLEL: dict[str, Any] = {**GRID, "training": {**GRID["training"], "devices": 2},
                                 "tasks": [{"name": "adding", "options": {**GRID["tasks"][0]["options"],
                                                                          "train_size": 64}}]}
STEPS_PER_EPOCH_DATA_PARALLEL = 4


def _kill_worker_after_first_checkpoint(directory: Path, started: Started, steps_per_epoch: int) -> int:
    """SIGKILL the Ray worker training the run once epoch 1's checkpoint is complete; the epochs on disk."""
    folder = directory / "out" / "checkpoints"
    started.wait_for_file(folder, f"*/step-{steps_per_epoch:010d}.ckpt.sha256", timeout=RAY_TIMEOUT)
    workers = training_processes()
    assert workers, "the checkpoint appeared but no Ray worker is training"
    for worker in workers:
        os.kill(worker.pid, signal.SIGKILL)
    steps = [int(p.name[5:15]) for p in folder.glob("*/step-*.ckpt.sha256")]
    assert max(steps) < EPOCHS * steps_per_epoch, "the run had finished before its worker was killed"
    return max(steps) // steps_per_epoch


@pytest.mark.parametrize("devices", [1, 2], ids=["one-process", "data-parallel"])
def test_a_killed_worker_s_task_resumes_from_its_checkpoint_and_equals_an_uninterrupted_run(
        ray_cluster: LocalCluster, tmp_path: Path, devices: int) -> None:
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    for directory in (reference_dir, killed_dir):
        directory.mkdir()
        write_experiment(directory, NAME, DATA_PARALLEL if devices > 1 else GRID)
    with node_with_cpus(ray_cluster, devices) if devices > 1 else contextlib.nullcontext():
        # The reference: the local executor, trained meanwhile.
        reference = start_harness(reference_dir, "run", f"{NAME}.yaml", "--quiet", label="reference")
        started = start_harness(killed_dir, "run", f"{NAME}.yaml", "--executor", "ray", "--ray-address",
                                ray_cluster.address, label="ray")
        killed_at = _kill_worker_after_first_checkpoint(
            killed_dir, started, STEPS_PER_EPOCH_DATA_PARALLEL if devices > 1 else STEPS_PER_EPOCH)
        finished = started.finish(RAY_TIMEOUT)
    finished_reference = reference.finish(RAY_TIMEOUT)
    assert finished_reference.returncode == 0, finished_reference.explain()
    assert finished.returncode == 0, finished.explain()
    assert "resumed from epoch " in finished.stderr, finished.explain()

    expected, = mlflow_runs(reference_dir / "out", NAME)
    resumed, = mlflow_runs(killed_dir / "out", NAME)
    assert resumed.info.status == "FINISHED"
    assert resumed.data.params.get("training.devices", "1") == str(devices)  # given only when not 1
    epoch = int(tag(resumed, "resumed_from_epoch"))
    assert killed_at <= epoch < EPOCHS and tag(resumed, "resume") == "exact"
    assert f"resumed from epoch {epoch} checkpoint" in finished.stderr
    test_metrics = {k: v for k, v in expected.data.metrics.items() if k.startswith("test_")}
    assert test_metrics and test_metrics == {k: resumed.data.metrics[k] for k in test_metrics}  # exact
    assert tag(resumed, "model_sha256") == tag(expected, "model_sha256")  # the same weights, bit for bit
    history = mlflow_client(killed_dir / "out").get_metric_history(resumed.info.run_id, "val_loss")
    assert sorted(m.step for m in history) == list(range(EPOCHS))  # restored epochs replayed once each
    checkpoints = killed_dir / "out" / "checkpoints"
    assert not checkpoints.exists() or not any(checkpoints.iterdir())  # discarded once the run was DONE


def test_a_rerun_after_the_driver_died_resumes_from_the_checkpoint(ray_cluster: LocalCluster,
                                                                   tmp_path: Path) -> None:
    """``kill -9`` of the driver (Ray then stops its task): the next ``harness run --executor ray`` claims
    the run again and its task resumes from the checkpoint the killed one left."""
    write_experiment(tmp_path, NAME, GRID)
    started = start_harness(tmp_path, "run", f"{NAME}.yaml", "--executor", "ray", "--ray-address",
                            ray_cluster.address, label="driver")
    started.wait_for_file(tmp_path / "out" / "checkpoints", f"*/step-{STEPS_PER_EPOCH:010d}.ckpt.sha256",
                          timeout=RAY_TIMEOUT)
    started.signal(signal.SIGKILL)
    assert started.finish().returncode == -signal.SIGKILL
    rerun = start_harness(tmp_path, "run", f"{NAME}.yaml", "--executor", "ray", "--ray-address",
                          ray_cluster.address, label="rerun").finish(RAY_TIMEOUT)
    assert rerun.returncode == 0, rerun.explain()
    runs = {r.info.status: r for r in mlflow_runs(tmp_path / "out", NAME)}
    assert sorted(runs) == ["FINISHED", "KILLED"], rerun.explain()
    resumed = runs["FINISHED"]
    epoch = int(tag(resumed, "resumed_from_epoch"))
    assert 1 <= epoch < EPOCHS and tag(resumed, "resumed_from_run") == runs["KILLED"].info.run_id
    assert f"resumed from epoch {epoch} checkpoint" in rerun.stderr, rerun.explain()
    history = mlflow_client(tmp_path / "out").get_metric_history(resumed.info.run_id, "val_loss")
    assert sorted(m.step for m in history) == list(range(EPOCHS))
