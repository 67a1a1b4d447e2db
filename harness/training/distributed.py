"""One run trained data-parallel on several devices: Lightning's DDP, with ranks the harness starts.

``training.devices: N`` (N > 1) trains one run on N processes, one per device (N CPU
processes talking over gloo where there is no GPU, NCCL on GPUs):

* this process is rank 0 and keeps everything a run records (MLflow, the ledger, the report).
  Ranks 1…N−1 are child processes, ``python -m harness.training.rank SPEC``, that rebuild the same
  LightningModule from a pickled spec, join the process group and train in lockstep; what they
  compute is thrown away. Lightning is told the ranks exist already (``LOCAL_RANK`` is set), so it
  launches nothing itself: its own launcher would re-run ``harness run`` once per device.
* each rank reads an equal share of every batch (:func:`current_shard`): a language-model
  stream's columns, or a ``DistributedSampler``'s share of the shuffled examples. The global
  batch, and with it every hyper-parameter in the experiment file, stays the same; the loss is
  scaled so that DDP's gradient average is the gradient of the global batch's mean loss.
* summed losses, counts and predictions are combined across ranks (:func:`all_sum`,
  :func:`gather_objects`) before any metric is computed, so every rank sees whole-split metrics
  and all ranks make the same early-stopping decision.

A child that fails ends the run with its log's tail; rank 0 failing (or being interrupted)
terminates the children, and children whose rank 0 was killed outright end themselves and delete
the ranks' folder (:func:`harness.training.rank.watch_parent`). Only one machine: ``MASTER_ADDR``
is the loopback address.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from harness.core.errors import HarnessError

#: How long a rank waits in a collective for the others, e.g. for a child that died.
DDP_TIMEOUT = timedelta(minutes=10)

#: Set in the children's environment: their ``train_run`` joins the group instead of launching one.
CHILD_MARKER = "HARNESS_DDP_CHILD"
_GROUP_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "PL_GLOBAL_SEED")


class DistributedRunError(HarnessError):
    """A rank of a data-parallel run failed."""


@dataclass(frozen=True)
class Shard:
    """This process's share of the data: rank ``rank`` of ``world`` processes."""

    rank: int = 0
    world: int = 1


def current_shard() -> Shard:
    """The running process group's (rank, world size); (0, 1) outside data-parallel training."""
    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return Shard()


def planned_shard(devices: int) -> Shard:
    """The share this process will read once it joins a ``devices``-rank group (before the group exists)."""
    return Shard(int(os.environ.get("LOCAL_RANK", "0")), devices) if devices > 1 else Shard()


def is_child() -> bool:
    return os.environ.get(CHILD_MARKER) == "1"


def all_sum(values: list[float]) -> list[float]:
    """The element-wise sum of ``values`` over all ranks (the values themselves on one process)."""
    if current_shard().world == 1:
        return values
    # float64: the summed NLL of a whole split must not lose the precision perplexity needs.
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_objects(items: list[Any]) -> list[Any]:
    """Every rank's ``items`` concatenated in rank order (the items themselves on one process)."""
    world = current_shard().world
    if world == 1:
        return items
    gathered: list[list[Any] | None] = [None] * world
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part or []]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RankProcesses:
    """Starts ranks 1…N−1 of one run and makes this process rank 0, for the ``with`` block.

    ``spec`` holds ``train_run``'s arguments; the children call ``train_run(**spec)``.
    """

    #: Seconds rank 0 waits for the children to exit after a successful run.
    exit_timeout = 120.0

    def __init__(self, spec: dict[str, Any], devices: int) -> None:
        self.spec, self.devices = spec, devices
        self.children: list[subprocess.Popen] = []
        self._saved_environment: dict[str, str | None] = {}
        self._folder: Path | None = None

    def __enter__(self) -> RankProcesses:
        self._folder = Path(tempfile.mkdtemp(prefix="harness-ddp-"))  # private (0700): holds the pickled spec
        spec_path = self._folder / "spec.pickle"
        spec_path.write_bytes(pickle.dumps(self.spec, protocol=pickle.HIGHEST_PROTOCOL))
        group = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(self.devices),
                 "NODE_RANK": "0", "LOCAL_RANK": "0"}
        self._saved_environment = {name: os.environ.get(name) for name in _GROUP_VARIABLES}
        os.environ.update(group)
        os.environ.pop("PL_GLOBAL_SEED", None)
        try:
            for rank in range(1, self.devices):
                environment = {**os.environ, "LOCAL_RANK": str(rank), CHILD_MARKER: "1"}
                log = open(self._folder / f"rank{rank}.log", "wb")  # noqa: SIM115 (the child owns it)
                self.children.append(subprocess.Popen(
                    [sys.executable, "-m", "harness.training.rank", str(spec_path)],
                    env=environment, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    # Ctrl-C in a terminal reaches rank 0 alone, which ends the run KILLED and then stops
                    # the children; were they signalled too, their exit would look like a failure.
                    start_new_session=True))
                log.close()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> None:
        try:
            if kind is None:
                self._wait_for_children()
            elif issubclass(kind, Exception):
                # A dead child shows up in rank 0 as a collective's connection error: name the child.
                time.sleep(0.5)  # a child that rank 0's error came from is exiting as well
                for rank, child in enumerate(self.children, start=1):
                    if child.poll() not in (None, 0):
                        raise DistributedRunError(
                            f"rank {rank} of {self.devices} ended with {_exit_status(child.returncode)} during "
                            f"the run ({error}); its log ends:\n{self._log_tail(rank)}") from error
        finally:
            self._stop_children()
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
            for name, value in self._saved_environment.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            if self._folder is not None:
                shutil.rmtree(self._folder, ignore_errors=True)

    def _wait_for_children(self) -> None:
        for rank, child in enumerate(self.children, start=1):
            try:
                code = child.wait(timeout=self.exit_timeout)
            except subprocess.TimeoutExpired:
                code = None
            if code != 0:
                raise DistributedRunError(
                    f"rank {rank} of {self.devices} "
                    + ("did not exit" if code is None else f"ended with {_exit_status(code)}")
                    + f"; its log ends:\n{self._log_tail(rank)}")

    def _stop_children(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def _log_tail(self, rank: int, characters: int = 3000) -> str:
        assert self._folder is not None
        text = (self._folder / f"rank{rank}.log").read_bytes().decode("utf-8", "replace")
        return text[-characters:]


def _exit_status(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"
