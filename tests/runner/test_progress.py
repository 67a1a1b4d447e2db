"""Progress a user can watch: a bar in a terminal, plain lines in logs, the grid's ETA, ``harness status``.

The scenario, all through real ``harness`` processes:

1. ``watch.yaml`` (tanh and ReLU vanilla RNNs on ``adding`` at learning rate 100, so the
   ReLU run fails non-finite) runs with its output piped and ``$HARNESS_PROGRESS_MINUTES``
   tiny, so the within-epoch line comes after every batch;
2. the same file with 500 epochs starts in the background; once its first run has trained
   an epoch, ``harness status`` (in a Python that records what it imported) shows one run
   DONE, one FAILED, one RUNNING and one PENDING; SIGTERM then ends the running one KILLED;
3. a one-run grid trains inside a pseudo-terminal, where Lightning's bar is drawn;
4. a bad ``$HARNESS_PROGRESS_MINUTES`` is refused with exit 2 before anything is written.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from forked_harness import HarnessProcess, harness_run

NAME = "watch"
GRID: dict[str, Any] = {
    "cells": [{"name": "vanilla", "options": {"activation": "tanh"}},
              {"name": "vanilla", "options": {"activation": "relu"}}],
    "tasks": [{"name": "adding", "options": {"train_size": 64, "validation_size": 32, "test_size": 32,
                                             "length": 12}}],
    "seeds": [0],
    # A budget, so the hidden size is decided by the harness: MLflow must record the decided one.
    "model": {"parameter_budget": 200},
    "training": {"max_epochs": 2, "batch_size": 16, "learning_rate": 100.0, "gradient_clip_norm": None},
    "device": "cpu",
    "output_dir": "out",
    "reports_dir": "reports",
}
TTY_GRID: dict[str, Any] = {
    **GRID, "cells": ["vanilla"], "training": {"max_epochs": 2, "batch_size": 16}, "model": {"hidden_size": 8},
}
#: What a drawn bar leaves in a log: carriage returns and tqdm's block characters.
BAR_CHARACTERS = re.compile("[\r\u2580-\u259f]")

#: `harness status` in a Python that then lists which heavy modules it imported.
STATUS_PROBE = """
import sys, time
from harness.cli.main import cli
started = time.perf_counter()
try:
    cli(sys.argv[1:], prog_name="harness")
except SystemExit as exit:
    code = exit.code
print("PROBE", time.perf_counter() - started, code, sorted(m for m in ("mlflow", "torch", "pytorch_lightning")
                                                           if m in sys.modules))
