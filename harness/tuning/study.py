"""One Optuna study driven to its budget: count, ask, train, tell, and clean up after dead workers.

**Budget.** A study gets ``tuning.trials`` trials. It is a total, never "N more": before every
ask the study's trials are counted, and a trial holds a slot when it is COMPLETE, PRUNED,
RUNNING, WAITING (a queued retry) or FAIL, except a FAIL that was retried or that was a
surplus ask (below). So a resumed search runs only what is missing.

**Several processes.** Two workers can count N-1 at once and both ask. So after its ask a
worker counts the slot-holding trials numbered below its own (Optuna numbers trials in the
order they are created); if they already fill the budget, the new trial is told FAIL with
``surplus`` set, holds no slot and never trains. The budget is never exceeded; if a
conservative count (a lower trial that was about to become surplus itself) leaves a slot
free, the loop asks again.

**Liveness.** Every RUNNING trial carries its worker (``host:pid:random``) and a lease that a
heartbeat thread renews (user attributes, so this works on every storage: Optuna's own
heartbeat needs ``optimize()`` and RDB storage, and JournalStorage has none, optuna#6615).
Before counting, a RUNNING trial whose worker process is gone (same host) or whose lease
expired is told FAIL with the reason and queued again with the same values (at most
``tuning.max_retries`` times), following the conventions of Optuna's
RetryHeartbeatStaleTrialCallback (``failed_trial``/``retry_history``) without inheriting the
dead trial's attributes (its worker, lease and reason would mislead the next owner). A worker
that was only paused or cut off finds its trial failed at its next write to it (lease lost,
:mod:`harness.tuning.trial`): it stops that trial, records nothing of it and asks for the next.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.experiment import TuningSettings
from harness.training.interrupts import Interrupts
from harness.runs.identity import dead_local_owner
from harness.runs.runner import RunInterrupted
from harness.runs.tracking import Tracker
from harness.tuning.space import StudyPlan, suggest
from harness.tuning.trial import COMPLETE, FAIL, LEASE_LOST, PRUNED, TrialExecutor, TrialOutcome

__all__ = ["StudyDriver", "StudyResult", "Worker", "slot_holders"]

#: How often a worker with nothing left to ask looks again at trials other workers are running.
POLL_SECONDS = 2.0


def slot_holders(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that count toward a study's budget (see the module docstring)."""
    retried = {t.system_attrs["retry_history"][-1] for t in trials if t.system_attrs.get("retry_history")}
    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING,
                                              TrialState.WAITING)
            or (t.state == TrialState.FAIL and not t.user_attrs.get("surplus") and t.number not in retried)]


@dataclass
class StudyResult:
    """What one study ended with, for the summary line and the exit code."""

    plan: StudyPlan
    budget: int
    counts: dict[str, int] = field(default_factory=dict)
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    best_number: int | None = None


@dataclass(frozen=True)
class Worker:
    """This process as the studies see it."""

    id: str  # host:pid:random (harness.runs.identity.worker_id)
    #: A RUNNING trial whose lease is older is taken for dead: the run ledger's --lease-seconds.
    lease_seconds: float
    guard: Interrupts
    #: The trials' MLflow store (to close a dead worker's run).
    tracker: Tracker
    say: Callable[[str], None]
    #: Seconds since the epoch for leases; tests pass a manual clock to expire a lease without sleeping.
    clock: Callable[[], float] = time.time


