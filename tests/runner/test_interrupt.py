"""Interrupting ``harness run`` and running it again (subprocesses, real signals).

The grid is three runs in this order: a fast one (agreement), a slow one (copy with
more examples, so there is time to interrupt it during training) and another fast one
(adding). One scenario (:func:`build_scenario`), each step on the same output folder:

1. SIGTERM while the copy run trains (after its first epoch): exit 143;
2. run again, SIGINT at the same point of the copy run's second attempt: exit 130;
3. run again, ``kill -9`` at the same point: the ledger row stays RUNNING;
4. run again to the end: exit 0.

Each test checks what one step left in the ledger and in MLflow.
"""

from __future__ import annotations

import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

NAME = "slow"
FAST = {"train_size": 32, "validation_size": 16, "test_size": 16}
SLOW_GRID: dict[str, Any] = {
    "cells": ["vanilla"],
    "tasks": [
        {"name": "agreement", "options": {**FAST, "max_distance": 4}},
        # ~32 batches per epoch × 8 epochs: a second or more of training after epoch 1.
        {"name": "copy", "options": {"train_size": 512, "validation_size": 32, "test_size": 32,
                                     "delay": 10, "copy_length": 4}},
        {"name": "adding", "options": {**FAST, "length": 4}},
    ],
    "seeds": [0],
    "model": {"hidden_size": 8, "embedding_size": 4},
    "training": {"max_epochs": 8, "batch_size": 16},
    "device": "cpu",
    "output_dir": "out",
    "reports_dir": "reports",
}


@dataclass
class Step:
    result: Any  # Finished
    ledger: dict[str, dict[str, Any]]
    runs: list[Any]  # MLflow runs, oldest first
    snapshot: Path | None = None  # a copy of the ledger files right after the step


@dataclass
class Scenario:
    directory: Path
    steps: dict[str, Step] = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        return self.directory / "out"


def interrupt_copy_run(scenario: Scenario, kit: Any, number: int, label: str) -> Step:
    """Run the grid, send ``number`` once the copy run has finished its first epoch, wait for the exit."""
    started = kit.start_harness(scenario.directory, "run", f"{NAME}.yaml", label=label)
    # Any epoch line: a later attempt resumes from the last checkpoint, so its first epoch is not epoch 1.
    started.wait_for("/8  ", after="× copy ×")
    started.signal(number)
    result = started.finish()  # reaps the process: its pid no longer exists
    snapshot = None
    if number == signal.SIGKILL:
        snapshot = scenario.directory / "ledger-after-kill"
        snapshot.mkdir()
        for path in scenario.output_dir.glob("ledger.db*"):
            shutil.copy(path, snapshot / path.name)
    return Step(result, kit.ledger_rows(scenario.output_dir), kit.mlflow_runs(scenario.output_dir, NAME), snapshot)


def build_scenario(directory: Path, kit: Any) -> Scenario:
    """The subprocess story of this module (started with the other modules', see conftest)."""
    scenario = Scenario(directory)
    kit.write_experiment(directory, NAME, SLOW_GRID)
    scenario.steps["SIGTERM"] = interrupt_copy_run(scenario, kit, signal.SIGTERM, "sigterm")
    scenario.steps["SIGINT"] = interrupt_copy_run(scenario, kit, signal.SIGINT, "sigint")
    scenario.steps["SIGKILL"] = interrupt_copy_run(scenario, kit, signal.SIGKILL, "sigkill")
    final = kit.run_harness(directory, "run", f"{NAME}.yaml")
    scenario.steps["final"] = Step(final, kit.ledger_rows(scenario.output_dir),
                                   kit.mlflow_runs(scenario.output_dir, NAME))
    return scenario


@pytest.fixture(scope="module")
def scenario(scenarios: dict[str, Any], kit: Any) -> Scenario:
    return kit.scenario_of(__name__, scenarios)


def by_task(step: Step, kit: Any) -> dict[str, list[Any]]:
    runs: dict[str, list[Any]] = {}
    for run in step.runs:
        runs.setdefault(kit.tag(run, "task"), []).append(run)
    return runs


def ledger_by_task(step: Step) -> dict[str, dict[str, Any]]:
    return {row["task"]: row for row in step.ledger.values()}


@pytest.mark.parametrize(("signal_name", "exit_code", "attempt"), [("SIGTERM", 143, 1), ("SIGINT", 130, 2)])
def test_a_signal_during_training_kills_the_current_run(scenario: Scenario, kit: Any, signal_name: str,
                                                        exit_code: int, attempt: int) -> None:
    step = scenario.steps[signal_name]
    assert step.result.returncode == exit_code, step.result.explain()
    number = int(signal.Signals[signal_name])
    assert f"interrupted by signal {number}" in step.result.stdout, step.result.explain()
    runs = by_task(step, kit)
    copy = runs["copy"][-1]
    # The interrupted attempt is closed: never left RUNNING, never FINISHED.
    assert copy.info.status == "KILLED", step.result.explain()
    assert copy.info.end_time is not None
    assert kit.tag(copy, "status") == "KILLED"
    assert kit.tag(copy, "failure_reason") == f"interrupted by {signal_name}"
    assert len(runs["copy"]) == attempt and all(r.info.status == "KILLED" for r in runs["copy"])
    # It was interrupted during training: its first epoch is in MLflow, not all eight.
    assert "test_loss" not in copy.data.metrics
    assert copy.data.metrics.get("epochs") is None
    history = kit.mlflow_client(scenario.output_dir).get_metric_history(copy.info.run_id, "val_loss")
    assert 1 <= len(history) < 8
    # The grid stopped there: the run after it never started.
    assert "adding" not in runs
    assert all(r.info.status != "RUNNING" for r in step.runs)
    ledger = ledger_by_task(step)
    assert ledger["copy"]["status"] == "KILLED"
    assert ledger["copy"]["reason"] == f"interrupted by {signal_name}"
    assert ledger["copy"]["attempts"] == attempt
    assert ledger["copy"]["mlflow_run_id"] == copy.info.run_id
    assert ledger["copy"]["owner"] is None
    assert ledger["adding"]["status"] == "PENDING"
    assert ledger["agreement"]["status"] == "DONE"


