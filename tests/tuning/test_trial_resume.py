"""A trial interrupted by ``kill -9`` of ``harness tune`` resumes from its checkpoint when run again.

One study (gru on a small adding problem), budget 1 trial × 4 epochs, no pruning, told twice: as
one process, and data-parallel (``training.devices: 2``, CPU ranks over gloo, rank 0 being
``harness tune``). ``harness tune`` is SIGKILLed as soon as the trial's epoch-1 checkpoint
exists; the next ``harness tune`` fails the dead worker's trial and queues its values again, and
that retry resumes from the killed trial's newest verified checkpoint
(``out/checkpoints/tuning/<study>/trial-0-<values hash>/``). Its intermediate values (one per
epoch, the restored ones reported once) and its final value equal those of the same trial run
without interruption in another folder, bit for bit.
"""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness_processes import assert_trial_equals_reference, tuning_experiment

NAME = "trialresume"
STUDY = f"{NAME}/gru/adding"
EPOCHS = 4
STEPS_PER_EPOCH = 20  # train_size / batch_size
EXPERIMENT = tuning_experiment(cell="gru", budget=1, train_size=320, length=10, max_epochs=EPOCHS)
#: The same study with each trial trained data-parallel: the global batch of 16 is 8 + 8 on two ranks.
DATA_PARALLEL = {**EXPERIMENT, "training": {**EXPERIMENT["training"], "devices": 2}}
DEVICES = {1: EXPERIMENT, 2: DATA_PARALLEL}


@dataclass
class Scenario:
    reference: Any  # Finished
    rerun: Any  # Finished
    killed_at: int  # the newest epoch checkpoint on disk when harness tune was killed
    reference_trials: list[Any]
    trials: list[Any]
    runs: list[Any]  # MLflow trial runs of the killed folder
    checkpoints: Path
    devices: int  # training.devices of the study


def build_scenario(directory: Path, kit: Any) -> dict[int, Scenario]:
    """Both stories at once, one per ``training.devices``."""
    with ThreadPoolExecutor(max_workers=len(DEVICES)) as pool:
        stories = {devices: pool.submit(_build, directory / f"devices-{devices}", kit, experiment)
                   for devices, experiment in DEVICES.items()}
        return {devices: story.result() for devices, story in stories.items()}


def _build(directory: Path, kit: Any, experiment: dict[str, Any]) -> Scenario:
    reference_dir, killed_dir = directory / "reference", directory / "killed"
    for folder in (reference_dir, killed_dir):
        folder.mkdir(parents=True)
        kit.write_experiment(folder, NAME, experiment)
    reference = kit.start_harness(reference_dir, "tune", f"{NAME}.yaml", label="reference")
    killed = kit.start_harness(killed_dir, "tune", f"{NAME}.yaml", label="killed")
    checkpoints = killed_dir / "out" / "checkpoints"
    killed.wait_for_file(checkpoints, f"tuning/**/step-{STEPS_PER_EPOCH:010d}.ckpt.sha256")
    killed.signal(signal.SIGKILL)
    assert killed.finish().returncode == -signal.SIGKILL
    killed_at = max(int(p.name[5:15]) for p in checkpoints.glob("tuning/**/step-*.ckpt.sha256")) // STEPS_PER_EPOCH
    rerun = kit.start_harness(killed_dir, "tune", f"{NAME}.yaml", label="rerun").finish()
    finished_reference = reference.finish()
    return Scenario(finished_reference, rerun, killed_at, kit.study_trials(reference_dir / "out", STUDY),
                    kit.study_trials(killed_dir / "out", STUDY), kit.mlflow_runs(killed_dir / "out", f"{NAME}-trials"),
                    checkpoints, experiment["training"].get("devices", 1))


@pytest.fixture(scope="module", params=sorted(DEVICES), ids=lambda devices: f"devices-{devices}")
def scenario(request: pytest.FixtureRequest, scenario_of: Any) -> Scenario:
    return scenario_of(__name__)[request.param]


def test_the_killed_trial_is_retried_and_resumes_from_its_checkpoint(scenario: Scenario, kit: Any) -> None:
    assert scenario.rerun.returncode == 0, scenario.rerun.explain()
    assert 1 <= scenario.killed_at < EPOCHS
    assert [t.state.name for t in scenario.trials] == ["FAIL", "COMPLETE"], scenario.rerun.explain()
    killed, retried = scenario.trials
    assert retried.params == killed.params and retried.system_attrs["retry_history"] == [0]
    epoch = retried.user_attrs["resumed_from_epoch"]
    assert scenario.killed_at <= epoch < EPOCHS
    assert f"resumed from epoch {epoch} checkpoint" in scenario.rerun.stderr, scenario.rerun.explain()
    run = next(r for r in scenario.runs if r.info.run_id == retried.user_attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED" and kit.tag(run, "resumed_from_epoch") == str(epoch)
    assert run.data.params.get("training.devices", "1") == str(scenario.devices)  # given only when not 1


def test_the_resumed_trial_equals_an_uninterrupted_one(scenario: Scenario) -> None:
    assert_trial_equals_reference(scenario.reference, scenario.reference_trials, scenario.trials, EPOCHS)


def test_the_checkpoints_are_discarded_once_the_trial_completes(scenario: Scenario) -> None:
    assert not list(scenario.checkpoints.glob("tuning/**/*.ckpt"))
