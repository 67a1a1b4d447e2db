"""A child rank of a data-parallel run: ``python -m harness.training.rank SPEC``, started by
:class:`harness.training.distributed.RankProcesses`; it trains its share through :func:`train_run`."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from harness.training.trainer import train_run


def main(argv: list[str] | None = None) -> None:
    (spec_path,) = sys.argv[1:] if argv is None else argv
    spec = pickle.loads(Path(spec_path).read_bytes())
    train_run(**spec)


if __name__ == "__main__":
    main()
