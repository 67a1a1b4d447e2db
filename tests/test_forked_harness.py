"""The suite's ``harness`` commands run as forks of a pre-imported server (:mod:`forked_harness`):
they must be the processes a real ``exec`` of the console script would be."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from forked_harness import (
    SUITE_THREADS,
    HarnessProcess,
    fork_environment,
    harness_run,
    harness_script,
    start_server,
    why_not_forked,
)
from harness_processes import write_experiment

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server runs on Linux"),
              pytest.mark.slow]

SLOW = {"cells": ["vanilla"], "tasks": [{"name": "adding", "options": {"train_size": 4096, "length": 50}}],
        "seeds": [0], "model": {"hidden_size": 8}, "training": {"max_epochs": 50, "batch_size": 4},
        "device": "cpu", "output_dir": "out", "reports_dir": "reports"}


def exec_harness(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([harness_script(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def test_a_forked_command_prints_and_exits_as_the_executed_console_script(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("cells: [vanilla]\ntasks: [adding]\nseeds: [0]\nmodel: {hidden_size: -1}\n")
    env = fork_environment()
    for args in (["cells"], ["run", "bad.yaml"], ["no-such-command"]):  # plugins loaded; bad input; usage
        forked = harness_run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
        executed = exec_harness(*args, cwd=tmp_path, env=env)
        assert (forked.returncode, forked.stdout, forked.stderr) == \
            (executed.returncode, executed.stdout, executed.stderr), args
    assert not (tmp_path / "out").exists()


def test_a_forked_command_has_its_own_pid_and_dies_of_the_signals_sent_to_it(tmp_path: Path) -> None:
    write_experiment(tmp_path, "slow", SLOW)
    with open(tmp_path / "err", "wb") as err:
        process = HarnessProcess(["run", "slow.yaml"], cwd=tmp_path, env=fork_environment(), stdout=err, stderr=err,
                                 stdin=subprocess.DEVNULL)
    assert process._connection is not None, why_not_forked(fork_environment())
    assert os.getppid() != process.pid and Path(f"/proc/{process.pid}").exists()
    assert Path(f"/proc/{process.pid}/cwd").resolve() == tmp_path.resolve()
    deadline = time.monotonic() + 300
    while not (tmp_path / "out" / "ledger.db").exists():  # training has started
        assert process.poll() is None, (tmp_path / "err").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL


def test_a_command_whose_environment_changes_start_up_runs_as_a_real_exec(tmp_path: Path) -> None:
    changed = {**fork_environment(), "PYTHONWARNINGS": "error::DeprecationWarning"}
    process = HarnessProcess(["--version"], cwd=tmp_path, env=changed, stdout=subprocess.PIPE, text=True)
    output, _ = process.communicate(timeout=300)
    assert process._connection is None and process.returncode == 0 and "version" in output
    stdin = harness_run(["--version"], cwd=tmp_path, env=fork_environment(), input="ignored\n", capture_output=True,
                        text=True, timeout=300)
    assert stdin.returncode == 0 and stdin.stdout.startswith("harness, version")


def test_a_missing_working_folder_raises_as_popen_does(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        subprocess.Popen([harness_script(), "--version"], cwd=tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        HarnessProcess(["--version"], cwd=tmp_path / "missing", env=fork_environment())


def test_what_libraries_add_to_the_test_process_environment_still_forks(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch, Ray and the harness itself set variables in the test process that its commands inherit
    but read only later; those commands are still forks. A start-up setting is not."""
    start_server()
    for name, value in {"KMP_DUPLICATE_LIB_OK": "True", "TORCHINDUCTOR_CACHE_DIR": "/tmp/inductor",
                        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}.items():
        monkeypatch.setenv(name, value)
    assert why_not_forked({**SUITE_THREADS, **os.environ}) == ""
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert "MALLOC_ARENA_MAX" in why_not_forked({**SUITE_THREADS, **os.environ})
