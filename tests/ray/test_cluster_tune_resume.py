"""A trial of ``harness tune --executor ray`` interrupted mid-trial resumes from its checkpoint when run again.

The Ray counterpart of ``tests/tuning/test_trial_resume.py``: one study (gru on a small adding
problem), budget 1 trial × 5 epochs, no pruning, trials as Ray tasks on the test cluster, told
twice: as one process, and data-parallel (``training.devices: 2``: the task is rank 0 and starts
rank 1; only a node added with two CPUs fits it). The driver gets SIGINT as soon as the trial
task's epoch-1 checkpoint exists: it cancels the task, fails the trial and queues its values
again. The next ``harness tune --executor ray`` runs that retry as a new Ray task, which must
resume from the interrupted task's newest verified checkpoint (the driver says so and records it)
and end with the intermediate and final values of the same trial run without interruption (by
the local executor, beside it), bit for bit, each epoch reported once.
"""

from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness_processes import (
    Finished,
    assert_trial_equals_reference,
    mlflow_runs,
    start_harness,
    tag,
    tuning_experiment,
    write_experiment,
)
from ray_cluster import RAY_TIMEOUT, LocalCluster, node_with_cpus

pytestmark = pytest.mark.slow

NAME = "raytrialresume"
STUDY = f"{NAME}/gru/adding"
EPOCHS = 5
STEPS_PER_EPOCH = 20  # train_size / batch_size
EXPERIMENT = tuning_experiment(cell="gru", budget=1, train_size=320, length=10, max_epochs=EPOCHS)
#: The same study with each trial trained data-parallel (the global batch of 16 is 8 + 8 on two ranks), on
#: fewer examples: the ranks meet at every step, which on a busy 2-core machine waits for the descheduled one.
DATA_PARALLEL = tuning_experiment(cell="gru", budget=1, train_size=64, length=10, max_epochs=EPOCHS)
DATA_PARALLEL["training"]["devices"] = 2
STEPS_PER_EPOCH_DATA_PARALLEL = 4


def study_trials(directory: Path) -> list[Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = f"sqlite:///{directory / 'out' / 'optuna.db'}"
    return optuna.load_study(study_name=STUDY, storage=storage).get_trials()


@dataclass
class Scenario:
    reference: Finished
    interrupted: Finished
    rerun: Finished
    killed_at: int  # the newest epoch checkpoint on disk once the interrupted driver exited
    reference_trials: list[Any]
    trials: list[Any]
    runs: list[Any]  # MLflow trial runs of the interrupted folder
    checkpoints: Path
    devices: int  # training.devices of the study


@pytest.fixture(scope="module", params=[1, 2], ids=["one-process", "data-parallel"])
def scenario(request: pytest.FixtureRequest, ray_cluster: LocalCluster,
             tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    devices: int = request.param
    reference_dir, killed_dir = tmp_path_factory.mktemp("reference"), tmp_path_factory.mktemp("interrupted")
    for folder in (reference_dir, killed_dir):
        write_experiment(folder, NAME, DATA_PARALLEL if devices > 1 else EXPERIMENT, command="tune")
    ray = ("--executor", "ray", "--ray-address", ray_cluster.address)
    with node_with_cpus(ray_cluster, devices) if devices > 1 else contextlib.nullcontext():
        reference = start_harness(reference_dir, "tune", f"{NAME}.yaml", label="reference")  # local, meanwhile
        killed = start_harness(killed_dir, "tune", f"{NAME}.yaml", *ray, label="interrupted")
        checkpoints = killed_dir / "out" / "checkpoints"
        steps_per_epoch = STEPS_PER_EPOCH_DATA_PARALLEL if devices > 1 else STEPS_PER_EPOCH
        # Written by the Ray task, not the driver.
        killed.wait_for_file(checkpoints, f"tuning/**/step-{steps_per_epoch:010d}.ckpt.sha256", timeout=RAY_TIMEOUT)
        killed.signal(signal.SIGINT)
        interrupted = killed.finish(RAY_TIMEOUT)  # the driver cancelled its task before it exited
        killed_at = max(int(p.name[5:15]) for p in checkpoints.glob("tuning/**/step-*.ckpt.sha256")) // steps_per_epoch
        rerun = start_harness(killed_dir, "tune", f"{NAME}.yaml", *ray, label="rerun").finish(RAY_TIMEOUT)
    finished_reference = reference.finish(RAY_TIMEOUT)
    return Scenario(finished_reference, interrupted, rerun, killed_at, study_trials(reference_dir),
                    study_trials(killed_dir), mlflow_runs(killed_dir / "out", f"{NAME}-trials"), checkpoints, devices)


def test_the_interrupted_ray_trial_is_retried_and_resumes_from_its_checkpoint(scenario: Scenario) -> None:
    assert scenario.interrupted.returncode == 130, scenario.interrupted.explain()
    assert scenario.rerun.returncode == 0, scenario.rerun.explain()
    assert 1 <= scenario.killed_at < EPOCHS, "the SIGINT came too late to interrupt the trial"
    assert [t.state.name for t in scenario.trials] == ["FAIL", "COMPLETE"], scenario.rerun.explain()
    interrupted, retried = scenario.trials
    assert retried.params == interrupted.params and retried.system_attrs["retry_history"] == [0]
    epoch = retried.user_attrs["resumed_from_epoch"]
    assert scenario.killed_at <= epoch < EPOCHS
    assert f"resumed from epoch {epoch} checkpoint" in scenario.rerun.stderr, scenario.rerun.explain()
    runs = {run.info.run_id: run for run in scenario.runs}
    assert runs[interrupted.user_attrs["mlflow_run_id"]].info.status == "KILLED"
    run = runs[retried.user_attrs["mlflow_run_id"]]
    assert run.info.status == "FINISHED" and tag(run, "resumed_from_epoch") == str(epoch)
    assert run.data.params.get("training.devices", "1") == str(scenario.devices)  # given only when not 1
    assert tag(run, "resumed_from_run") == interrupted.user_attrs["mlflow_run_id"]


def test_the_resumed_ray_trial_equals_an_uninterrupted_one(scenario: Scenario) -> None:
    assert_trial_equals_reference(scenario.reference, scenario.reference_trials, scenario.trials, EPOCHS)


def test_the_checkpoints_are_discarded_once_the_ray_trial_completes(scenario: Scenario) -> None:
    assert list(scenario.checkpoints.glob("tuning/**/step-*.ckpt.sha256")) == []
