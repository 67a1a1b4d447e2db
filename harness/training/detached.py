"""Train one grid run without MLflow or the ledger: everything it would record comes back in memory.

A Ray worker (:mod:`harness.runs.ray_executor`) or a local pool process (:mod:`harness.runs.pool_executor`),
both through :func:`train_grid_run`, calls :func:`train_detached`; the driver, the one
writer, replays the outcome into MLflow and the ledger. The training itself is the local
runner's: the same seeding, network plan and ``train_run``, so a run's metrics do not depend
on which executor trained it.

Checkpoints: given a :class:`DetachedCheckpoints`, the run writes its per-epoch checkpoints to
``<output_dir>/checkpoints/<run key>/`` (the local runner's folder) and resumes from the newest
that verifies, so a task Ray runs again after its worker died (or a rerun of a dead driver)
goes on from there. The folder must be one every worker can reach: one machine, or output_dir
on storage shared by the cluster's nodes. The driver records the resume (``record_resume``).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.experiment import ModelSettings, TrainingSettings
from harness.core.tasks import Task, TaskData
from harness.training.resume import Resumable, run_checkpoints
from harness.training.trainer import NetworkPlan, TrainingResult, device_name, seeded_network, train_run


@dataclass
class DetachedOutcome:
    """What a finished run hands back to the driver, which records it."""

    result: TrainingResult
    plan: NetworkPlan
    #: (epoch, metrics) in the order the epochs ended: replayed as MLflow steps.
    epochs: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    #: The trained network's state_dict on the CPU (saved as model.pt by the driver).
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    #: Where it trained: ``host:pid`` and the device name (the runs' ``worker`` and ``device`` tags).
    worker: str = ""
    device_name: str = "cpu"
    #: The checkpoint training resumed from (None: it started at epoch 1): the driver records it.
    resumed: Resumable | None = None


@dataclass(frozen=True)
class DetachedCheckpoints:
    """Where a detached run keeps its checkpoints: ``<output_dir>/checkpoints/<key>/`` (an absolute path)."""

    output_dir: Path
    key: str
    run_id: str | None = None  # the driver's MLflow run of this attempt, recorded in each checkpoint
    every_minutes: float | None = None


class StateDictOf:
    """Stands in for the trained network where only its weights are needed (``save_network``)."""

    def __init__(self, weights: dict[str, torch.Tensor]) -> None:
        self._weights = weights

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._weights


def train_detached(cell_class: type, cell_config: Any, seed: int, task: Task, data: TaskData,
                   model: ModelSettings, training: TrainingSettings, device: str,
                   hyperparameters: dict[str, Any], verbose: bool = False,
                   checkpoints: DetachedCheckpoints | None = None) -> DetachedOutcome:
    """Seed, build and train one run exactly as ``Runner._train`` does; return what it produced.

    With ``checkpoints``, resume from the newest checkpoint that verifies (every rank of a data-parallel
    run from the same one, as with the local runner); the outcome's ``resumed`` says from which.
    """
    plan, net = seeded_network(cell_class, cell_config, task, data, model, seed)
    epochs: list[tuple[int, dict[str, float]]] = []
    saving = None
    if checkpoints is not None:
        saving = run_checkpoints(checkpoints.output_dir, checkpoints.key, checkpoints.run_id or "", data,
                                 every_minutes=checkpoints.every_minutes, fresh=False, say=_say_on_worker)
    result = train_run(net, task, data, training, seed=seed, device=device, hyperparameters=hyperparameters,
                       on_epoch=lambda epoch, metrics: epochs.append((epoch, dict(metrics))), verbose=verbose,
                       checkpoints=saving)
    weights = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return DetachedOutcome(result, plan, epochs, weights, f"{socket.gethostname()}:{os.getpid()}",
                           device_name(result.device), saving.resumed if saving is not None else None)


def _say_on_worker(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def start_slot(gpu: str | None, threads: int, parent: int) -> None:
    """The initializer of a local pool's slot process (:mod:`harness.runs.pool_executor`): its GPU and
    threads, deaf to Ctrl-C (the driver stops it), gone with its driver."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C reaches the driver, which stops us
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before anything initialises CUDA here (torch does it lazily)
    torch.set_num_threads(threads)  # training.cpu_threads, when given, still wins (train_run sets it)

    def orphaned() -> None:  # the driver killed outright (SIGKILL): train nothing for nobody
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=orphaned, name="driver-watch", daemon=True).start()


def train_grid_run(spec: Any, task_and_data: tuple[Any, Any], experiment: Any, verbose: bool,
                   checkpoints: DetachedCheckpoints | None = None) -> DetachedOutcome:
    """The body of every Ray task and every local pool run: a module level function in a light
    module (no MLflow), so workers import it instead of unpickling code."""
    task, data = task_and_data
    return train_detached(spec.cell.plugin_class, spec.cell.config, spec.seed, task, data, experiment.model,
                          experiment.training, experiment.device, spec.config, verbose=verbose,
                          checkpoints=checkpoints)