class StudyDriver:
    """Drives one study to its budget: reconcile, count, ask, train, tell."""

    def __init__(self, plan: StudyPlan, study: optuna.Study, storage: optuna.storages.BaseStorage,
                 tuning: TuningSettings, worker: Worker) -> None:
        self.plan, self.study, self.storage, self.tuning = plan, study, storage, tuning
        self.guard, self.tracker, self.say = worker.guard, worker.tracker, worker.say
        self.worker, self.lease, self.clock = worker.id, worker.lease_seconds, worker.clock
        self.heartbeat_every = self.lease / 6  # as the run ledger's heartbeat
        self.budget = tuning.trials

    def drive(self, executor: TrialExecutor) -> StudyResult:
        waiting_said = False
        while True:
            self.guard.check()
            with self.guard.critical():
                self.reconcile()
                trials = self.study.get_trials(deepcopy=False)
            holders = slot_holders(trials)
            if len(holders) < self.budget or any(t.state == TrialState.WAITING for t in trials):
                with self.guard.critical():  # a signal here is handled by the trial's own ending
                    claimed = self._claim()
                    if claimed is not None:
                        trial, params = claimed[0], suggest(claimed[0], self.plan.space)
                        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())
                        self.say(f"{self._label()}: trial {trial.number} ({min(claimed[1], self.budget)}/"
                                 f"{self.budget} of the budget): {shown}")
                if claimed is not None:
                    self._run(trial, params, executor)
                continue
            running = [t.number for t in trials if t.state == TrialState.RUNNING]
            if not running:
                return self.result()
            if not waiting_said:
                self.say(f"{self._label()}: budget reached; waiting for trial(s) {running} of other workers")
                waiting_said = True
            time.sleep(POLL_SECONDS)

    def reconcile(self) -> None:
        """RUNNING trials whose worker is gone: FAIL with the reason, queued again, MLflow run KILLED."""
        now = self.clock()
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if self._alive(trial, now):
                continue
            reason = f"worker {trial.user_attrs.get('worker', '(unknown)')} stopped without finishing"
            try:  # _trial_id: Optuna has no public way to write another process's trial by number
                self.storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
                self.study.tell(trial.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
                continue  # another worker reconciled it first
            retried = self._retry(trial)
            run_id = trial.user_attrs.get("mlflow_run_id")
            if run_id:
                self.tracker.set_tags(run_id, {"reconciled": 1})
                self.tracker.end_run(run_id, "KILLED", reason)
            outcome = "queued again" if retried else f"not retried (max_retries {self.tuning.max_retries})"
            self.say(f"{self._label()}: trial {trial.number}: {reason}; {outcome}")

    def result(self) -> StudyResult:
        trials = self.study.get_trials(deepcopy=False)
        counts = {state: sum(t.state.name == state for t in slot_holders(trials)) for state in (COMPLETE, PRUNED, FAIL)}
        result = StudyResult(self.plan, self.budget, counts)
        if counts[COMPLETE]:
            best = self.study.best_trial
            result.best_value, result.best_params, result.best_number = best.value, dict(best.params), best.number
        return result

    # -- one trial ---------------------------------------------------------

    def _claim(self) -> tuple[optuna.Trial, int] | None:
        """Ask for a trial (a queued retry first) and its place in the budget; None when it was surplus."""
        trial = self.study.ask()
        now = self.clock()
        # One write per attribute, the worker last: a reader that sees who holds the trial also
        # sees its lease (the worker first left a window in which another tuner's reconcile found
        # a trial with an owner and no lease, judged it dead and failed it under its live owner).
        for key, value in (("lease_expires", now + self.lease), ("claimed_at", now), ("worker", self.worker)):
            trial.set_user_attr(key, value)
        trials = self.study.get_trials(deepcopy=False)
        mine = next(t for t in trials if t.number == trial.number)
        below = [t for t in slot_holders(trials) if t.number < trial.number]
        if mine.system_attrs.get("retry_history") or len(below) < self.budget:
            return trial, len(below) + 1  # a retry takes the slot of the trial it replaces
        trial.set_user_attr("surplus", True)
        trial.set_user_attr("fail_reason", "surplus: the budget was filled by other workers while this one asked")
        self.study.tell(trial, state=TrialState.FAIL)
        return None

    def _run(self, trial: optuna.Trial, params: dict[str, Any], executor: TrialExecutor) -> None:
        stop_heartbeat = self._heartbeat(trial)
        try:
            outcome = executor.run(self.plan, trial, params)
        except RunInterrupted as interrupted:  # arrived before the executor's own handling began
            outcome = TrialOutcome(FAIL, reason=str(interrupted), retry=True, stop=interrupted)
        finally:
            stop_heartbeat()
        with self.guard.critical():
            try:
                self._tell(trial, outcome)
            except optuna.exceptions.UpdateFinishedTrialError:  # failed by another worker since the executor looked
                outcome = TrialOutcome(FAIL, reason=LEASE_LOST, epochs=outcome.epochs, stop=outcome.stop, lost=True)
        self.say(f"    {self._describe(outcome)}")
        if outcome.stop is not None:
            raise outcome.stop

    def _tell(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        if outcome.lost:  # another worker failed it and queued its retry: nothing here is ours to write
            return
        trial.set_user_attr("epochs", outcome.epochs)
        if outcome.state == COMPLETE:
            self.study.tell(trial, outcome.value)
            return
        trial.set_user_attr("fail_reason" if outcome.state == FAIL else "pruned_reason", outcome.reason)
        self.study.tell(trial, state=TrialState.PRUNED if outcome.state == PRUNED else TrialState.FAIL)
        if outcome.retry:  # not the trial's fault (a signal, a bad file): always run it again
            frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
            self._retry(frozen, always=True)

    def _retry(self, trial: FrozenTrial, *, always: bool = False) -> bool:
        """Queue the same values again (WAITING); a dead worker's trial at most max_retries times."""
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if not always and len(history) > self.tuning.max_retries:
            return False
        self.study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            system_attrs={"failed_trial": history[0], "retry_history": history}))
        return True

    def _heartbeat(self, trial: optuna.Trial) -> Any:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_every):
                try:
                    trial.set_user_attr("lease_expires", self.clock() + self.lease)
                except Exception:  # noqa: BLE001 - the trial was closed meanwhile: nothing left to renew
                    return

        thread = threading.Thread(target=beat, name="trial-heartbeat", daemon=True)
        thread.start()

        def end_heartbeats() -> None:  # stop the thread, and wait for its last renewal
            stop.set()
            thread.join()

        return end_heartbeats

    def _alive(self, trial: FrozenTrial, now: float) -> bool:
        worker = trial.user_attrs.get("worker")
        if worker is None:  # asked, but the claim was never written: only its age can tell
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            return started + self.lease > now
        if worker == self.worker:
            return True
        if dead_local_owner(worker):
            return False
        if "lease_expires" not in trial.user_attrs:  # a claim from before the lease came first: its age
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            return started + self.lease > now
        return float(trial.user_attrs["lease_expires"]) > now

    def _describe(self, outcome: TrialOutcome) -> str:
        best = self._best()
        if outcome.state == COMPLETE:
            return (f"COMPLETE {self.plan.monitor} {outcome.value:.4g} after {outcome.epochs} epoch(s)"
                    + (f" (best so far {best:.4g})" if best is not None else ""))
        if outcome.state == PRUNED:
            return f"PRUNED ({outcome.reason})"
        if outcome.lost:
            return f"STOPPED after {outcome.epochs} epoch(s): {outcome.reason}"
        return f"FAILED: {outcome.reason}" + (" (queued again)" if outcome.retry else "")

    def _best(self) -> float | None:
        try:
            return self.study.best_value
        except ValueError:
            return None

    def _label(self) -> str:
        return f"{self.plan.cell.label} × {self.plan.task.label}"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