"""


@dataclass
class Scenario:
    directory: Path
    piped: Any  # Finished
    status_running: Any
    status_json: dict[str, Any]
    status_after: Any
    killed: Any
    terminal_output: str
    terminal_code: int
    bad_minutes: Any


def _run(directory: Path, kit: Any, *args: str, env: dict[str, str] | None = None,
         python: bool = False) -> Any:
    options: dict[str, Any] = dict(cwd=directory, env={**kit.harness_env(), **(env or {})}, capture_output=True,
                                   text=True, timeout=kit.TIMEOUT, stdin=subprocess.DEVNULL)
    done = subprocess.run([sys.executable, "-c", STATUS_PROBE, *args], **options) if python else \
        harness_run(args, **options)
    return kit.Finished(tuple(args), done.returncode, done.stdout, done.stderr)


def _run_in_terminal(directory: Path, kit: Any, *args: str) -> tuple[str, int]:
    """``harness ARGS`` with stdout and stderr on a pseudo-terminal; everything it drew, and its exit code."""
    controller, terminal = pty.openpty()
    # A real terminal has a size; tqdm draws nothing on a 0-column one.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    process = HarnessProcess(args, cwd=directory, env=kit.harness_env(), stdin=subprocess.DEVNULL, stdout=terminal,
                             stderr=terminal, close_fds=True)
    os.close(terminal)
    chunks = []
    while True:
        ready, _, _ = select.select([controller], [], [], kit.TIMEOUT)
        if not ready:
            process.kill()
            break
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    return b"".join(chunks).decode("utf-8", errors="replace"), process.wait(timeout=kit.TIMEOUT)


def build_scenario(directory: Path, kit: Any) -> Scenario:
    terminal_dir = directory / "terminal"
    terminal_dir.mkdir()
    kit.write_experiment(terminal_dir, "tty", TTY_GRID)
    (directory / "bad").mkdir()
    kit.write_experiment(directory / "bad", "tty", TTY_GRID)
    with ThreadPoolExecutor(2) as pool:  # steps 3 and 4 beside 1 and 2
        in_terminal = pool.submit(_run_in_terminal, terminal_dir, kit, "run", "tty.yaml")
        bad = pool.submit(_run, directory / "bad", kit, "run", "tty.yaml",
                          env={"HARNESS_PROGRESS_MINUTES": "soon"})
        steps = _watch(directory, kit)
        terminal_output, terminal_code = in_terminal.result()
        return Scenario(directory, *steps, terminal_output, terminal_code, bad.result())


def _watch(directory: Path, kit: Any) -> tuple[Any, ...]:
    """Steps 1 and 2: the piped grid, then status while a run trains and after it was killed."""
    kit.write_experiment(directory, NAME, GRID)
    piped = _run(directory, kit, "run", f"{NAME}.yaml", env={"HARNESS_PROGRESS_MINUTES": "0.000001"})
    long_run = kit.start_harness(directory, "run", f"{NAME}.yaml", "--set", "training.max_epochs=500",
                                 label="long")
    try:
        long_run.wait_for("epoch 2/500")
        status_running = _run(directory, kit, "status", f"{NAME}.yaml", python=True)
        status_json = json.loads(_run(directory, kit, "status", f"{NAME}.yaml", "--json").stdout)
    finally:
        long_run.signal(signal.SIGTERM)
        killed = long_run.finish()
    status_after = _run(directory, kit, "status", f"{NAME}.yaml")
    return piped, status_running, status_json, status_after, killed


@pytest.fixture(scope="module")
def scenario(scenarios: dict[str, Any], kit: Any) -> Scenario:
    return kit.scenario_of(__name__, scenarios)


def test_piped_output_has_epoch_lines_and_timed_lines_but_no_bar(scenario: Scenario) -> None:
    piped = scenario.piped
    assert piped.returncode == 1, piped.explain()  # the ReLU run failed
    assert not BAR_CHARACTERS.search(piped.output), piped.explain()
    assert "    epoch 1/2  train_loss" in piped.stderr and "    epoch 2/2  train_loss" in piped.stderr
    # The line inside an epoch: where it is, how fast, how long, the running loss.
    timed = re.findall(r"    epoch 1/2: batch (\d)/4 \(\d+%\), [\d.e+]+ batches/s, elapsed \d+s, ETA \d+s, "
                       r"loss [\d.e+-]+", piped.stderr)
    assert timed[:4] == ["1", "2", "3", "4"], piped.explain()


def test_the_grid_lines_count_runs_and_give_an_eta_once_a_run_has_finished(scenario: Scenario) -> None:
    lines = [line for line in scenario.piped.stderr.splitlines() if line.startswith("[")]
    assert len(lines) == 2, scenario.piped.explain()
    assert lines[0].startswith("[1/2] vanilla(activation=tanh) × adding × seed 0")
    assert re.search(r"; elapsed \d+s, ETA \?$", lines[0]), lines[0]  # nothing finished yet
    assert lines[1].startswith("[2/2] vanilla(activation=relu) × adding × seed 0")
    assert re.search(r"; elapsed \d+s, ETA \d+s$", lines[1]), lines[1]


def test_status_counts_running_and_failed_runs_from_the_ledger_alone(scenario: Scenario) -> None:
    shown = scenario.status_running
    assert shown.returncode == 0, shown.explain()
    assert f"{NAME}: 4 runs: 1 PENDING, 1 RUNNING, 1 DONE, 1 FAILED" in shown.stdout, shown.explain()
    running = re.search(r"  vanilla\(activation=tanh\) × adding × seed 0: epoch (\d+)/500 done, running (\d+)s, "
                        r"attempt 1, worker \S+", shown.stdout)
    assert running and int(running.group(1)) >= 1, shown.stdout
    assert "  vanilla(activation=relu) × adding × seed 0: FAILED: nonfinite: training loss is" in shown.stdout
    # It answers from the ledger: neither MLflow nor torch nor Lightning was imported.
    probe = shown.stdout.splitlines()[-1].split(" ", 3)
    assert probe[0] == "PROBE" and probe[2] == "0" and probe[3] == "[]", shown.stdout
    print(f"harness status, in-process: {float(probe[1]):.3f}s")


def test_status_json_has_the_running_epoch_and_elapsed_time(scenario: Scenario) -> None:
    data = scenario.status_json
    assert data["counts"] == {"PENDING": 1, "RUNNING": 1, "DONE": 1, "FAILED": 1}
    [running] = data["running"]
    assert running["epoch"] >= 1 and running["max_epochs"] == 500 and running["elapsed_s"] > 0
    assert not running["stale"]


def test_a_run_ended_by_sigterm_shows_as_killed_with_its_reason(scenario: Scenario) -> None:
    assert scenario.killed.returncode == 128 + signal.SIGTERM, scenario.killed.explain()
    after = scenario.status_after
    assert f"{NAME}: 4 runs: 1 PENDING, 1 DONE, 1 FAILED, 1 KILLED" in after.stdout, after.explain()
    assert "  vanilla(activation=tanh) × adding × seed 0: KILLED: interrupted by SIGTERM" in after.stdout


def test_a_terminal_shows_a_bar_with_batches_rate_and_running_loss(scenario: Scenario) -> None:
    output = scenario.terminal_output
    assert scenario.terminal_code == 0, output
    # Lightning's bar: epoch, share done, batches done/total, elapsed<ETA, rate, running loss.
    assert re.search(r"Epoch 2/2: 100%\|█+\| 4/4 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+it/s, loss=[\d.]+", output), output
    assert "\r" in output
    assert "    epoch 2/2  train_loss" in output  # the epoch line is still there, on a line of its own
    assert re.search(r"\[1/1\] vanilla × adding × seed 0 \(hidden 8, attempt 1\); elapsed \d+s, ETA \?", output)


def test_a_bad_progress_interval_is_refused_before_anything_runs(scenario: Scenario) -> None:
    bad = scenario.bad_minutes
    assert bad.returncode == 2, bad.explain()
    assert bad.stderr.strip() == ("Error: $HARNESS_PROGRESS_MINUTES is 'soon': give minutes between progress lines "
                                  "inside an epoch, e.g. 5 or 0.5 (0: none)"), bad.explain()
    assert not (scenario.directory / "bad" / "out").exists()


def test_mlflow_records_the_decided_hidden_size_as_a_param_and_each_fact_once(scenario: Scenario, kit: Any) -> None:
    runs = kit.mlflow_runs(scenario.directory / "out", NAME)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert len(finished) == 1
    run = finished[0]
    params, tags = run.data.params, run.data.tags
    hidden = int(params["model.hidden_size"])
    assert hidden > 0 and params["model.parameter_budget"] == "200"
    assert f"(hidden {hidden}," in scenario.piped.stderr  # the size the grid line announced
    # Identity once, as tags; settings once, as params.
    assert tags["harness.cell"] == "vanilla(activation=tanh)" and tags["harness.cell_name"] == "vanilla"
    assert tags["harness.task"] == "adding" and tags["harness.seed"] == "0"
    assert not {"cell.name", "cell.label", "task.name", "task.label", "seed"} & set(params)
    assert not [k for k in params if k.startswith("plugin_versions.")]
    assert "harness.hidden_size" not in tags
    assert params["cell.options.activation"] == "tanh" and params["config_hash"] == tags["harness.run_key"]
    # The report reads the param.
    rows = kit.read_results(scenario.directory / "reports" / NAME)
    assert {r["status"]: r["hidden_size"] for r in rows}["FINISHED"] == str(hidden)
