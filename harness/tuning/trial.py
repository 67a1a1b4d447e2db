"""One tuning trial: train one configuration, report every epoch to Optuna, record it in MLflow.

A trial is an ordinary single run (the file narrowed to one cell, one task and the first
seed, with the trial's values set) recorded as one MLflow run in ``<experiment>-trials``.
How it ends, in Optuna and in MLflow:

=====================  ======================  ==============================================
what happened          Optuna trial            MLflow run (``harness.status`` tag)
=====================  ======================  ==============================================
trained to the end     COMPLETE (the value)    FINISHED
pruned after epoch k   PRUNED                  FINISHED, status tag ``PRUNED`` (stopped on purpose)
NaN/±inf loss/metric   FAIL (``fail_reason``)  FAILED, reason ``nonfinite: …``
SIGINT/SIGTERM         FAIL, queued again      KILLED, reason ``interrupted by SIGINT``
tuning.metric unknown  FAIL, queued again      FAILED, reason ``bad_input: …`` (search stops, exit 2)
any other error        FAIL (``fail_reason``)  FAILED, ``error.txt`` artifact
lease lost             FAIL by another worker  KILLED, reason ``lease lost: …``
=====================  ======================  ==============================================

*Lease lost*: another worker failed the trial and queued it again while this one still trained
it (its heartbeats stopped reaching the storage in time: a paused or cut-off machine). Found at
the next write to the trial (each epoch's report, or a last look before it is recorded
COMPLETE), or on any other failure of the attempt (writing a checkpoint into the folder the
finished retry deleted), the attempt stops there and records nothing in Optuna, and leaves the
checkpoints to the retry, whose they are now; the tuner goes on with its next trial.

A trial queued again after an interruption resumes from the interrupted attempt's newest
verified checkpoint (:mod:`harness.training.trial_checkpoints`); the epochs it restores are
reported to the new Optuna trial once each, without asking the pruner again.

The objective is the validation metric after the last epoch: the model the re-training
runs will test is the one at the end of training, not the best epoch's.
"""

from __future__ import annotations

import json
import math
import sys
import traceback
from dataclasses import dataclass
from typing import Any

import optuna
import pytorch_lightning as pl

from harness.experiment import LoadedExperiment
from harness.core.errors import BadInputError, HarnessError
from harness.training.finite import NonFiniteLossError
from harness.training.interrupts import Interrupts, RunInterrupted
from harness.runs.grid import RunSpec, expand_grid
from harness.runs.task_data import load_task
from harness.core.tasks import Task, TaskData
from harness.runs.tracking import PRUNED as PRUNED_STATUS
from harness.runs.tracking import Tracker, run_params
from harness.training.resume import Resumable, record_resume
from harness.training.trainer import seeded_network, train_run
from harness.training.trial_checkpoints import discard_trial_checkpoints, trial_checkpoints, trial_key
from harness.tuning.space import StudyPlan, apply_params

COMPLETE, PRUNED, FAIL = "COMPLETE", "PRUNED", "FAIL"


class NonFiniteObjectiveError(HarnessError):
    """The optimised validation metric is NaN or ±inf: the trial fails, it never completes."""


@dataclass(frozen=True)
class TrialOutcome:
    state: str  # COMPLETE | PRUNED | FAIL
    value: float | None = None
    reason: str = ""
    epochs: int = 0
    #: Not the trial's fault (interrupted, bad input): run it again with the same values.
    retry: bool = False
    #: Raised again by the tuner once the trial is recorded (it stops the search).
    stop: BaseException | None = None
    #: Another worker failed the trial (our lease ran out): nothing of it is ours to record.
    lost: bool = False


#: Why an attempt whose trial another worker failed stops (see the module docstring).
LEASE_LOST = ("lease lost: another worker failed the trial and queued it again (this worker's heartbeats "
              "stopped reaching the storage in time)")


def check_still_ours(trial: optuna.Trial) -> None:
    """Raise Optuna's ``UpdateFinishedTrialError``, as a write would, if another worker has ended ``trial``."""
    # _trial_id: Optuna has no public way to read one trial of a running study by its own object
    trial.storage.check_trial_is_updatable(trial._trial_id, trial.storage.get_trial(trial._trial_id).state)


def taken_over(trial: optuna.Trial) -> bool:
    """Whether another worker has ended ``trial`` (False also when the storage cannot say)."""
    try:
        check_still_ours(trial)
    except optuna.exceptions.UpdateFinishedTrialError:
        return True
    except Exception:  # noqa: BLE001 - asked on an error path: the error at hand is the one to report
        return False
    return False


