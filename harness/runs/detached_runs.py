"""Runs trained elsewhere, recorded here: what ``executor: ray`` and the local pool share.

The driver (this process) claims runs in the ledger, opens their MLflow runs and hands each to
a backend that trains it without MLflow (:func:`harness.training.detached.train_detached`) and
hands back a :class:`~harness.training.detached.DetachedOutcome`; the driver records it. Only the
driver writes the ledger and MLflow (the one-writer design, ``docs/scale-out.md``). A backend
(:class:`harness.runs.ray_executor.RayRunner`, :class:`harness.runs.pool_executor.PoolRunner`)
only says how to submit a run, wait for runs, fetch an outcome and cancel a run.
Ctrl-C/SIGTERM cancels every run in flight and ends it KILLED.
"""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

from harness.core.errors import BadInputError
from harness.runs.grid import GridSummary, RunSpec
from harness.runs.run_states import DONE, FAILED, KILLED
from harness.runs.runner import HEARTBEATS_PER_LEASE, Runner
from harness.runs.tracking import flatten
from harness.training.detached import DetachedCheckpoints, DetachedOutcome, StateDictOf
from harness.training.finite import NonFiniteLossError
from harness.training.interrupts import RunInterrupted
from harness.training.resume import discard_checkpoints, record_resume

#: Longest pause between looks at the finished runs (and at a pending Ctrl-C).
POLL_SECONDS = 0.5


class TrainingRaised(Exception):
    """The training of a run raised ``cause``: the same outcomes as the local executor's."""

    def __init__(self, cause: BaseException, text: str) -> None:
        super().__init__(text)
        self.cause, self.text = cause, text


class RunLost(Exception):
    """The process (or node) training a run was lost: the run ends FAILED with this reason."""


