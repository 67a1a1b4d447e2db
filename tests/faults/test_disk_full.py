"""T6: the output folder on a small tmpfs fills up during a run. The run ends FAILED(disk_full…),
never RUNNING, the grid stops with exit 1 and no traceback; once space is freed a rerun trains
exactly the runs that are missing. Mounting needs root: skipped (with the reason) where it is
not permitted, except under CI.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness_processes import mlflow_runs, run_harness, start_harness, tag, write_experiment

pytestmark = pytest.mark.slow  # real processes that train for seconds: run early under xdist, or skip with -m 'not slow'

NAME = "full"
GRID: dict[str, Any] = {
    "cells": ["vanilla"],
    "tasks": [{"name": "copy", "options": {"train_size": 160, "validation_size": 16, "test_size": 16,
                                           "delay": 3, "copy_length": 3}}],
    "seeds": [0, 1, 2],
    "model": {"hidden_size": 8, "embedding_size": 4},
    "training": {"max_epochs": 6, "batch_size": 16},
    "device": "cpu",
    "output_dir": "disk/out",
    "reports_dir": "reports",
}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/disk``: a 24 MiB tmpfs, unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to mount a tmpfs (run as root): {mounted.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    """Write a file until the tmpfs is full; returns it (delete it to free the space)."""
    filler = disk / "filler"
    block = b"\0" * 65536
    # Unbuffered: a buffered file would keep the block that did not fit and raise ENOSPC again on close.
    with filler.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(block)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def test_a_full_disk_fails_the_run_stops_the_grid_and_a_rerun_finishes_the_missing_runs(
        tmp_path: Path, small_disk: Path) -> None:
    write_experiment(tmp_path, NAME, GRID)
    started = start_harness(tmp_path, "run", f"{NAME}.yaml", label="full")
    started.wait_for("epoch 2/6", after="seed 1")
    filler = _fill(small_disk)
    result = started.finish()
    output = small_disk / "out"
    assert result.returncode == 1, result.explain()
    assert "Traceback" not in result.output, result.explain()
    assert "stopping the grid: disk_full:" in result.stderr, result.explain()
    runs = {int(tag(r, "seed")): r for r in mlflow_runs(output, NAME)}
    assert runs[0].info.status == "FINISHED"
    assert runs[1].info.status == "FAILED" and tag(runs[1], "failure_reason").startswith("disk_full: ")
    assert 2 not in runs  # the grid stopped: the next run would fail the same way
    import sqlite3

    with sqlite3.connect(output / "ledger.db") as connection:
        ledger = dict(connection.execute("SELECT seed, status FROM runs"))
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert ledger == {0: "DONE", 1: "FAILED", 2: "PENDING"}

    filler.unlink()
    rerun = run_harness(tmp_path, "run", f"{NAME}.yaml")
    assert rerun.returncode == 0, rerun.explain()
    assert f"{NAME}: 2 finished, 0 failed, 1 skipped" in rerun.stdout, rerun.explain()
    statuses = sorted((int(tag(r, "seed")), r.info.status) for r in mlflow_runs(output, NAME))
    assert statuses == [(0, "FINISHED"), (1, "FAILED"), (1, "FINISHED"), (2, "FINISHED")]


def test_a_run_that_cannot_fit_is_refused_before_training(tmp_path: Path, small_disk: Path) -> None:
    grid = {**GRID, "seeds": [0], "model": {"hidden_size": 1024, "embedding_size": 4}}  # ~3M parameters
    write_experiment(tmp_path, NAME, grid)
    result = run_harness(tmp_path, "run", f"{NAME}.yaml")
    assert result.returncode == 1, result.explain()
    assert "Traceback" not in result.output and "epoch 1/" not in result.stderr, result.explain()
    (run,) = mlflow_runs(small_disk / "out", NAME)
    assert run.info.status == "FAILED"
    assert "MiB free, the run needs about" in tag(run, "failure_reason")
