"""``harness worker``: claim and execute runs of a shared ledger, in one process or several.

One worker is one process: it claims a pending run, trains it, records it and claims the
next until none is left, then waits while other workers still hold runs (taking over a
run whose worker died once its lease expires). Any number of workers, on any number of
machines, may share one storage (a journal file on one machine, PostgreSQL across
machines); the ledger hands each run to exactly one of them.

This module decides how many worker processes one command starts and supervises them:

* ``--gpus 0,1`` (or ``all``): one child per GPU, pinned with ``CUDA_VISIBLE_DEVICES``;
  ``--runs-per-gpu N`` puts N children on each GPU (small models leave a GPU mostly idle); with
  ``training.devices: D`` each child gets D consecutive GPUs for its data-parallel runs;
* ``--processes N``: N children without pinning (CPU machines);
* neither: one worker per visible GPU when there are several (and the device is not
  ``cpu``), else this process itself.

CPU workers are forks of the parent, made after it validated the grid and imported torch,
Lightning and MLflow, so N workers cost one start-up, not N. A GPU worker is a fresh
``harness worker`` with the same file, storage and ``--set`` values, because CUDA reads
``CUDA_VISIBLE_DEVICES`` only when a process starts. The parent forwards SIGTERM and
SIGINT to its children (each ends its current run KILLED and releases it).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.core.errors import ConfigError
from harness.experiment.storage_url import STORAGE_ENV, StorageChoice

if TYPE_CHECKING:
    from harness.experiment import LoadedExperiment
    from harness.core.loading import LoadedPlugins


@dataclass(frozen=True)
class Slot:
    """One worker process: its label in messages and the GPU it is pinned to (None: not pinned)."""

    label: str
    gpu: str | None = None


def plan_slots(gpus: str | None, runs_per_gpu: int, processes: int, device: str,
               devices_per_run: int = 1) -> list[Slot]:
    """The worker processes to start. A single unpinned slot means: work in this process.

    ``devices_per_run`` > 1 (``training.devices``, data-parallel runs): each GPU worker is pinned
    to a group of that many consecutive GPUs instead of one.
    """
    if gpus is not None and processes > 1:
        raise ConfigError("--gpus and --processes exclude each other; with GPUs use --runs-per-gpu N "
                          "for several workers per GPU")
    if gpus is not None and device == "cpu":
        raise ConfigError("--gpus was given but the experiment's device is cpu; set device: auto or gpu "
                          "(e.g. --set device=auto)")
    if gpus is None and processes > 1:
        return [Slot(f"worker {i}") for i in range(processes)]
    if gpus is None and device != "cpu" and (runs_per_gpu > 1 or _visible_gpu_count() > 1):
        gpus = "all"
    if gpus is None:
        return [Slot("worker")]
    ids = _gpu_ids(gpus)
    if len(ids) % devices_per_run:
        raise ConfigError(f"training.devices is {devices_per_run} but {len(ids)} GPU(s) ({','.join(ids)}) do not "
                          f"split into groups of {devices_per_run}; pass --gpus with a multiple of {devices_per_run}")
    groups = [",".join(ids[i : i + devices_per_run]) for i in range(0, len(ids), devices_per_run)]
    name = "gpu" if devices_per_run == 1 else "gpus"
    return [Slot(f"{name} {group}.{n}" if runs_per_gpu > 1 else f"{name} {group}", group)
            for group in groups for n in range(runs_per_gpu)]


def _gpu_ids(text: str) -> list[str]:
    if text.strip() == "all":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = ([g.strip() for g in visible.split(",") if g.strip()] if visible
               else [str(i) for i in range(_visible_gpu_count())])
        if not ids:
            raise ConfigError("--gpus all: no CUDA device is visible; leave out --gpus to work on the CPU")
        return ids
    ids = [g.strip() for g in text.split(",") if g.strip()]
    if not ids or not all(g.isdigit() for g in ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"--gpus {text!r}: expected distinct device numbers such as 0,1 or the word all")
    return ids


def _visible_gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def child_command(experiment_file: Path, overrides: Sequence[str], slot: Slot, *, quiet: bool,
                  strict_plugins: bool, lease_seconds: float) -> list[str]:
    """``harness worker`` for a GPU slot: the same file, overrides and lease, marked as a child (storage: env)."""
    command = [sys.executable, "-m", "harness.cli.main", "worker", str(experiment_file), "--slot", slot.label,
               "--lease-seconds", repr(lease_seconds)]
    for override in overrides:
        command += ["--set", override]
    if quiet:
        command.append("--quiet")
    if strict_plugins:
        command.append("--strict-plugins")
    return command


class Child:
    """A started worker process: a fresh ``harness worker`` (GPU slots) or a fork of this one (CPU slots)."""

    def __init__(self, slot: Slot, process: subprocess.Popen[bytes] | Any) -> None:
        self.slot, self.process = slot, process
        self.pid: int = process.pid

    def signal(self, number: int) -> None:
        if self.returncode() is None:
            os.kill(self.pid, number)

    def returncode(self) -> int | None:
        if isinstance(self.process, subprocess.Popen):
            return self.process.poll()
        return self.process.exitcode

    def wait(self) -> int:
        if isinstance(self.process, subprocess.Popen):
            return self.process.wait()
        self.process.join()
        return self.process.exitcode


def supervise(slots: list[Slot], start: Callable[[Slot], Child], say: Any) -> int:
    """Start a worker per slot, forward SIGTERM/SIGINT to them, wait for all; the worst exit code wins.

    A signal makes the exit code 128 + its number, as for a single worker.
    """
    children: list[Child] = []
    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        for child in children:
            child.signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for slot in slots:
            if received:  # stopped while starting: start no more
                break
            children.append(start(slot))
            say(f"started {slot.label}: pid {children[-1].pid}"
                + (f", CUDA_VISIBLE_DEVICES={slot.gpu}" if slot.gpu is not None else ""))
        codes = [(child.slot, child.wait()) for child in children]
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    for slot, code in codes:
        if code:
            say(f"{slot.label} exited with code {code if code > 0 else f'{code} (signal {-code})'}")
    if received:
        return 128 + received[0]
    return max((code if code >= 0 else 128 - code for _, code in codes), default=0)


def run_worker(loaded: LoadedExperiment, storage: StorageChoice, load_plugins: Callable[[], LoadedPlugins], *,
               gpus: str | None, runs_per_gpu: int, processes: int, slot: str | None, quiet: bool,
               strict_plugins: bool, lease_seconds: float, say: Callable[[str], None]) -> int:
    """``harness worker``: fan out into child workers, or work here; returns the exit code."""
    slots = [Slot(slot)] if slot is not None else plan_slots(gpus, runs_per_gpu, processes, loaded.experiment.device,
                                                             loaded.experiment.training.devices)
    if len(slots) > 1 and not storage.shared_by_processes:
        raise ConfigError(
            f"{len(slots)} worker processes cannot share SQLite storage ({storage.describe()}); use a journal "
            "file for one machine (--storage journal:///abs/path/ledger.journal) or PostgreSQL for several "
            "(--storage postgresql://user@host:5432/db)")
    from harness.training.progress import PROGRESS_BAR_ENV
    from harness.runs.grid import expand_grid
    from harness.runs.runner import Runner

    plugins = load_plugins()
    specs = expand_grid(loaded, plugins)  # bad input: exit 2 here, once, before any worker starts
    Runner(loaded, plugins, specs, storage=storage)  # checks the rest (tracking URI) without side effects
    work = partial(_work, loaded, storage, plugins, specs, quiet=quiet, lease_seconds=lease_seconds, say=say)
    if len(slots) == 1 and slots[0].gpu is None:
        return work(slots[0].label if slot is not None else "")

    def start(child_slot: Slot) -> Child:
        if child_slot.gpu is not None:  # CUDA reads CUDA_VISIBLE_DEVICES once, at start: a fresh process
            env = {**os.environ, STORAGE_ENV: storage.url, "CUDA_VISIBLE_DEVICES": child_slot.gpu}
            command = child_command(loaded.path, loaded.overrides, child_slot, quiet=quiet,
                                    strict_plugins=strict_plugins, lease_seconds=lease_seconds)
            return Child(child_slot, subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL))
        # CPU: fork, so the workers share this process's imports (seconds each) instead of repeating them.
        process = multiprocessing.get_context("fork").Process(target=_forked, args=(work, child_slot.label),
                                                              name=child_slot.label)
        process.start()
        return Child(child_slot, process)

    import mlflow.tracking  # noqa: F401 - imported once here, before forking, not once per worker

    os.environ[PROGRESS_BAR_ENV] = "0"  # the workers share this terminal: plain lines, no bars to garble
    return supervise(slots, start, say)


def _forked(work: Callable[[str], int], label: str) -> None:
    # The parent's handlers forward signals to its children; here they must be the worker's own.
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL if number == signal.SIGTERM else signal.default_int_handler)
    sys.exit(work(label))


def _work(loaded: LoadedExperiment, storage: StorageChoice, plugins: LoadedPlugins, specs: list[Any], label: str,
          *, quiet: bool, lease_seconds: float, say: Callable[[str], None]) -> int:
    """One worker in this process: claim and execute runs until the grid has ended."""
    from harness.runs.runner import RunInterrupted, Runner

    runner = Runner(loaded, plugins, specs, verbose=not quiet, storage=storage, label=label,
                    lease_seconds=lease_seconds)
    started = time.perf_counter()
    try:
        runner.open()
        summary = runner.run(retry_failed=False, wait=True)
    except RunInterrupted as interrupted:  # before any run was claimed
        say(f"{loaded.name}: {interrupted}")
        return interrupted.exit_code
    say(f"{loaded.name}: worker {runner.worker}: {summary.finished} finished, {summary.failed} failed"
        f" in {time.perf_counter() - started:.0f}s; grid: {summary.describe_grid()}; "
        f"MLflow lock retries: {runner.tracker.client.lock_retries}"
        + (f"; interrupted by signal {summary.interrupted_by}" if summary.interrupted_by else ""))
    return summary.exit_code
