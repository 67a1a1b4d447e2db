"""A child rank of a data-parallel run: ``python -m harness.training.rank SPEC``, started by
:class:`harness.training.distributed.RankProcesses`; it trains its share through :func:`train_run`."""

from __future__ import annotations

import os
import pickle
import random
import sys
from pathlib import Path

import numpy as np
import torch

from harness.training.trainer import train_run


def main(argv: list[str] | None = None) -> None:
    (spec_path,) = sys.argv[1:] if argv is None else argv
    spec = pickle.loads(Path(spec_path).read_bytes())
    seed_rank(int(spec["seed"]), int(os.environ.get("LOCAL_RANK", "1")))
    train_run(**spec)


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