def test_the_run_finished_before_an_interruption_is_not_run_again(scenario: Scenario, kit: Any) -> None:
    first = by_task(scenario.steps["SIGTERM"], kit)["agreement"]
    assert [r.info.status for r in first] == ["FINISHED"]
    for name in ("SIGINT", "SIGKILL", "final"):
        again = by_task(scenario.steps[name], kit)["agreement"]
        assert [r.info.run_id for r in again] == [first[0].info.run_id], name
        assert ledger_by_task(scenario.steps[name])["agreement"]["attempts"] == 1


def test_kill_9_leaves_the_run_running_until_the_next_start(scenario: Scenario, kit: Any) -> None:
    step = scenario.steps["SIGKILL"]
    assert step.result.returncode == -signal.SIGKILL, step.result.explain()
    copy = by_task(step, kit)["copy"][-1]
    assert copy.info.status == "RUNNING"  # nobody could close it
    row = ledger_by_task(step)["copy"]
    assert row["status"] == "RUNNING" and row["attempts"] == 3
    assert row["mlflow_run_id"] == copy.info.run_id


def test_the_stale_running_row_is_reconciled_to_killed(scenario: Scenario, kit: Any) -> None:
    from harness.runs.run_states import KILLED
    from harness.runs.ledger import Ledger

    step = scenario.steps["SIGKILL"]
    ledger = Ledger(f"sqlite:///{step.snapshot / 'ledger.db'}")
    try:
        stale = ledger.reconcile(NAME)
        assert [row.task for row in stale] == ["copy"]
        # What it returns is what Runner.open closes the MLflow run with: the new status and reason.
        assert stale[0].status == KILLED and "stopped without finishing" in stale[0].reason
        assert stale[0].mlflow_run_id == by_task(step, kit)["copy"][-1].info.run_id
        row = next(r for r in ledger.rows(NAME) if r.task == "copy")
        assert row.status == KILLED
        assert "stopped without finishing" in row.reason
        assert row.owner is None
        assert ledger.reconcile(NAME) == []  # idempotent
    finally:
        ledger.close()


def test_running_again_after_kill_9_closes_the_orphaned_mlflow_run_and_completes(scenario: Scenario,
                                                                               kit: Any) -> None:
    step = scenario.steps["final"]
    assert step.result.returncode == 0, step.result.explain()
    assert f"{NAME}: 2 finished, 0 failed, 1 skipped" in step.result.stdout, step.result.explain()
    orphan_id = by_task(scenario.steps["SIGKILL"], kit)["copy"][-1].info.run_id
    orphan = next(r for r in step.runs if r.info.run_id == orphan_id)
    assert orphan.info.status == "KILLED"
    assert kit.tag(orphan, "status") == "KILLED"
    assert "stopped without finishing" in (kit.tag(orphan, "failure_reason") or "")


def test_after_the_final_run_every_key_has_exactly_one_finished_run(scenario: Scenario, kit: Any) -> None:
    step = scenario.steps["final"]
    by_key: dict[str, list[str]] = {}
    for run in step.runs:
        by_key.setdefault(kit.tag(run, "run_key"), []).append(run.info.status)
    assert set(by_key) == set(step.ledger)
    for key, statuses in by_key.items():
        assert statuses.count("FINISHED") == 1, (key, statuses)
        assert "RUNNING" not in statuses, (key, statuses)
    copy = by_task(step, kit)["copy"]
    assert [r.info.status for r in copy] == ["KILLED", "KILLED", "KILLED", "FINISHED"]
    # The killed attempts are the very runs the interruptions left, still KILLED.
    killed = [by_task(scenario.steps[s], kit)["copy"][-1].info.run_id for s in ("SIGTERM", "SIGINT", "SIGKILL")]
    assert [r.info.run_id for r in copy[:3]] == killed
    assert {row["status"] for row in step.ledger.values()} == {"DONE"}
    assert {row["task"]: row["attempts"] for row in step.ledger.values()} == {
        "agreement": 1, "copy": 4, "adding": 1}
    rows = kit.read_results(scenario.directory / "reports" / NAME)
    assert sorted((r["task"], r["status"]) for r in rows) == [
        ("adding", "FINISHED"), ("agreement", "FINISHED"), ("copy", "FINISHED")]
