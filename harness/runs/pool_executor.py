"""``executor: local`` with ``resources``: several runs at once on this machine, in a process pool.

``resources: {cpus: N}`` trains floor(cores / N) runs at once on the CPU; ``resources: {gpus: g}``
trains floor(1 / g) runs at once on every visible GPU. Each pool slot is one spawned process,
pinned to one GPU (``CUDA_VISIBLE_DEVICES``) and to ``cpus`` torch threads; it trains with
:func:`harness.training.detached.train_detached`, as a Ray task does, and this process (the
driver) records every run (:class:`harness.runs.detached_runs.DetachedRunner`): the one writer.
Ctrl-C/SIGTERM terminates the slots' processes and ends their runs KILLED. Without ``resources``
in the file, ``executor: local`` keeps training one run at a time in this process (``Runner``).
"""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from harness.core.errors import ConfigError
from harness.experiment import LoadedExperiment
from harness.runs.detached_runs import DetachedRunner, RunLost, TrainingRaised
from harness.runs.grid import RunSpec
from harness.training.detached import DetachedCheckpoints, DetachedOutcome, start_slot, train_grid_run

#: How long a terminated slot process may take to exit before it is killed outright.
TERMINATE_GRACE_S = 5.0


def packs_runs(loaded: LoadedExperiment) -> bool:
    """Whether ``executor: local`` trains several runs at once: only when the file gives ``resources``."""
    return "resources" in loaded.experiment.model_fields_set


def cores_here() -> int:
    """CPU cores this process may use (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The GPUs a child may be pinned to, as ``CUDA_VISIBLE_DEVICES`` entries (this process's own list)."""
    import torch

    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(count)]
    return [entry.strip() for entry in listed.split(",") if entry.strip()][:count]


def pool_slots(loaded: LoadedExperiment, cores: int | None = None,
               gpus_here: list[str] | None = None) -> list[str | None]:
    """One entry per run trained at once: the GPU it is pinned to, or None on the CPU."""
    experiment = loaded.experiment
    cpus, gpus = experiment.resources.cpus, experiment.resources.gpus
    if experiment.training.devices > 1:
        raise ConfigError(f"{loaded.where('training', 'devices')}training.devices > 1 trains one run on several "
                          "devices; with executor: local leave resources out (one run at a time) or use executor: ray")
    if gpus > 1:
        raise ConfigError(f"{loaded.where('resources', 'gpus')}a run trains on one GPU with executor: local; give "
                          "resources.gpus ≤ 1 (0.125 packs eight runs on each GPU)")
    if gpus > 0:
        gpus_here = visible_gpus() if gpus_here is None else gpus_here
        if not gpus_here:
            raise ConfigError(f"{loaded.where('resources', 'gpus')}resources.gpus is {gpus:g} but this machine shows "
                              "no GPU; leave gpus out to pack runs on the CPU (resources.cpus)")
        per_gpu = max(1, math.floor(1 / gpus + 1e-9))
        return [gpu for gpu in gpus_here for _ in range(per_gpu)]
    if experiment.device == "gpu":
        raise ConfigError(f"{loaded.where('resources', 'gpus')}device is 'gpu' but resources.gpus is 0, so no run "
                          "would get a GPU; set resources.gpus (0.125 packs eight runs on each GPU)")
    cores = cores_here() if cores is None else cores
    return [None] * max(1, math.floor(cores / cpus + 1e-9))


class PoolRunner(DetachedRunner):
    """Runs a validated grid in a pool of local processes; ledger and MLflow written by this process only."""

    executor_name = "local"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.slots = pool_slots(self.loaded)  # checked before anything is recorded
        self.threads = max(1, math.floor(self.loaded.experiment.resources.cpus + 1e-9))
        self._pools: list[ProcessPoolExecutor | None] = [None] * len(self.slots)
        self._slot_of: dict[Future, int] = {}
        self._free = list(range(len(self.slots)))

    def open(self) -> None:
        """Start the slot processes first: they import torch while this process opens ledger and MLflow."""
        for slot in range(len(self.slots)):
            self._pool(slot).submit(int)  # a no-op that makes the pool start its process now
        try:
            super().open()
        except BaseException:  # bad task data, Ctrl-C: nothing recorded, and no slot left behind
            for slot in range(len(self.slots)):
                self._discard(slot)
            raise

    def _describe_backend(self) -> str:
        gpus = sorted({gpu for gpu in self.slots if gpu is not None})
        where = f"on GPU {', '.join(gpus)}" if gpus else "on the CPU"
        return f"{len(self.slots)} run(s) at once {where}, {self.threads} thread(s) each"

    def _pool(self, slot: int) -> ProcessPoolExecutor:
        pool = self._pools[slot]
        if pool is None:  # one process per slot, so that each slot keeps its GPU; reused run after run
            pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=start_slot,
                                       initargs=(self.slots[slot], self.threads, os.getpid()))
            self._pools[slot] = pool
        return pool

    def _has_room(self) -> bool:
        return bool(self._free)

    def _launch(self, spec: RunSpec, checkpoints: DetachedCheckpoints) -> Future:
        slot = self._free.pop(0)
        try:
            future = self._pool(slot).submit(train_grid_run, spec, self._load_task(spec.task),
                                             self.loaded.experiment, self.verbose, checkpoints)
        except BaseException:
            self._free.insert(0, slot)
            raise
        self._slot_of[future] = slot
        return future

    def _ready(self, handles: list[Any], timeout: float) -> list[Any]:
        done, _ = wait(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return list(done)

    def _outcome(self, handle: Any) -> DetachedOutcome:
        slot = self._slot_of.pop(handle)
        self._free.append(slot)
        try:
            return handle.result()
        except BrokenProcessPool as error:  # the slot's process died (killed, out of memory)
            self._discard(slot)
            raise RunLost(f"pool: the process training the run died ({error})") from None
        except Exception as error:  # noqa: BLE001 - the training raised: its traceback came with it
            raise TrainingRaised(error, f"{type(error).__name__}: {error}\n{error.__cause__ or ''}") from None

    def _cancel(self, handle: Any) -> None:
        slot = self._slot_of.pop(handle, None)
        if slot is not None:
            self._discard(slot)

    def _discard(self, slot: int) -> None:
        """Stop a slot's process now (a run of it cancelled, or the process already dead)."""
        pool, self._pools[slot] = self._pools[slot], None
        if pool is None:
            return
        processes = list(getattr(pool, "_processes", {}).values())  # no public way to stop them before 3.14
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(TERMINATE_GRACE_S)
            if process.is_alive():
                process.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def _shutdown(self) -> None:
        for slot, pool in enumerate(self._pools):
            if pool is not None:
                pool.shutdown(wait=True)
                self._pools[slot] = None
