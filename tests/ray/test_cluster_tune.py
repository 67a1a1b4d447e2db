"""``harness tune --executor ray`` on the test cluster, against the local tuner on the same file.

Two cells on a tiny adding problem, 4 trials each of at most 3 epochs, a seeded random sampler
and a median pruner that prunes from the second trial on (``startup_trials: 1``). Trials train
as Ray tasks that ask the driver after each epoch whether to go on; the driver's study decides.
One trial per study is in flight at a time, so the Ray studies must equal the local ones:
the same budget, the same states (pruned ones included), the same values. A third driver,
interrupted with SIGINT while its trial trains, must cancel the task and queue the trial again.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from harness_processes import Finished, mlflow_runs, start_harness, tag, write_experiment
from ray_cluster import RAY_TIMEOUT, LocalCluster, wait_until

pytestmark = pytest.mark.slow

NAME = "raytune"
TRIALS = 4
CELLS = ["vanilla", "gru_simple"]
EXPERIMENT: dict[str, Any] = {
    "cells": CELLS,
    "tasks": [{"name": "adding", "options": {"train_size": 64, "validation_size": 32, "test_size": 32,
                                             "length": 6}}],
    "seeds": [0],
    "model": {"hidden_size": 4},
    "training": {"max_epochs": 3, "batch_size": 32, "cpu_threads": 1},
    "device": "cpu",
    "output_dir": "out",
    "reports_dir": "reports",
    "tuning": {
        "trials": TRIALS,
        "sampler": {"name": "random", "seed": 0},
        "pruner": {"name": "median", "startup_trials": 1},
        "search_space": {"training.learning_rate": {"type": "float", "low": 1e-4, "high": 0.3, "log": True}},
    },
}


@dataclass
class Tuned:
    directory: Path
    result: Finished

    def trials(self, cell: str) -> list[Any]:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        storage = f"sqlite:///{self.directory / 'out' / 'optuna.db'}"
        return optuna.load_study(study_name=f"{NAME}/{cell}/adding", storage=storage).get_trials()

    def runs(self, experiment: str) -> list[Any]:
        return mlflow_runs(self.directory / "out", experiment)


@pytest.fixture(scope="module")
def tuned(ray_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tuned]:
    folders = {"ray": tmp_path_factory.mktemp("tune-ray"), "local": tmp_path_factory.mktemp("tune-local")}
    for folder in folders.values():
        write_experiment(folder, NAME, EXPERIMENT, command="tune")
    # The Ctrl-C story's driver too: all three start together, so their start-ups overlap.
    folders["interrupted"] = tmp_path_factory.mktemp("tune-ray-interrupted")
    long = {**EXPERIMENT, "cells": ["vanilla"], "training": {**EXPERIMENT["training"], "max_epochs": 500}}
    write_experiment(folders["interrupted"], NAME, long, command="tune")
    started = {
        "ray": start_harness(folders["ray"], "tune", f"{NAME}.yaml", "--executor", "ray",
                             "--ray-address", ray_cluster.address, label="tune ray"),
        "local": start_harness(folders["local"], "tune", f"{NAME}.yaml", label="tune local"),
        "interrupted": start_harness(folders["interrupted"], "tune", f"{NAME}.yaml", "--executor", "ray",
                                     "--ray-address", ray_cluster.address, label="tune ray interrupted"),
    }
    started["interrupted"].wait_for("epoch 2/", timeout=RAY_TIMEOUT)  # its trial's Ray task is training
    started["interrupted"].signal(signal.SIGINT)
    found = {name: Tuned(folders[name], process.finish(RAY_TIMEOUT)) for name, process in started.items()}
    for name in ("ray", "local"):
        assert found[name].result.returncode == 0, f"{name}: {found[name].result.explain()}"
    return found


@pytest.mark.parametrize("cell", CELLS)
def test_each_study_gets_exactly_its_budget(tuned: dict[str, Tuned], cell: str) -> None:
    states = [t.state.name for t in tuned["ray"].trials(cell)]
    assert len(states) == TRIALS, states
    assert set(states) <= {"COMPLETE", "PRUNED"}, states


def test_trials_were_pruned_early_on_the_workers(tuned: dict[str, Tuned]) -> None:
    pruned = [t for cell in CELLS for t in tuned["ray"].trials(cell) if t.state.name == "PRUNED"]
    assert pruned, "the median pruner with startup_trials 1 prunes at least one trial"
    for trial in pruned:  # stopped training where the pruner said so, not after max_epochs
        assert trial.user_attrs["epochs"] == max(trial.intermediate_values) < EXPERIMENT["training"]["max_epochs"]


@pytest.mark.parametrize("cell", CELLS)
def test_the_ray_study_equals_the_local_one(tuned: dict[str, Tuned], cell: str) -> None:
    def story(trials: list[Any]) -> list[Any]:
        return [(t.number, t.state.name, t.params, t.value, t.intermediate_values) for t in trials]

    assert story(tuned["ray"].trials(cell)) == story(tuned["local"].trials(cell))


def test_mlflow_holds_one_record_per_trial_as_the_local_tuner_writes_it(tuned: dict[str, Tuned]) -> None:
    def records(one: Tuned) -> dict[tuple[str | None, str | None], Any]:
        runs = one.runs(f"{NAME}-trials")
        found = {(tag(run, "study"), tag(run, "trial_number")): run for run in runs}
        assert len(found) == len(runs) == TRIALS * len(CELLS)
        return found

    ray_runs, local_runs = records(tuned["ray"]), records(tuned["local"])
    assert set(ray_runs) == set(local_runs)
    trials = {(f"{NAME}/{cell}/adding", str(t.number)): t for cell in CELLS for t in tuned["ray"].trials(cell)}
    timings = {"wall_time_s", "test_time_s", "train_time_s", "epoch_time_s"}
    for key, run in ray_runs.items():
        local = local_runs[key]
        assert trials[key].user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.info.status == local.info.status == "FINISHED"
        assert tag(run, "status") == tag(local, "status")  # PRUNED for a pruned trial
        assert (tag(run, "status") == "PRUNED") == (trials[key].state.name == "PRUNED")
        assert set(run.data.metrics) == set(local.data.metrics)
        same = {k for k in run.data.metrics if k not in timings and not k.endswith("_s")}
        assert {k: run.data.metrics[k] for k in same} == {k: local.data.metrics[k] for k in same}


def test_best_values_are_retrained_on_ray_and_reported(tuned: dict[str, Tuned]) -> None:
    one = tuned["ray"]
    retrained = one.runs(NAME)
    assert len(retrained) == len(CELLS)
    assert {tag(run, "executor") for run in retrained} == {"ray"}
    assert {tag(run, "tuned") for run in retrained} == {"1"}
    assert (one.directory / "reports" / NAME / "report.md").exists()


def test_ctrl_c_cancels_the_trial_task_and_queues_the_trial_again(tuned: dict[str, Tuned]) -> None:
    interrupted = tuned["interrupted"]
    assert interrupted.result.returncode == 130, interrupted.result.explain()
    trials = interrupted.trials("vanilla")
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]  # failed, queued again with its values
    assert trials[1].params == trials[0].params
    assert "interrupted by SIGINT" in trials[0].user_attrs["fail_reason"]
    (run,) = interrupted.runs(f"{NAME}-trials")
    assert run.info.status == "KILLED"

    def trial_tasks() -> list[Any]:
        found = []
        for process in psutil.Process().children(recursive=True):  # this worker's cluster, not another's
            try:
                if " ".join(process.cmdline()).startswith("ray::trial "):
                    found.append(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return found

    wait_until(lambda: not trial_tasks(), "the trial's Ray task cancelled", timeout=30)
