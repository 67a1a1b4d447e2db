"""Two ``harness tune`` processes share one study on PostgreSQL, as workers on two machines would.

The ledger, the Optuna study and MLflow all live on a throwaway PostgreSQL server on
127.0.0.1 (``--storage postgresql://…``, ``tracking_uri: postgresql://…``). Together the two
processes run the budget exactly once and re-train the best configuration once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness_processes import tuning_experiment
from postgres_cluster import MISSING, PostgresCluster, postgres_binaries, skip_without_postgres

NAME = "pgtune"
BUDGET = 2
EXPERIMENT = tuning_experiment(cell="gru_simple", budget=BUDGET, train_size=64, length=8, max_epochs=1)


@dataclass
class Scenario:
    results: list[Any] = field(default_factory=list)
    trials: list[Any] = field(default_factory=list)
    runs: list[Any] = field(default_factory=list)  # MLflow runs of the experiment (the re-training)
    missing: str = ""


def build_scenario(directory: Path, kit: Any) -> Scenario:
    bindir = postgres_binaries()
    if bindir is None:
        return Scenario(missing=MISSING)
    cluster = PostgresCluster(bindir)
    try:
        cluster.start()
        return run_two_tuners(directory, kit, cluster)
    finally:
        cluster.stop()


def run_two_tuners(directory: Path, kit: Any, cluster: PostgresCluster) -> Scenario:
    import optuna
    from mlflow.tracking import MlflowClient

    from harness.experiment.storage_url import parse_storage, with_default_driver
    from harness.tuning.tune import open_storage

    kit.write_experiment(directory, NAME, {**EXPERIMENT, "tracking_uri": cluster.url("mlflow")})
    storage_url = cluster.url("ledger")
    started = [kit.start_harness(directory, "tune", f"{NAME}.yaml", "--storage", storage_url, label=f"tuner{i}")
               for i in (1, 2)]
    results = [s.finish() for s in started]
    storage = open_storage(parse_storage(storage_url, output_dir=directory), create=False)
    trials = optuna.load_study(study_name=f"{NAME}/gru_simple/adding", storage=storage).get_trials()
    client = MlflowClient(with_default_driver(cluster.url("mlflow")))
    experiment = client.get_experiment_by_name(NAME)
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return Scenario(results, trials, list(runs))


@pytest.fixture(scope="module")
def scenario(scenario_of: Any) -> Scenario:
    found = scenario_of(__name__)
    if found.missing:
        skip_without_postgres(found.missing)
    return found


def test_two_tuners_on_postgresql_run_the_budget_exactly_once(scenario: Scenario) -> None:
    from harness.tuning.tune import slot_holders

    for result in scenario.results:
        assert result.returncode == 0, result.explain()
    counted = slot_holders(scenario.trials)
    assert len(counted) == BUDGET and all(t.state.name == "COMPLETE" for t in counted)
    assert all(t in counted or t.user_attrs.get("surplus") is True for t in scenario.trials)


def test_the_best_configuration_is_retrained_once_into_the_shared_mlflow(scenario: Scenario, kit: Any) -> None:
    finished = [r for r in scenario.runs if r.info.status == "FINISHED"]
    assert len(finished) == 1 and kit.tag(finished[0], "tuned") == "1"
    best = min((t for t in scenario.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert int(kit.tag(finished[0], "tuning_trial")) == best.number
