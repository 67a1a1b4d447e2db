"""A small ``harness tune`` end to end: pruning happens, the best values are re-trained, the report shows it.

Two cells (vanilla, lstm) on a tiny adding problem, 10 trials × at most 3 epochs each, TPE
seeded, median pruning after 2 completed trials; the learning rate spans 1e-4 to 0.3, so
some trials are clearly worse than the median after an epoch or two and get pruned. The
LSTM's study also searches its forget-gate bias (the plugin's own search-space default).
Then each study's best values are re-trained over seeds 0 and 1 as grid runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

NAME = "search"
TRIALS = 10
EXPERIMENT: dict[str, Any] = {
    "cells": ["vanilla", "lstm"],
    "tasks": [{"name": "adding", "options": {"train_size": 128, "validation_size": 64, "test_size": 64,
                                             "length": 10}}],
    "seeds": [0, 1],
    "model": {"hidden_size": 8},
    "training": {"max_epochs": 3, "batch_size": 32, "cpu_threads": 1},
    "device": "cpu",
    "output_dir": "out",
    "reports_dir": "reports",
    "tuning": {
        "trials": TRIALS,
        "sampler": {"name": "tpe", "seed": 0, "startup_trials": 4},
        "pruner": {"name": "median", "startup_trials": 2},
        "search_space": {
            "training.learning_rate": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
            "model.hidden_size": {"type": "int", "low": 4, "high": 16},
        },
    },
}


@dataclass
class Scenario:
    directory: Path
    result: Any
    kit: Any

    @property
    def output_dir(self) -> Path:
        return self.directory / "out"

    def trials(self, cell: str) -> list[Any]:
        return self.kit.study_trials(self.output_dir, f"{NAME}/{cell}/adding")

    def runs(self, experiment: str) -> list[Any]:
        return self.kit.mlflow_runs(self.output_dir, experiment)


def build_scenario(directory: Path, kit: Any) -> Scenario:
    kit.write_experiment(directory, NAME, EXPERIMENT)
    return Scenario(directory, kit.start_harness(directory, "tune", f"{NAME}.yaml", label="tune").finish(), kit)


@pytest.fixture(scope="module")
def scenario(scenario_of: Any) -> Scenario:
    found = scenario_of(__name__)
    assert found.result.returncode == 0, found.result.explain()
    return found


@pytest.mark.parametrize("cell", ["vanilla", "lstm"])
def test_every_study_ends_with_exactly_its_budget(scenario: Scenario, cell: str) -> None:
    states = [t.state.name for t in scenario.trials(cell)]
    assert len(states) == TRIALS, states
    assert set(states) <= {"COMPLETE", "PRUNED"}, states


def test_pruning_happened_and_pruned_runs_are_recorded_as_pruned(scenario: Scenario) -> None:
    pruned = {(cell, t.number): t for cell in ("vanilla", "lstm") for t in scenario.trials(cell)
              if t.state.name == "PRUNED"}
    assert pruned, "no trial was pruned"
    tag = scenario.kit.tag
    runs = scenario.runs(f"{NAME}-trials")
    assert len(runs) == 2 * TRIALS
    assert not [r for r in runs if r.info.status in ("FAILED", "RUNNING")]
    assert not [r for r in runs if r.info.status == "KILLED"]  # pruned is not killed
    marked = {(tag(r, "cell"), int(tag(r, "trial_number"))): r for r in runs if tag(r, "status") == "PRUNED"}
    assert set(marked) == set(pruned)
    for key, run in marked.items():
        assert run.info.status == "FINISHED" and tag(run, "failure_reason") is None
        trial = pruned[key]
        # Stopped before the last epoch or at it, after reporting every epoch it trained.
        epochs = len(trial.intermediate_values)
        assert 1 <= epochs <= 3 and trial.user_attrs["epochs"] == epochs
        assert "pruned after epoch" in tag(run, "pruned_reason")
        val = [m.value for m in _history(scenario, run, "val_mse")]
        assert val == pytest.approx([trial.intermediate_values[e] for e in sorted(trial.intermediate_values)])


def _history(scenario: Scenario, run: Any, key: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{scenario.output_dir / 'mlflow.db'}").get_metric_history(run.info.run_id, key)


def test_the_lstm_study_also_searches_its_forget_bias(scenario: Scenario) -> None:
    assert all("cell.forget_bias" in t.params for t in scenario.trials("lstm"))
    assert not any("cell.forget_bias" in t.params for t in scenario.trials("vanilla"))


@pytest.mark.parametrize("cell", ["vanilla", "lstm"])
def test_the_best_values_are_retrained_over_both_seeds(scenario: Scenario, cell: str) -> None:
    complete = [t for t in scenario.trials(cell) if t.state.name == "COMPLETE"]
    best = min(complete, key=lambda t: t.value)  # val_mse: lower is better
    tag = scenario.kit.tag
    runs = [r for r in scenario.runs(NAME) if tag(r, "cell") == cell]
    assert sorted(tag(r, "seed") for r in runs) == ["0", "1"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert tag(run, "tuned") == "1" and int(tag(run, "tuning_trial")) == best.number
        assert json.loads(tag(run, "tuning_params")) == best.params
        assert float(run.data.params["training.learning_rate"]) == pytest.approx(best.params["training.learning_rate"])
        assert int(run.data.params["model.hidden_size"]) == best.params["model.hidden_size"]
        if cell == "lstm":
            assert float(run.data.params["cell.options.forget_bias"]) == pytest.approx(best.params["cell.forget_bias"])
        assert math.isfinite(run.data.metrics["test_mse"])
    # Seed 0 is the trials' seed: its re-training repeats the best trial exactly (CPU is deterministic).
    seed0 = next(r for r in runs if tag(r, "seed") == "0")
    assert _history(scenario, seed0, "val_mse")[-1].value == pytest.approx(best.value, rel=1e-6)


def test_the_report_shows_budget_trials_and_importance(scenario: Scenario) -> None:
    report = (scenario.directory / "reports" / NAME / "report.md").read_text(encoding="utf-8")
    assert f"same budget: {TRIALS} trials × at most 3 epochs" in report
    for heading in ("Tuning: every trial", "Tuning: best configuration per cell",
                    "Tuning: hyper-parameter importance (fANOVA)"):
        assert heading in report
    section = report[report.index("hyper-parameter importance (fANOVA)"):]
    table = [line for line in section.splitlines() if line.startswith("| training.learning_rate |")]
    assert table, section
    shares = [float(v) for v in table[0].strip("| ").split(" | ")[1:] if v != "—"]
    assert shares and all(0.0 <= v <= 1.0 for v in shares)
    html = (scenario.directory / "reports" / NAME / "index.html").read_text(encoding="utf-8")
    for plot in ("adding-tuning_history.png", "adding-tuning_distribution.png"):
        assert (scenario.directory / "reports" / NAME / "plots" / plot).stat().st_size > 1000
        assert f'alt="adding: {plot[len("adding-"):-4].replace("_", " ")}"' in html
    # The trial table counts every trial of each study, pruned ones too.
    rows = {line.split(" | ")[0].strip("| "): line for line in report.splitlines() if line.startswith("| vanilla |")
            or line.startswith("| lstm |")}
    pruned = sum(t.state.name == "PRUNED" for t in scenario.trials("vanilla"))
    assert f"| vanilla | {TRIALS} | {TRIALS - pruned} | {pruned} | 0 | 0 |" in rows["vanilla"]
