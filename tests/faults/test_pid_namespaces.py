"""T15n, a variant of T15 (issue #18 point 5): two ``harness run`` drivers in separate PID namespaces
(``unshare --pid --fork --mount-proc``, as two containers with ``--network host``) share one
hostname and one journal ledger. A ``harness run`` trains in one namespace while, in another,
a process reconciles the ledger again and again and a second ``harness run`` starts on the same
grid (it reconciles at start and while it waits): the training driver's pid is missing there,
and must not be taken for a dead driver. The run trains once.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from harness_processes import harness_command, harness_env, mlflow_runs, tag, write_experiment

pytestmark = pytest.mark.slow  # real processes that train for seconds: run early under xdist, or skip with -m 'not slow'

NAME = "namespaces"
GRID: dict[str, Any] = {
    "cells": ["gru"],
    "tasks": [{"name": "copy", "options": {"train_size": 320, "validation_size": 16, "test_size": 16,
                                           "delay": 6, "copy_length": 4}}],
    "seeds": [0],
    "model": {"hidden_size": 8, "embedding_size": 4},
    "training": {"max_epochs": 60, "batch_size": 16},
    "device": "cpu",
    "output_dir": "out",
    "reports_dir": "reports",
}


RECONCILE = """
import json, sys, time
from pathlib import Path
from harness.runs.identity import worker_id
from harness.runs.journal_ledger import JournalLedger
ledger = JournalLedger(Path(sys.argv[1]))
held = [r.status for r in ledger.rows(sys.argv[2])]
reclaimed = []
for _ in range(5):
    reclaimed += [row.key for row in ledger.reconcile(sys.argv[2])]
    time.sleep(0.2)
rows = ledger.rows(sys.argv[2])
print(json.dumps({"held": held, "reclaimed": reclaimed, "me": worker_id(), "rows": [r.owner for r in rows],
                  "after": [r.status for r in rows]}))
"""


def _namespaced(script: str, directory: Path, label: str, spacer_processes: int) -> subprocess.Popen[bytes]:
    """``script`` (sh) in a new PID namespace, after ``spacer_processes`` short-lived processes, so
    pids differ between the namespaces (and the other namespace's pid is free in this one)."""
    line = "/bin/true; " * spacer_processes + script + "; exit $?"
    with open(directory / f"{label}.err", "wb") as err, open(directory / f"{label}.out", "wb") as out:
        return subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", line], cwd=directory,
                                env=harness_env(), stdout=out, stderr=err, stdin=subprocess.DEVNULL)


def _wait_for(path: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert process.poll() is None, path.read_text(errors="replace")
        assert time.monotonic() < deadline, path.read_text(errors="replace")
        time.sleep(0.05)


def test_a_driver_in_another_pid_namespace_never_reclaims_a_live_run(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True).returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("CI must be able to create PID namespaces (unshare --pid, as root)")
        pytest.skip("cannot create a PID namespace here (unshare --pid needs root)")
    write_experiment(tmp_path, NAME, GRID)
    journal = tmp_path / "ledger.journal"
    harness = " ".join(shlex.quote(part) for part in harness_command())
    trainer = _namespaced(f"{harness} run {NAME}.yaml --storage journal://{journal}", tmp_path, "trainer", 1)
    _wait_for(tmp_path / "trainer.err", "epoch 1/60", trainer)  # it holds seed 0 and trains
    python = shlex.quote(str(Path(harness_command()[0]).parent / "python"))
    if not Path(python).exists():
        python = shlex.quote(sys.executable)
    reconciler = _namespaced(f"{python} -c {shlex.quote(RECONCILE)} {journal} {NAME}", tmp_path, "reconciler", 6)
    second = _namespaced(f"{harness} run {NAME}.yaml --storage journal://{journal} --set reports_dir=reports-2",
                         tmp_path, "second", 6)
    assert reconciler.wait(120) == 0, (tmp_path / "reconciler.err").read_text()
    seen = json.loads((tmp_path / "reconciler.out").read_text())
    # The run was held (RUNNING) before and after the other namespace reconciled it five times.
    assert seen["held"] == ["RUNNING"] and seen["after"] == ["RUNNING"], seen
    assert trainer.wait(300) == 0, (tmp_path / "trainer.err").read_text()
    assert second.wait(300) == 0, (tmp_path / "second.err").read_text()

    assert seen["reclaimed"] == [], seen
    owner, me = seen["rows"][0].split(":"), seen["me"].split(":")
    assert owner[0] == me[0] and owner[4] != me[4], seen  # one hostname, two PID namespaces
    for label in ("trainer", "second"):
        log = (tmp_path / f"{label}.err").read_text()
        assert "reclaimed" not in log and "lease lost" not in log and "stopped without finishing" not in log, log
    # The second driver trained nothing: it waited for the first and saw the grid end DONE.
    assert "[1/1]" not in (tmp_path / "second.err").read_text(), (tmp_path / "second.err").read_text()
    assert ": 1 DONE" in (tmp_path / "second.out").read_text(), (tmp_path / "second.out").read_text()
    runs = mlflow_runs(tmp_path / "out", NAME)
    assert [(int(tag(r, "seed")), r.info.status) for r in runs] == [(0, "FINISHED")]


def test_a_dead_worker_is_recognised_only_in_its_own_namespace() -> None:
    from harness.runs.identity import dead_local_owner, worker_id

    gone = subprocess.Popen(["true"])
    gone.wait()
    alive = worker_id().split(":")
    assert not dead_local_owner(":".join(alive))
    dead = [alive[0], str(gone.pid), "deadbeef", *alive[3:]]
    assert dead_local_owner(":".join(dead))  # same host, kernel and namespace: the pid is gone
    elsewhere = [*dead[:4], "4026530000", dead[5]]
    assert not dead_local_owner(":".join(elsewhere))  # another PID namespace: only the lease can tell
    reused = [alive[0], alive[1], "deadbeef", *alive[3:5], str(int(alive[5]) - 1)]
    assert dead_local_owner(":".join(reused))  # our pid, but a different start time: an earlier process
