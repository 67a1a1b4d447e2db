"""``executor: ray``: each grid run is a Ray task; this process (the driver) is the one writer.

The driver claims runs in the ledger, opens their MLflow runs and submits one Ray task per
run with the file's ``resources``. Workers train without MLflow (:mod:`harness.training.detached`)
and return metrics history, results, weights and samples; the driver records them. Exactly-once
follows from the driver's bookkeeping by run key: a task Ray retried (worker killed, node lost)
still comes back once, and only the driver writes. Ctrl-C/SIGTERM cancels the tasks, ends KILLED.
The driver's side (claim, record, cancel) is :class:`harness.runs.detached_runs.DetachedRunner`'s,
shared with the local pool; this module only submits, waits for and cancels Ray tasks.
A task run again (worker or node lost, or a rerun after the driver died) resumes from the run's
newest verified checkpoint under ``<output_dir>/checkpoints/`` (shared storage on a multi-node cluster).
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from harness.experiment import content_hash
from harness.training.detached import DetachedCheckpoints, DetachedOutcome, train_grid_run
from harness.core.errors import BadInputError
from harness.runs.detached_runs import DetachedRunner, RunLost, TrainingRaised
from harness.runs.executors import ray_task_options, require_ray
from harness.runs.grid import RunSpec

#: Times Ray runs a task again whose worker process or node died (then the run ends FAILED).
TASK_RETRIES = 3
#: How long to wait for the cluster's address to answer before calling it unreachable.
CONNECT_TIMEOUT_S = 10.0


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


class RayRunner(DetachedRunner):
    """Runs a validated grid as Ray tasks; ledger and MLflow written by this process only."""

    executor_name = "ray"

    def __init__(self, *args: Any, ray_address: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ray_address = ray_address
        self.task_options = {**ray_task_options(self.loaded), "max_retries": TASK_RETRIES}
        self._data_refs: dict[str, Any] = {}  # task data in Ray's object store, by content
        self._remote: Any = None
        self._ray: Any = None  # the ray module, once open() has joined the cluster
        self._owns_ray = True

    def open(self) -> None:
        """Join Ray first: an unreachable cluster must stop the grid before anything is recorded."""
        self._owns_ray = not require_ray().is_initialized()  # else (harness tune) the caller shuts Ray down
        self._ray = connect_ray(self.ray_address)
        super().open()

    def _describe_backend(self) -> str:
        return f"Ray tasks of {self.task_options}"

    def _launch(self, spec: RunSpec, checkpoints: DetachedCheckpoints) -> Any:
        """Hand the run to Ray (its task data shipped once per task)."""
        ray = self._ray
        data_key = content_hash({"name": spec.task.name, "options": spec.task.options()})
        if data_key not in self._data_refs:
            self._data_refs[data_key] = ray.put(self._load_task(spec.task))
        if self._remote is None:  # one remote function: Ray exports it to the workers once
            self._remote = ray.remote(train_grid_run)
        remote = self._remote.options(name=f"train {spec.run_name}", **self.task_options)
        return remote.remote(spec, self._data_refs[data_key], self.loaded.experiment, self.verbose, checkpoints)

    def _ready(self, handles: list[Any], timeout: float) -> list[Any]:
        ready, _ = self._ray.wait(handles, num_returns=len(handles), timeout=timeout)
        return ready

    def _outcome(self, handle: Any) -> DetachedOutcome:
        from ray.exceptions import RayError, RayTaskError

        try:
            return self._ray.get(handle)
        except RayTaskError as error:  # the training raised: the same outcomes as the local executor's
            raise TrainingRaised(error.cause, str(error)) from None
        except RayError as error:  # worker or node lost more often than TASK_RETRIES
            raise RunLost(f"ray: {type(error).__name__}: {error}") from None

    def _cancel(self, handle: Any) -> None:
        self._ray.cancel(handle, force=True)

    def _shutdown(self) -> None:
        if self._owns_ray:
            self._ray.shutdown()
