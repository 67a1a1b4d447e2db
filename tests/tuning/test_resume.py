"""An interrupted ``harness tune`` resumes to exactly its budget (subprocesses, real signals).

One study (gru on a small adding problem), budget 3 trials × 5 epochs, no pruning, with
epochs long enough to interrupt. Each signal goes out at the first epoch line of its trial: the
retried trial resumes from the interrupted attempt's newest checkpoint, so with 5 epochs it still
has epochs left to be killed in even when the first signal landed a few epochs late. The story, each step on the same output folder:

1. SIGINT during the second trial's training: exit 130; that trial is FAILED with the
   reason and queued again with the same values; its MLflow run is KILLED;
2. run again and ``kill -9`` during the retried trial's training (resumed from the first
   attempt's checkpoint when it had written one): nothing can clean up,
   so the trial stays RUNNING in Optuna and in MLflow;
3. run again to the end: the dead worker's trial is failed with the reason and retried,
   its MLflow run closed KILLED, and the study ends with exactly 3 counted trials.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness_processes import tuning_experiment

NAME = "resume"
BUDGET = 3
STUDY = f"{NAME}/gru/adding"
EPOCHS = 5
EXPERIMENT = tuning_experiment(cell="gru", budget=BUDGET, train_size=480, length=10, max_epochs=EPOCHS)


@dataclass
class Step:
    result: Any  # Finished
    trials: list[Any]  # Optuna trials after the step
    runs: list[Any]  # MLflow trial runs after the step, oldest first


@dataclass
class Scenario:
    directory: Path
    steps: dict[str, Step] = field(default_factory=dict)


def build_scenario(directory: Path, kit: Any) -> Scenario:
    kit.write_experiment(directory, NAME, EXPERIMENT)
    scenario, out = Scenario(directory), directory / "out"

    def step(label: str, number: int | None, trial: str) -> None:
        started = kit.start_harness(directory, "tune", f"{NAME}.yaml", label=label)
        if number is not None:
            # An epoch line of that trial (the retry resumes from the interrupted attempt's checkpoint,
            # so its first line may be epoch 2's).
            started.wait_for(f"/{EPOCHS}  ", after=f": trial {trial} (")
            started.process.send_signal(number)
        result = started.finish()
        scenario.steps[label] = Step(result, kit.study_trials(out, STUDY), kit.mlflow_runs(out, f"{NAME}-trials"))

    step("sigint", signal.SIGINT, "1")
    step("kill", signal.SIGKILL, "2")  # trial 2 is trial 1 queued again
    step("final", None, "")
    return scenario


@pytest.fixture(scope="module")
def scenario(scenario_of: Any) -> Scenario:
    return scenario_of(__name__)


def states(step: Step) -> list[str]:
    return [t.state.name for t in step.trials]


def test_sigint_fails_the_running_trial_and_queues_it_again(scenario: Scenario, kit: Any) -> None:
    step = scenario.steps["sigint"]
    assert step.result.returncode == 130, step.result.explain()
    assert "run `harness tune resume.yaml` again" in step.result.stderr
    assert states(step) == ["COMPLETE", "FAIL", "WAITING"], step.result.explain()
    interrupted, queued = step.trials[1], step.trials[2]
    assert interrupted.user_attrs["fail_reason"] == "interrupted by SIGINT"
    assert queued.params == interrupted.params
    assert queued.system_attrs["retry_history"] == [1]
    run = next(r for r in step.runs if r.info.run_id == interrupted.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED" and kit.tag(run, "failure_reason") == "interrupted by SIGINT"
    assert [r.info.status for r in step.runs] == ["FINISHED", "KILLED"]


def test_kill_9_leaves_the_trial_running(scenario: Scenario) -> None:
    step = scenario.steps["kill"]
    assert step.result.returncode == -signal.SIGKILL, step.result.explain()
    assert states(step) == ["COMPLETE", "FAIL", "RUNNING"]
    assert [r.info.status for r in step.runs] == ["FINISHED", "KILLED", "RUNNING"]


def test_the_final_run_ends_with_exactly_the_budget(scenario: Scenario, kit: Any) -> None:
    step = scenario.steps["final"]
    assert step.result.returncode == 0, step.result.explain()
    from harness.tuning.tune import slot_holders

    counted = slot_holders(step.trials)
    assert len(counted) == BUDGET and all(t.state.name == "COMPLETE" for t in counted)
    # Two attempts failed (SIGINT, kill -9), both retried with the same values; nothing is left open.
    assert states(step) == ["COMPLETE", "FAIL", "FAIL", "COMPLETE", "COMPLETE"]
    dead = step.trials[2]
    assert dead.user_attrs["fail_reason"].endswith("stopped without finishing")
    assert step.trials[3].system_attrs["retry_history"] == [1, 2]
    assert step.trials[3].params == step.trials[1].params
    assert "trial 2: worker" in step.result.stderr and "queued again" in step.result.stderr
    orphan = next(r for r in step.runs if r.info.run_id == dead.user_attrs["mlflow_run_id"])
    assert orphan.info.status == "KILLED" and kit.tag(orphan, "reconciled") == "1"
    assert sorted(r.info.status for r in step.runs) == ["FINISHED"] * BUDGET + ["KILLED"] * 2
    # The study's result was re-trained once (one seed) and reported.
    assert f"{STUDY}: 3 complete, 0 pruned, 0 fail of 3 trials" in step.result.stdout
    assert "re-training 1 finished, 0 failed" in step.result.stdout
