"""A run whose loss really becomes non-finite ends FAILED("nonfinite: ..."); the grid goes on.

The bad configuration: a ReLU vanilla RNN on the adding task with learning rate 100
and no gradient clipping. Adam's first step moves every weight by about the learning
rate, so the unbounded ReLU state grows like (100·hidden)^length:

* ``adding`` (4 batches per epoch): the training loss of the second batch is inf/NaN;
* ``adding_one_batch`` (1 batch per epoch, 1 epoch): every training loss is finite, but
  the step after the only batch makes the validation loss NaN. That must fail the run
  too, not finish it with NaN metrics.

The tanh cell under the same settings has a bounded state: its loss is large but
finite, and it finishes. All of it is deterministic on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

NAME = "nonfinite"
BAD, GOOD = "vanilla(activation=relu)", "vanilla(activation=tanh)"
TASKS = ("adding", "adding_one_batch")
GRID: dict[str, Any] = {
    "cells": [{"name": "vanilla", "options": {"activation": "tanh"}},
              {"name": "vanilla", "options": {"activation": "relu"}}],
    "tasks": [{"name": "adding", "label": "adding",
               "options": {"train_size": 64, "validation_size": 32, "test_size": 32, "length": 12}},
              {"name": "adding", "label": "adding_one_batch",
               "options": {"train_size": 16, "validation_size": 16, "test_size": 16, "length": 30}}],
    "seeds": [0],
    "model": {"hidden_size": 8},
    "training": {"max_epochs": 1, "batch_size": 16, "learning_rate": 100.0, "gradient_clip_norm": None},
    "device": "cpu",
    "output_dir": "out",
    "reports_dir": "reports",
}


@dataclass
class Scenario:
    directory: Path
    result: Any  # Finished
    rerun: Any  # Finished: `harness run` again, which retries each FAILED run once


def build_scenario(directory: Path, kit: Any) -> Scenario:
    """The subprocess story of this module (started with the other modules', see conftest)."""
    kit.write_experiment(directory, NAME, GRID)
    first = kit.run_harness(directory, "run", f"{NAME}.yaml")
    return Scenario(directory, first, kit.run_harness(directory, "run", f"{NAME}.yaml"))


@pytest.fixture(scope="module")
def scenario(scenarios: dict[str, Any], kit: Any) -> Scenario:
    return kit.scenario_of(__name__, scenarios)


@pytest.fixture(scope="module")
def runs(scenario: Scenario, kit: Any) -> dict[tuple[str, str], Any]:
    """The first `harness run`'s four MLflow runs (the rerun's two come after them)."""
    found = kit.mlflow_runs(scenario.directory / "out", NAME)
    assert len(found) == 6, [r.info.run_name for r in found]
    return {(kit.tag(r, "cell"), kit.tag(r, "task")): r for r in found[:4]}


def test_exit_code_1_when_a_run_failed(scenario: Scenario) -> None:
    assert scenario.result.returncode == 1, scenario.result.explain()
    assert f"{NAME}: 2 finished, 2 failed, 0 skipped" in scenario.result.stdout, scenario.result.explain()


@pytest.mark.parametrize(("task", "loss"), [("adding", "training"), ("adding_one_batch", "validation")])
def test_the_diverging_run_ends_failed_nonfinite(runs: dict[tuple[str, str], Any], kit: Any, task: str,
                                                 loss: str) -> None:
    bad = runs[(BAD, task)]
    assert bad.info.status == "FAILED"
    assert kit.tag(bad, "status") == "FAILED"
    reason = kit.tag(bad, "failure_reason") or ""
    assert reason.startswith(f"nonfinite: {loss} loss is "), reason
    assert reason.split()[4].rstrip(";") in ("nan", "inf", "-inf"), reason
    # It never got to testing, and nothing non-finite was logged on its way down.
    assert not [k for k in bad.data.metrics if k.startswith("test_")], bad.data.metrics
    assert all(math.isfinite(v) for v in bad.data.metrics.values()), bad.data.metrics


@pytest.mark.parametrize("task", TASKS)
def test_the_healthy_run_finishes_with_finite_metrics(runs: dict[tuple[str, str], Any], kit: Any, task: str) -> None:
    good = runs[(GOOD, task)]
    assert good.info.status == "FINISHED"
    assert kit.tag(good, "failure_reason") is None
    assert math.isfinite(good.data.metrics["test_mse"])
    assert all(math.isfinite(v) for v in good.data.metrics.values()), good.data.metrics


def test_the_ledger_records_the_failures(scenario: Scenario, kit: Any) -> None:
    rows = {(row["cell"], row["task"]): row for row in kit.ledger_rows(scenario.directory / "out").values()}
    for task in TASKS:
        assert rows[(BAD, task)]["status"] == "FAILED"
        assert rows[(BAD, task)]["reason"].startswith("nonfinite")
        assert rows[(GOOD, task)]["status"] == "DONE"


def test_results_csv_shows_the_failures_and_no_infinite_value(scenario: Scenario, kit: Any) -> None:
    rows = {(row["cell"], row["task"]): row for row in kit.read_results(scenario.directory / "reports" / NAME)}
    assert set(rows) == {(cell, task) for cell in (BAD, GOOD) for task in TASKS}
    for task in TASKS:
        bad, good = rows[(BAD, task)], rows[(GOOD, task)]
        assert bad["status"] == "FAILED"
        assert bad["failure_reason"].startswith("nonfinite"), bad
        assert bad.get("test_mse", "") == ""
        assert good["status"] == "FINISHED"
        assert kit.is_finite_number(good["test_mse"]), good
    for row in rows.values():
        for column, value in row.items():
            text = value.strip().lower()
            assert "1.797" not in text and text.lstrip("+-") not in ("inf", "infinity", "nan"), (column, value)
            try:
                number = float(text)
            except ValueError:
                continue
            assert math.isfinite(number) and abs(number) < 1e300, (column, value)
    report = (scenario.directory / "reports" / NAME / "report.md").read_text(encoding="utf-8")
    assert "nonfinite: training loss" in report and "nonfinite: validation loss" in report


def test_a_rerun_retries_each_failed_run_once_and_skips_the_finished_ones(scenario: Scenario, kit: Any) -> None:
    rerun = scenario.rerun
    assert rerun.returncode == 1, rerun.explain()  # deterministic: they fail again
    assert f"{NAME}: 0 finished, 2 failed, 2 skipped" in rerun.stdout, rerun.explain()
    rows = {(row["cell"], row["task"]): row for row in kit.ledger_rows(scenario.directory / "out").values()}
    assert {key: (row["status"], row["attempts"]) for key, row in rows.items()} == {
        **{(BAD, task): ("FAILED", 2) for task in TASKS}, **{(GOOD, task): ("DONE", 1) for task in TASKS}}
    retried = kit.mlflow_runs(scenario.directory / "out", NAME)[4:]
    assert sorted((kit.tag(r, "cell"), kit.tag(r, "task"), r.info.status) for r in retried) == [
        (BAD, task, "FAILED") for task in sorted(TASKS)]
