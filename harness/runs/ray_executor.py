"""``executor: ray``: each grid run is a Ray task; this process (the driver) is the one writer.

The driver claims runs in the ledger, opens their MLflow runs and submits one Ray task per
run with the file's ``resources``. Workers train without MLflow (:mod:`harness.training.detached`)
and return metrics history, results, weights and samples; the driver records them. Exactly-once
follows from the driver's bookkeeping by run key: a task Ray retried (worker killed, node lost)
still comes back once, and only the driver writes. Ctrl-C/SIGTERM cancels the tasks, ends KILLED.
A task run again (worker or node lost, or a rerun after the driver died) resumes from the run's
newest verified checkpoint under ``<output_dir>/checkpoints/`` (shared storage on a multi-node cluster).
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from typing import Any

from harness.experiment import content_hash
from harness.training.detached import DetachedCheckpoints, DetachedOutcome, StateDictOf, train_detached
from harness.training.resume import discard_checkpoints, record_resume
from harness.core.errors import BadInputError
from harness.runs.executors import ray_task_options, require_ray
from harness.training.families import NonFiniteLossError
from harness.training.interrupts import RunInterrupted
from harness.runs.run_states import CLAIMABLE, CLAIMABLE_BY_WORKERS, DONE, FAILED, KILLED
from harness.runs.grid import GridSummary, RunSpec
from harness.runs.runner import HEARTBEATS_PER_LEASE, Runner
from harness.runs.tracking import flatten

#: Times Ray runs a task again whose worker process or node died (then the run ends FAILED).
TASK_RETRIES = 3
#: Longest pause between looks at the finished tasks (and at a pending Ctrl-C).
POLL_SECONDS = 0.5
#: How long to wait for the cluster's address to answer before calling it unreachable.
CONNECT_TIMEOUT_S = 10.0


def _train_on_worker(spec: RunSpec, task_and_data: tuple[Any, Any], experiment: Any,
                     verbose: bool, checkpoints: DetachedCheckpoints | None = None) -> DetachedOutcome:
    """The body of every Ray task (module level, so workers import it instead of unpickling code)."""
    task, data = task_and_data
    return train_detached(spec.cell.plugin_class, spec.cell.config, spec.seed, task, data, experiment.model,
                          experiment.training, experiment.device, spec.config, verbose=verbose,
                          checkpoints=checkpoints)


def connect_ray(address: str | None) -> Any:
    """Join the cluster at ``address``, or start a Ray instance on this machine (loopback only)."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    if address:
        check_reachable(address)
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise BadInputError(f"--ray-address {address}: cannot join a Ray cluster there ({error}); give the "
                            "address `ray start --head` printed (host:6379), or leave it out to start "
                            "Ray on this machine") from None
    return ray