class PruningCallback(pl.Callback):
    """Reports the validation metric to the trial after each epoch; raises TrialPruned when the pruner says so.

    Epochs count from 1, so a successive-halving ``min_epochs`` and a median pruner's
    ``warmup_epochs`` read as epochs trained.
    """

    def __init__(self, trial: optuna.Trial, monitor: str, guard: Interrupts) -> None:
        self.trial, self.monitor, self.guard = trial, monitor, guard
        self.values: list[float] = []

    def restore(self, history: list[dict[str, float]]) -> None:
        """Epochs restored from a checkpoint: report each one not yet reported to this trial (no pruning:
        the interrupted attempt already went on past them)."""
        reported = set(getattr(getattr(self.trial, "_cached_frozen_trial", None), "intermediate_values", {}) or {})
        for epoch, metrics in enumerate(history, start=1):
            if self.monitor not in metrics:
                continue
            value = float(metrics[self.monitor])
            self.values.append(value)
            if epoch not in reported:
                with self.guard.critical():
                    self.trial.report(value, epoch)

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        metrics = module.current_epoch_metrics()  # type: ignore[operator]
        epoch = trainer.current_epoch + 1
        pruned = self.observe(epoch, metrics)
        self.guard.check()
        if pruned is not None:
            raise optuna.TrialPruned(pruned)

    def observe(self, epoch: int, metrics: dict[str, float]) -> str | None:
        """Report epoch ``epoch``'s validation metric to the trial: the pruning message if it must stop.

        Shared by both executors: locally this callback calls it inside the training, with
        ``executor: ray`` the driver calls it for each epoch a Ray task reports (:mod:`harness.tuning.ray_trials`).
        """
        if self.monitor not in metrics:
            logged = ", ".join(sorted(k[len("val_"):] for k in metrics if k.startswith("val_"))) or "none"
            raise BadInputError(f"tuning.metric: this task never logs the validation metric "
                                f"{self.monitor!r}; the metrics it logs: {logged}")
        value = float(metrics[self.monitor])
        if not math.isfinite(value):
            raise NonFiniteObjectiveError(f"{self.monitor} is {value} after epoch {epoch}")
        self.values.append(value)
        with self.guard.critical():
            self.trial.report(value, epoch)
            prune = self.trial.should_prune()
        return f"pruned after epoch {epoch}: {self.monitor} {value:.4g}" if prune else None


