"""The process-wide random generators' states (Python, NumPy, torch CPU and CUDA), as a checkpoint holds them.

Each rank of a data-parallel run has its own: :func:`capture_all_ranks` gathers every rank's
state into a list indexed by rank, and :func:`restore` gives each rank its own back.
Everything is stored as tensors, lists and tuples, so a ``weights_only`` load reads it.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from harness.training.distributed import current_shard, gather_objects


def capture() -> dict[str, Any]:
    """This process's generator states."""
    numpy_state = np.random.get_state()
    return {
        "python_rng": random.getstate(),
        "numpy_rng": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def capture_all_ranks() -> list[dict[str, Any]]:
    """Every rank's :func:`capture`, in rank order (a collective: every rank must call it)."""
    return gather_objects([capture()])


def restore(state: dict[str, Any]) -> None:
    """Set this process's generators to ``state`` (one rank's :func:`capture`)."""
    random.setstate(state["python_rng"])
    name, keys, *rest = state["numpy_rng"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def restore_own(saved: dict[str, Any]) -> None:
    """Restore this rank's states from a checkpoint's ``saved`` (all ranks', or one process's older format)."""
    by_rank = saved.get("rng_by_rank")
    if by_rank is None:
        restore(saved)  # a checkpoint written before states were kept per rank
        return
    rank = current_shard().rank
    if rank >= len(by_rank):
        raise ValueError(f"the checkpoint holds the RNG states of {len(by_rank)} rank(s), not of rank {rank}")
    restore(by_rank[rank])