class DetachedRunner(Runner):
    """Runs a validated grid through a backend; ledger and MLflow written by this process only."""

    #: The runs' ``executor`` tag.
    executor_name = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_flight: dict[Any, tuple[RunSpec, str]] = {}  # backend handle → (spec, MLflow run id)
        self._lost: set[str] = set()  # keys whose lease another worker took over

    # What a backend provides. ------------------------------------------------

    def _describe_backend(self) -> str:
        raise NotImplementedError

    def _has_room(self) -> bool:
        """Whether one more run may be submitted now (claimed runs wait in the backend's queue otherwise)."""
        return True

    def _launch(self, spec: RunSpec, checkpoints: DetachedCheckpoints) -> Any:
        """Start training ``spec``, checkpointing (and resuming) in ``checkpoints``; a handle that
        :meth:`_ready` and :meth:`_outcome` understand."""
        raise NotImplementedError

    def _ready(self, handles: list[Any], timeout: float) -> list[Any]:
        """The handles whose run ended, waiting at most ``timeout`` seconds for one."""
        raise NotImplementedError

    def _outcome(self, handle: Any) -> DetachedOutcome:
        """An ended run's outcome; raises :class:`TrainingRaised` or :class:`RunLost`."""
        raise NotImplementedError

    def _cancel(self, handle: Any) -> None:
        """Stop the run (running or queued); it is recorded KILLED by the caller."""
        raise NotImplementedError

    def _shutdown(self) -> None:
        """Release the backend (every run has been recorded)."""

    # The shared driver. ------------------------------------------------------

    def run(self, *, wait: bool = True) -> GridSummary:
        """Submit every claimable run, record each as it ends, then (``wait``) wait for other drivers' runs."""
        summary = GridSummary()
        by_key = {s.key: s for s in self.specs}
        summary.skipped = sum(1 for r in self._grid_rows(by_key) if r.status == DONE)
        self._say(f"{self.loaded.name}: {len(self.specs)} runs, {summary.skipped} already finished"
                  f" (ledger {self.storage.describe()}); {self._describe_backend()}")
        stop_heartbeat = self._start_heartbeats()
        attempted: set[str] = set()
        try:
            with self._interrupts.installed():
                try:
                    self._loop(by_key, attempted, summary, wait)
                except RunInterrupted:
                    pass  # arrived while waiting for other drivers: nothing of ours to close
                if self._interrupts.pending is not None:
                    self._cancel_in_flight(self._interrupts.pending)
        finally:
            stop_heartbeat()
            self._shutdown()
        return self._closing_summary(summary, by_key)

    def _loop(self, by_key: dict[str, RunSpec], attempted: set[str],
              summary: GridSummary, wait: bool) -> None:
        while self._interrupts.pending is None:
            with self._interrupts.critical():
                while self._has_room() and (row := self._claim(by_key, attempted)) is not None:
                    attempted.add(row.key)
                    self._submit(by_key[row.key])
                if self._in_flight:
                    self._collect(summary)
                    continue
            if not wait or not self._wait_for_others(by_key):
                return

    def _submit(self, spec: RunSpec) -> None:
        """Open the run's MLflow run and hand it to the backend."""
        run_id = self.tracker.start_run(spec.run_name, {**self._tags(spec), "executor": self.executor_name},
                                        {**flatten(spec.config), "config_hash": spec.key})
        self.ledger.set_mlflow_run(spec.key, self.worker, run_id)
        self.tracker.log_text(run_id, json.dumps(spec.config, indent=2, sort_keys=True), "config.json")
        if not self.resume:  # --no-resume: the driver, not each attempt of the run, forgets earlier checkpoints
            discard_checkpoints(self.output_dir, spec.key)
        checkpoints = DetachedCheckpoints(self.output_dir.resolve(), spec.key, run_id,
                                          self.loaded.experiment.checkpoint_minutes)
        self._in_flight[self._launch(spec, checkpoints)] = (spec, run_id)

    def _collect(self, summary: GridSummary) -> None:
        """Record the runs that ended within :data:`POLL_SECONDS` (ledger and MLflow, here only)."""
        for handle in self._ready(list(self._in_flight), POLL_SECONDS):
            spec, run_id = self._in_flight.pop(handle)
            status = self._record(handle, spec, run_id)
            summary.finished += status == DONE
            summary.failed += status == FAILED
            ended = summary.finished + summary.failed + summary.skipped
            self._say(f"[{ended}/{len(self.specs)}] {spec.cell.label} × {spec.task.label} × seed {spec.seed}: "
                      f"{status} ({len(self._in_flight)} running or queued)")

    def _record(self, handle: Any, spec: RunSpec, run_id: str) -> str:
        try:
            outcome = self._outcome(handle)
        except TrainingRaised as raised:
            cause = raised.cause
            self.tracker.log_text(run_id, raised.text, "error.txt")
            if isinstance(cause, NonFiniteLossError):
                return self._end(spec, run_id, FAILED, f"nonfinite: {cause}")
            if isinstance(cause, BadInputError):
                return self._end(spec, run_id, FAILED, f"bad_input: {cause}")
            return self._end(spec, run_id, FAILED, f"error: {type(cause).__name__}: {cause}")
        except RunLost as lost:
            return self._end(spec, run_id, FAILED, str(lost)[:4000])
        if spec.key in self._lost:
            return self._end(spec, run_id, KILLED, "lease lost: another worker reclaimed the run")
        self._log_outcome(spec, run_id, outcome)
        status = self._end(spec, run_id, DONE, "")
        discard_checkpoints(self.output_dir, spec.key)  # the run's model.pt artifact replaces them
        return status

    def _log_outcome(self, spec: RunSpec, run_id: str, outcome: DetachedOutcome) -> None:
        """Replay what the worker produced into MLflow, as ``Runner._execute`` logs it live."""
        task, data = self._load_task(spec.task)
        self.tracker.set_tags(run_id, {"worker": outcome.worker, "device": outcome.device_name})
        if outcome.resumed is not None:  # a run trained again went on from its checkpoint
            found = outcome.resumed
            where = "mid-epoch" if found.mid_epoch else "end-of-epoch"
            self._say(f"    {spec.run_name}: resumed from epoch {found.epochs_done} checkpoint ({where}, {found.path.name})")
            record_resume(self.tracker, run_id, found)
        self._log_network(spec, run_id, outcome.plan, data)
        for epoch, metrics in outcome.epochs:
            self.tracker.log_metrics(run_id, metrics, step=epoch)
        self._log_weights(run_id, task, StateDictOf(outcome.weights), outcome.plan, data)
        self._log_result(spec, run_id, outcome.result)

    def _cancel_in_flight(self, interrupted: RunInterrupted) -> None:
        """Ctrl-C/SIGTERM: stop every run of ours (running or queued) and end it KILLED."""
        reason = f"interrupted by {signal.Signals(interrupted.signal_number).name}"
        for handle, (spec, run_id) in list(self._in_flight.items()):
            try:
                self._cancel(handle)
            except Exception:  # noqa: BLE001 - already ended or its process is gone: nothing left to stop
                pass
            self._end(spec, run_id, KILLED, reason)
        self._in_flight.clear()

    def _start_heartbeats(self) -> Any:
        """One thread renews the lease of every run in flight (the ledger may be shared with other drivers)."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.lease_seconds / HEARTBEATS_PER_LEASE):
                for spec, _ in list(self._in_flight.values()):
                    if not self.ledger.heartbeat(spec.key, self.worker, self.lease_seconds):
                        self._lost.add(spec.key)

        thread = threading.Thread(target=beat, name="ledger-heartbeats", daemon=True)
        thread.start()
        return stop.set
