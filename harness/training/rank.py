"""A child rank of a data-parallel run: ``python -m harness.training.rank SPEC``, started by
:class:`harness.training.distributed.RankProcesses`; it trains its share through :func:`train_run`."""

from __future__ import annotations

import os
import pickle
import random
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

from harness.training.trainer import train_run


def main(argv: list[str] | None = None) -> None:
    (spec_path,) = sys.argv[1:] if argv is None else argv
    parent, folder = os.getppid(), Path(spec_path).parent
    watch_parent(parent, folder)
    try:
        spec = pickle.loads(Path(spec_path).read_bytes())
        seed_rank(int(spec["seed"]), int(os.environ.get("LOCAL_RANK", "1")))
        train_run(**spec)
    except BaseException:
        if _parent_gone(parent, within=1.0):  # a collective with a killed rank 0 failed: nobody else cleans up
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _parent_gone(parent: int, within: float) -> bool:
    """Whether this process loses ``parent`` within ``within`` seconds: a killed process's sockets close
    (failing the collective) a moment before its children are handed to another parent."""
    deadline = time.monotonic() + within
    while os.getppid() == parent:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def watch_parent(parent: int, folder: Path, every: float = 1.0) -> None:
    """End this rank once rank 0 (``parent``) is gone, e.g. after a ``kill -9``, and delete the run's
    folder (the pickled spec, the rank logs) that rank 0 could not clean up.

    Usually a collective with rank 0 fails first (gloo: "Connection reset by peer") and the rank exits
    with that error; this also ends a rank that would reach no collective for a while, or hang on exit.
    """
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        shutil.rmtree(folder, ignore_errors=True)
        os._exit(1)

    threading.Thread(target=watch, name="rank 0 watch", daemon=True).start()


def seed_rank(seed: int, rank: int) -> None:
    """Seed this rank's generators from the run's seed and its rank (its own dropout masks).

    Without it a child's torch generator starts from a random seed and a data-parallel run with
    dropout differs from one attempt to the next (nor could a resumed one equal an uninterrupted one).
    """
    value = seed * 1_000_003 + rank
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


if __name__ == "__main__":
    main()