class TrialExecutor:
    """Trains trials of one experiment; the MLflow store and loaded task data are shared by all."""

    def __init__(self, loaded: LoadedExperiment, plugins: Any, tracker: Tracker, guard: Interrupts,
                 *, verbose: bool, task_data: dict[str, tuple[Task, TaskData]] | None = None) -> None:
        self.loaded, self.plugins, self.tracker, self.guard, self.verbose = loaded, plugins, tracker, guard, verbose
        self.seed = loaded.experiment.seeds[0]
        #: Loaded and checked tasks (:func:`harness.runs.task_data.load_task`; ``tune`` reads the file's first).
        self._task_data = task_data if task_data is not None else {}

    def open(self) -> None:
        """Before the first trial (the local executor needs nothing; the Ray one joins the cluster)."""

    def close(self) -> None:
        """After the last trial, whatever happened."""

    def run(self, plan: StudyPlan, trial: optuna.Trial, params: dict[str, Any]) -> TrialOutcome:
        """Train ``params``; always returns how the trial ended (its MLflow run is closed)."""
        try:
            trial_loaded = apply_params(self.loaded, plan, params, [self.seed])
            spec = expand_grid(trial_loaded, self.plugins)[0]
        except BadInputError as error:  # values the search space allowed but the model rejects
            return TrialOutcome(FAIL, reason=f"bad_values: {error}")
        run_id = None
        pruning = PruningCallback(trial, plan.monitor, self.guard)
        checkpoint_key = trial_key(plan.name, trial, params)  # shared with the trials this one retries
        try:
            with self.guard.critical():
                run_id = self._start(plan, trial, spec, params)
            self.guard.check()
            result = self._train(trial_loaded, spec, run_id, pruning, checkpoint_key)
            value = pruning.values[-1]
            check_still_ours(trial)  # failed by another worker during the last epoch: not COMPLETE here
        except optuna.exceptions.UpdateFinishedTrialError:  # any write to the trial, or the look above
            outcome = TrialOutcome(FAIL, reason=LEASE_LOST, epochs=len(pruning.values), lost=True)
        except optuna.TrialPruned as pruned:
            outcome = TrialOutcome(PRUNED, pruning.values[-1], str(pruned), len(pruning.values))
        except RunInterrupted as interrupted:
            outcome = TrialOutcome(FAIL, reason=str(interrupted), epochs=len(pruning.values), retry=True,
                                   stop=interrupted)
        except (NonFiniteLossError, NonFiniteObjectiveError) as error:
            outcome = TrialOutcome(FAIL, reason=f"nonfinite: {error}", epochs=len(pruning.values))
        except BadInputError as error:
            outcome = TrialOutcome(FAIL, reason=f"bad_input: {error}", retry=True, stop=error)
        except Exception as error:  # noqa: BLE001 - one broken trial must not end the search
            if run_id is not None:
                self.tracker.log_text(run_id, traceback.format_exc(), "error.txt")
            outcome = TrialOutcome(FAIL, reason=f"error: {type(error).__name__}: {error}",
                                   epochs=len(pruning.values))
        else:
            with self.guard.critical():
                self.tracker.log_metrics(run_id, {**result.test_metrics, "objective": value,
                                                  "wall_time_s": result.wall_time_s, "epochs": result.epochs})
            outcome = TrialOutcome(COMPLETE, value, epochs=len(pruning.values))
        if outcome.state == FAIL and not outcome.lost and taken_over(trial):
            # Whatever stopped this attempt came after another worker had failed the trial and queued its retry
            # (e.g. the retry, finished, deleted the checkpoint folder this attempt was writing to): lost.
            outcome = TrialOutcome(FAIL, reason=LEASE_LOST, epochs=outcome.epochs, stop=outcome.stop, lost=True)
        if run_id is not None:
            self._close(run_id, outcome)
        if not outcome.retry and not outcome.lost:  # ended for good: the checkpoints only served a retry
            discard_trial_checkpoints(self.loaded.output_dir, checkpoint_key)
        return outcome

    def _start(self, plan: StudyPlan, trial: optuna.Trial, spec: RunSpec, params: dict[str, Any]) -> str:
        task_class = spec.task.plugin_class
        tags = {
            "run_key": spec.key, "cell": spec.cell.label, "cell_name": spec.cell.name, "task": spec.task.label,
            "task_name": spec.task.name, "family": task_class.family, "seed": spec.seed,
            "primary_metric": task_class.primary_metric, "higher_is_better": task_class.higher_is_better,
            "param_count": spec.stack_param_count, **spec.plugin_tags(),
            "experiment_file": str(self.loaded.path), "study": plan.name, "trial_number": trial.number,
            "trial_params": json.dumps(params, sort_keys=True), "objective": f"{plan.monitor} ({plan.direction})",
        }
        run_id = self.tracker.start_run(f"{spec.cell.label}-{spec.task.label}-t{trial.number}", tags,
                                        run_params(spec.config, spec.key))
        self.tracker.log_text(run_id, json.dumps(spec.config, indent=2, sort_keys=True), "config.json")
        trial.set_user_attr("mlflow_run_id", run_id)
        return run_id

    def _train(self, trial_loaded: LoadedExperiment, spec: RunSpec, run_id: str, pruning: PruningCallback,
               checkpoint_key: str) -> Any:
        task, data = self._load_task(spec)
        experiment = trial_loaded.experiment  # the file's settings with the trial's values
        plan, net = seeded_network(spec.cell.plugin_class, spec.cell.config, task, data, experiment.model, spec.seed)
        self.tracker.log_resolved_hidden_size(run_id, spec.config, plan.hidden_size)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            with self.guard.critical():
                self.tracker.log_metrics(run_id, metrics, step=epoch)
            self.guard.check()

        checkpoints = trial_checkpoints(
            self.loaded.output_dir, checkpoint_key, data, run_id=run_id,
            every_minutes=experiment.checkpoint_minutes, say=self.say,
            on_resume=lambda resumed: self._resumed(run_id, pruning, resumed))
        return train_run(net, task, data, experiment.training, seed=spec.seed, device=experiment.device,
                         hyperparameters=spec.config, on_epoch=on_epoch, verbose=self.verbose,
                         extra_callbacks=[pruning], checkpoints=checkpoints)

    def _resumed(self, run_id: str, pruning: PruningCallback, resumed: Resumable) -> None:
        """The trial resumed from ``resumed``: tag its MLflow run, copy the restored epochs there and report
        them to the Optuna trial (shared with the Ray executor, whose driver learns it from the task)."""
        with self.guard.critical():
            record_resume(self.tracker, run_id, resumed)
            pruning.trial.set_user_attr("resumed_from_epoch", resumed.epochs_done)
        pruning.restore(resumed.history)

    def _load_task(self, spec: RunSpec) -> tuple[Task, TaskData]:
        return load_task(spec.task, self._task_data)

    def _close(self, run_id: str, outcome: TrialOutcome) -> None:
        with self.guard.critical():
            if outcome.state == COMPLETE:
                self.tracker.end_run(run_id, "FINISHED")
            elif outcome.state == PRUNED:
                self.tracker.end_run(run_id, PRUNED_STATUS, outcome.reason)  # stopped on purpose, not broken
            else:
                status = "KILLED" if outcome.lost or isinstance(outcome.stop, RunInterrupted) else "FAILED"
                self.tracker.end_run(run_id, status, outcome.reason)

    def say(self, message: str) -> None:
        if self.verbose:
            print(message, file=sys.stderr, flush=True)
