"""Two ``harness tune`` processes share one study through a journal file: together they run the budget once.

Both start at the same moment on ``--storage journal:///…`` (Optuna's JournalFileBackend
beside the ledger's journal). Whatever the interleaving, the study ends with exactly its
budget of counted trials (a surplus ask is told FAIL, holds no slot and never trains), no
trial is left open, and the best configuration is re-trained once (the run ledger gives
each re-training run to one worker).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness_processes import tuning_experiment

NAME = "workers"
BUDGET = 6
EXPERIMENT = tuning_experiment(cell="gru_simple", budget=BUDGET, train_size=320, length=8, max_epochs=2)


@dataclass
class Scenario:
    directory: Path
    results: list[Any]
    trials: list[Any]
    runs: list[Any]  # MLflow runs of the experiment (the re-training)


def build_scenario(directory: Path, kit: Any) -> Scenario:
    import optuna

    kit.write_experiment(directory, NAME, EXPERIMENT)
    journal = directory / "out" / "tune.journal"
    started = [kit.start_harness(directory, "tune", f"{NAME}.yaml", "--storage", f"journal://{journal}",
                                 label=f"worker{i}") for i in (1, 2)]
    results = [s.finish() for s in started]
    from harness.experiment.storage_url import parse_storage
    from harness.tuning.tune import open_storage

    storage = open_storage(parse_storage(f"journal://{journal}", output_dir=directory), create=False)
    trials = optuna.load_study(study_name=f"{NAME}/gru_simple/adding", storage=storage).get_trials()
    return Scenario(directory, results, trials, kit.mlflow_runs(directory / "out", NAME))


@pytest.fixture(scope="module")
def scenario(scenario_of: Any) -> Scenario:
    return scenario_of(__name__)


def test_both_workers_finish_and_the_study_has_exactly_its_budget(scenario: Scenario) -> None:
    from harness.tuning.tune import slot_holders

    for result in scenario.results:
        assert result.returncode == 0, result.explain()
    counted = slot_holders(scenario.trials)
    assert len(counted) == BUDGET and all(t.state.name == "COMPLETE" for t in counted)
    # Anything else is a surplus ask that never trained.
    for trial in scenario.trials:
        if trial not in counted:
            assert trial.state.name == "FAIL" and trial.user_attrs.get("surplus") is True
            assert "epochs" not in trial.user_attrs
    assert (scenario.directory / "out" / "tune.optuna.journal").exists()


def test_the_best_configuration_is_retrained_once(scenario: Scenario, kit: Any) -> None:
    finished = [r for r in scenario.runs if r.info.status == "FINISHED"]
    assert len(finished) == 1 and kit.tag(finished[0], "tuned") == "1"
    best = min((t for t in scenario.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert int(kit.tag(finished[0], "tuning_trial")) == best.number
