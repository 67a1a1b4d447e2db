"""A local Ray cluster of three nodes (raylets) on 127.0.0.1, and looking at its training workers.

``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is Ray's one-machine mode: every address Ray picks
(the driver's too, in ``harness run`` subprocesses, which inherit it) stays 127.0.0.1.
The nodes are torn down when the session ends.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psutil

#: Ray starts slowly on a loaded 2-core machine: nodes and worker processes get minutes.
RAY_TIMEOUT = 300
#: The process title of a Ray worker while it trains a run: its task name, "train <cell>-<task>-s<seed>".
TRAINING_TITLE = "ray::train "


@dataclass
class LocalCluster:
    cluster: Any  # ray.cluster_utils.Cluster
    workers: list[Any]  # the two non-head nodes

    @property
    def address(self) -> str:
        return self.cluster.address

    def nodes(self) -> list[Any]:
        return [self.cluster.head_node, *self.workers]

    def raylet_pid(self, node: Any) -> int:
        from ray._private import ray_constants

        return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


def start_cluster() -> Iterator[LocalCluster]:
    """Three nodes of one CPU each (the first one the head); torn down when the generator closes."""
    saved = {name: os.environ.get(name) for name in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "OMP_NUM_THREADS")}
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["OMP_NUM_THREADS"] = "1"  # as harness_env gives local runs: tiny RNNs, one thread each
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "node_ip_address": "127.0.0.1", "include_dashboard": False, "num_cpus": 1})
    try:
        workers = [cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1) for _ in range(2)]
        yield LocalCluster(cluster, workers)
    finally:
        cluster.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def node_with_cpus(cluster: LocalCluster, cpus: int) -> Iterator[Any]:
    """A node of ``cpus`` CPUs, added for the block: the only node where a task asking for that many
    fits (a data-parallel CPU run asks for one per rank). Removed afterwards, with what runs there."""
    node = cluster.cluster.add_node(node_ip_address="127.0.0.1", num_cpus=cpus)  # waits until it is alive
    try:
        yield node
    finally:
        cluster.cluster.remove_node(node)


def training_processes(parent_pid: int | None = None) -> list[psutil.Process]:
    """Ray worker processes training a run now: on the node whose raylet is ``parent_pid``, if given,
    else on this test process's own cluster (its descendants: under xdist the other worker runs a
    cluster of its own, whose tasks must not count here)."""
    found = []
    candidates = psutil.Process(parent_pid).children() if parent_pid else psutil.Process().children(recursive=True)
    for process in candidates:
        try:
            if " ".join(process.cmdline()).startswith(TRAINING_TITLE):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def wait_until(condition: Callable[[], Any], what: str, timeout: float = RAY_TIMEOUT) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout}s")
