"""T3m: ``kill -9`` of ``harness run`` in the middle of an epoch, then a rerun, resumes from the
mid-epoch checkpoint at the next batch (tagged ``resume=exact``) and ends with exactly the test
metrics and weights of a run that was never killed.

``checkpoint_minutes`` is tiny, so a checkpoint follows every training batch. Real processes and a
real SIGKILL; the reference run trains beside the killed one.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from harness_processes import mlflow_runs, run_harness, start_harness, tag, write_experiment

pytestmark = pytest.mark.slow  # real processes that train for seconds: run early under xdist, or skip with -m 'not slow'

NAME = "midkill"
STEPS_PER_EPOCH = 20  # train_size / batch_size
GRID: dict[str, Any] = {
    "cells": ["gru"],
    "tasks": [{"name": "copy", "options": {"train_size": 320, "validation_size": 32, "test_size": 32,
                                           "delay": 4, "copy_length": 3}}],
    "seeds": [5],
    "model": {"hidden_size": 8, "embedding_size": 4, "dropout": 0.3},
    "training": {"max_epochs": 2, "batch_size": 16, "lr_schedule": "step", "lr_step_epochs": 1},
    "checkpoint_minutes": 1e-7,  # fractional minutes: after every batch
    "device": "cpu",
    "output_dir": "out",
    "reports_dir": "reports",
}


def _finished_run(output_dir: Path) -> Any:
    finished = [r for r in mlflow_runs(output_dir, NAME) if r.info.status == "FINISHED"]
    assert len(finished) == 1, [r.info.status for r in mlflow_runs(output_dir, NAME)]
    return finished[0]


def test_kill_9_inside_an_epoch_then_rerun_resumes_at_the_next_batch_exactly(tmp_path: Path) -> None:
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    for directory in (reference_dir, killed_dir):
        directory.mkdir()
        write_experiment(directory, NAME, GRID)
    reference = start_harness(reference_dir, "run", f"{NAME}.yaml", label="reference")
    started = start_harness(killed_dir, "run", f"{NAME}.yaml", label="killed")
    folder = killed_dir / "out" / "checkpoints"
    deadline = time.monotonic() + 300
    while not any(int(p.name[5:15]) > STEPS_PER_EPOCH + 4 for p in folder.glob("*/step-*.ckpt.sha256")):
        assert started.process.poll() is None, started.finish().explain()
        assert time.monotonic() < deadline, started.stderr()
        time.sleep(0.005)
    started.signal(signal.SIGKILL)
    assert started.finish().returncode == -signal.SIGKILL
    newest = max(int(p.name[5:15]) for p in folder.glob("*/step-*.ckpt.sha256"))
    assert newest % STEPS_PER_EPOCH, f"killed at an epoch's end (step {newest}): lengthen the epoch"

    rerun = run_harness(killed_dir, "run", f"{NAME}.yaml")
    assert rerun.returncode == 0, rerun.explain()
    found = re.search(r"resumed from epoch 1 checkpoint \(mid-epoch after batch (\d+), exact", rerun.stderr)
    assert found, rerun.explain()
    assert int(found[1]) == newest - STEPS_PER_EPOCH
    assert "approximate" not in rerun.stderr
    finished_reference = reference.finish()
    assert finished_reference.returncode == 0, finished_reference.explain()

    expected, resumed = _finished_run(reference_dir / "out"), _finished_run(killed_dir / "out")
    assert tag(resumed, "resume") == "exact" and tag(resumed, "resumed_from_epoch") == "1"
    test_metrics = {k: v for k, v in expected.data.metrics.items() if k.startswith("test_")}
    assert test_metrics and test_metrics == {k: resumed.data.metrics[k] for k in test_metrics}  # exact
    assert tag(resumed, "model_sha256") == tag(expected, "model_sha256")  # the same weights, bit for bit
