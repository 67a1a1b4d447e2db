"""T1/T3: ``kill -9`` of ``harness run`` at epoch 5 of 10, then a rerun, resumes from the epoch-5
checkpoint and ends with exactly the test metrics and weights of a run that was never killed.

Real processes and a real SIGKILL; the reference run trains beside the killed one.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from harness_processes import (assert_resumed_as_uninterrupted, mlflow_client, mlflow_runs, run_harness, start_harness,
                               tag, write_experiment)

pytestmark = pytest.mark.slow  # real processes that train for seconds: run early under xdist, or skip with -m 'not slow'

NAME = "killed"
STEPS_PER_EPOCH = 10  # train_size / batch_size
GRID: dict[str, Any] = {
    "cells": ["gru"],
    "tasks": [{"name": "copy", "options": {"train_size": 160, "validation_size": 32, "test_size": 32,
                                           "delay": 6, "copy_length": 4}}],
    "seeds": [3],
    "model": {"hidden_size": 8, "embedding_size": 4, "dropout": 0.3},
    "training": {"max_epochs": 10, "batch_size": 16, "lr_schedule": "step", "lr_step_epochs": 3},
    "device": "cpu",
    "output_dir": "out",
    "reports_dir": "reports",
}


def _kill_after_epoch(directory: Path, epoch: int) -> int:
    """Start the grid, SIGKILL it as soon as epoch ``epoch``'s checkpoint is complete; the newest epoch on disk."""
    started = start_harness(directory, "run", f"{NAME}.yaml", label="killed")
    started.wait_for_file(directory / "out" / "checkpoints", f"*/step-{epoch * STEPS_PER_EPOCH:010d}.ckpt.sha256")
    started.signal(signal.SIGKILL)
    assert started.finish().returncode == -signal.SIGKILL
    steps = [int(p.name[5:15]) for p in (directory / "out" / "checkpoints").glob("*/step-*.ckpt.sha256")]
    return max(steps) // STEPS_PER_EPOCH


def _finished_run(output_dir: Path) -> Any:
    finished = [r for r in mlflow_runs(output_dir, NAME) if r.info.status == "FINISHED"]
    assert len(finished) == 1, [r.info.status for r in mlflow_runs(output_dir, NAME)]
    return finished[0]


def test_kill_9_at_epoch_5_then_rerun_resumes_and_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    for directory in (reference_dir, killed_dir):
        directory.mkdir()
        write_experiment(directory, NAME, GRID)
    reference = start_harness(reference_dir, "run", f"{NAME}.yaml", label="reference")
    newest_epoch = _kill_after_epoch(killed_dir, 5)
    assert newest_epoch >= 5
    rerun = run_harness(killed_dir, "run", f"{NAME}.yaml")
    finished_reference = reference.finish()
    assert finished_reference.returncode == 0, finished_reference.explain()

    expected, resumed = _finished_run(reference_dir / "out"), _finished_run(killed_dir / "out")
    assert_resumed_as_uninterrupted(rerun, newest_epoch, 10, expected, resumed)
    # The resumed attempt is a new MLflow run linked to the killed one, which reconcile closed as KILLED.
    killed = [r for r in mlflow_runs(killed_dir / "out", NAME) if r.info.status == "KILLED"]
    assert len(killed) == 1 and tag(resumed, "resumed_from_run") == killed[0].info.run_id
    assert tag(resumed, "resumed_from_epoch") == str(newest_epoch)
    history = mlflow_client(killed_dir / "out").get_metric_history(resumed.info.run_id, "val_loss")
    assert sorted(m.step for m in history) == list(range(10))
    assert not (killed_dir / "out" / "checkpoints").exists() or not any((killed_dir / "out" / "checkpoints").iterdir())