def check_reachable(address: str) -> None:
    """Fail fast (exit 2) when nothing listens at a ``host:port`` address: Ray would retry for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        if address in ("auto", "local"):
            return
        raise BadInputError(f"--ray-address {address}: expected host:port (the head's GCS, e.g. 10.0.0.5:6379) "
                            "or ray://host:10001 for Ray Client")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise BadInputError(f"--ray-address {address}: nothing answers there ({error}); start the cluster "
                            "(`ray start --head`) or give the address it printed") from None


class RayRunner(Runner):
    """Runs a validated grid as Ray tasks; ledger and MLflow written by this process only."""

    def __init__(self, *args: Any, ray_address: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ray_address = ray_address
        self.task_options = {**ray_task_options(self.loaded), "max_retries": TASK_RETRIES}
        self._in_flight: dict[Any, tuple[RunSpec, str]] = {}  # ObjectRef → (spec, MLflow run id)
        self._lost: set[str] = set()  # keys whose lease another worker took over
        self._remote: Any = None
        self._ray: Any = None  # the ray module, once open() has joined the cluster
        self._owns_ray = True

    def open(self) -> None:
        """Join Ray first: an unreachable cluster must stop the grid before anything is recorded."""
        self._owns_ray = not require_ray().is_initialized()  # else (harness tune) the caller shuts Ray down
        self._ray = connect_ray(self.ray_address)
        super().open()

    def run(self, *, retry_failed: bool = True, wait: bool = True) -> GridSummary:
        """Submit every claimable run, record each as it ends, then (``wait``) wait for other workers."""
        summary = GridSummary()
        by_key = {s.key: s for s in self.specs}
        statuses = CLAIMABLE if retry_failed else CLAIMABLE_BY_WORKERS
        summary.skipped = sum(1 for r in self._grid_rows(by_key) if r.status == DONE)
        self._say(f"{self.loaded.name}: {len(self.specs)} runs, {summary.skipped} already finished"
                  f" (ledger {self.storage.describe()}); Ray tasks of {self.task_options}")
        ray = self._ray
        stop_heartbeat = self._start_heartbeats()
        attempted: set[str] = set()
        try:
            with self._interrupts.installed():
                try:
                    self._loop(ray, by_key, statuses, attempted, summary, wait)
                except RunInterrupted:
                    pass  # arrived while waiting for other workers: nothing of ours to close
                if self._interrupts.pending is not None:
                    self._cancel_in_flight(ray, self._interrupts.pending)
        finally:
            stop_heartbeat()
            if self._owns_ray:
                ray.shutdown()
        return self._closing_summary(summary, by_key)

    def _loop(self, ray: Any, by_key: dict[str, RunSpec], statuses: tuple[str, ...], attempted: set[str],
              summary: GridSummary, wait: bool) -> None:
        data_refs: dict[str, Any] = {}
        while self._interrupts.pending is None:
            with self._interrupts.critical():
                while (row := self.ledger.claim(self.loaded.name, self.worker, self.lease_seconds, keys=set(by_key),
                                                exclude=attempted, statuses=statuses)) is not None:
                    attempted.add(row.key)
                    self._submit(ray, by_key[row.key], data_refs)
                if self._in_flight:
                    self._collect(ray, summary)
                    continue
            if not wait or not self._wait_for_others(by_key):
                return

    def _submit(self, ray: Any, spec: RunSpec, data_refs: dict[str, Any]) -> None:
        """Open the run's MLflow run and hand it to Ray (its task data shipped once per task)."""
        run_id = self.tracker.start_run(spec.run_name, {**self._tags(spec), "executor": "ray"},
                                        {**flatten(spec.config), "config_hash": spec.key})
        self.ledger.set_mlflow_run(spec.key, self.worker, run_id)
        self.tracker.log_text(run_id, _config_json(spec), "config.json")
        data_key = content_hash({"name": spec.task.name, "options": spec.task.options()})
        if data_key not in data_refs:
            data_refs[data_key] = ray.put(self._load_task(spec.task))
        if self._remote is None:  # one remote function: Ray exports it to the workers once
            self._remote = ray.remote(_train_on_worker)
        remote = self._remote.options(name=f"train {spec.run_name}", **self.task_options)
        if not self.resume:  # --no-resume: the driver, not each task attempt, forgets earlier checkpoints
            discard_checkpoints(self.output_dir, spec.key)
        checkpoints = DetachedCheckpoints(self.output_dir.resolve(), spec.key, run_id,
                                          self.loaded.experiment.checkpoint_minutes)
        ref = remote.remote(spec, data_refs[data_key], self.loaded.experiment, self.verbose, checkpoints)
        self._in_flight[ref] = (spec, run_id)

    def _collect(self, ray: Any, summary: GridSummary) -> None:
        """Record the tasks that ended within :data:`POLL_SECONDS` (ledger and MLflow, here only)."""
        ready, _ = ray.wait(list(self._in_flight), num_returns=len(self._in_flight), timeout=POLL_SECONDS)
        for ref in ready:
            spec, run_id = self._in_flight.pop(ref)
            status = self._record(ray, ref, spec, run_id)
            summary.finished += status == DONE
            summary.failed += status == FAILED
            ended = summary.finished + summary.failed + summary.skipped
            self._say(f"[{ended}/{len(self.specs)}] {spec.cell.label} × {spec.task.label} × seed {spec.seed}: "
                      f"{status} ({len(self._in_flight)} running or queued)")

    def _record(self, ray: Any, ref: Any, spec: RunSpec, run_id: str) -> str:
        from ray.exceptions import RayError, RayTaskError

        try:
            outcome: DetachedOutcome = ray.get(ref)
        except RayTaskError as error:  # the training raised: the same outcomes as the local executor's
            cause = error.cause
            self.tracker.log_text(run_id, str(error), "error.txt")
            if isinstance(cause, NonFiniteLossError):
                return self._end(spec, run_id, FAILED, f"nonfinite: {cause}")
            if isinstance(cause, BadInputError):
                return self._end(spec, run_id, FAILED, f"bad_input: {cause}")
            return self._end(spec, run_id, FAILED, f"error: {type(cause).__name__}: {cause}")
        except RayError as error:  # worker or node lost more often than TASK_RETRIES
            return self._end(spec, run_id, FAILED, f"ray: {type(error).__name__}: {error}"[:4000])
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
        if outcome.resumed is not None:  # a task run again went on from its run's checkpoint
            found = outcome.resumed
            where = "mid-epoch" if found.mid_epoch else "end-of-epoch"
            self._say(f"    {spec.run_name}: resumed from epoch {found.epochs_done} checkpoint ({where}, {found.path.name})")
            record_resume(self.tracker, run_id, found)
        self._log_network(spec, run_id, outcome.plan, data)
        for epoch, metrics in outcome.epochs:
            self.tracker.log_metrics(run_id, metrics, step=epoch)
        self._log_weights(run_id, task, StateDictOf(outcome.weights), outcome.plan, data)
        self._log_result(spec, run_id, outcome.result)

    def _cancel_in_flight(self, ray: Any, interrupted: RunInterrupted) -> None:
        """Ctrl-C/SIGTERM: stop every task of ours (running or queued) and end its run KILLED."""
        reason = f"interrupted by {signal.Signals(interrupted.signal_number).name}"
        for ref, (spec, run_id) in list(self._in_flight.items()):
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already ended or its node is gone: nothing left to stop
                pass
            self._end(spec, run_id, KILLED, reason)
        self._in_flight.clear()

    def _start_heartbeats(self) -> Any:
        """One thread renews the lease of every run in flight (the ledger is shared with workers)."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.lease_seconds / HEARTBEATS_PER_LEASE):
                for spec, _ in list(self._in_flight.values()):
                    if not self.ledger.heartbeat(spec.key, self.worker, self.lease_seconds):
                        self._lost.add(spec.key)

        thread = threading.Thread(target=beat, name="ledger-heartbeats", daemon=True)
        thread.start()
        return stop.set


def _config_json(spec: RunSpec) -> str:
    import json

    return json.dumps(spec.config, indent=2, sort_keys=True)
