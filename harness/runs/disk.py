"""Write failures (a full disk above all): naming them in one line, and checking space before a run.

A run whose checkpoint, model, artifact, MLflow or ledger write fails ends FAILED with
``disk_full: <path>: …`` (ENOSPC, EDQUOT, SQLite's "database or disk is full") or
``write_error: …``; the grid then stops, since the next run would hit the same disk.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FULL_MESSAGES = ("no space left on device", "database or disk is full", "disk quota exceeded")
#: Checkpoint copies of the weights kept at once (the newest two and the best) plus model.pt.
_WEIGHT_COPIES = 4
#: Bytes per parameter in one checkpoint: the weights, Adam's two moments, the early-stopping best copy.
_BYTES_PER_PARAMETER = 4 * 4
#: Room for MLflow's rows, the ledger, vocabularies and reports.
_MARGIN_BYTES = 16 * 2**20


class InsufficientSpaceError(OSError):
    """The output folder has less free space than the run will write."""


#: Space kept free in the output folder, released when the disk fills so that the failed run can still
#: be closed in MLflow and the ledger (SQLite needs room to record FAILED).
RESERVE_FILE, RESERVE_BYTES = ".space-reserve", 2 * 2**20


def write_failure_reason(error: BaseException, folder: Path | None = None) -> str | None:
    """``disk_full: …`` or ``io_error: …`` when ``error`` (or what caused it) is a failed write; else None.

    ``folder``: named when the error itself names no file (SQLite's "database or disk is full")."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        if (isinstance(current, OSError) and current.errno in _FULL_ERRNOS) or any(
                m in text.lower() for m in _FULL_MESSAGES):
            return f"disk_full: {_describe(current, folder)}"
        if isinstance(current, OSError) and current.errno is not None:
            return f"io_error: {_describe(current, folder)}"
        current = current.__cause__ or current.__context__
    return None


def _describe(error: BaseException, folder: Path | None) -> str:
    if isinstance(error, OSError) and error.filename:
        return f"{error.filename}: {error.strerror or error}"
    first = str(error).strip().splitlines()
    text = first[0][:300] if first else type(error).__name__
    return f"{folder}: {text}" if folder is not None else text


def reserve_space(folder: Path) -> None:
    """Set :data:`RESERVE_BYTES` aside in ``folder`` (best effort: skipped when there is no room)."""
    path = folder / RESERVE_FILE
    if path.exists():
        return
    try:
        with path.open("wb") as handle:
            os.posix_fallocate(handle.fileno(), 0, RESERVE_BYTES)
    except OSError:
        path.unlink(missing_ok=True)


def release_reserve(folder: Path) -> None:
    """Give the reserved space back, for the bookkeeping of a run that failed on a full disk."""
    try:
        (folder / RESERVE_FILE).unlink(missing_ok=True)
    except OSError:
        pass


def estimated_run_bytes(net: nn.Module) -> int:
    """What one run writes to its output folder at most: checkpoints, model.pt and a margin."""
    parameters = sum(p.numel() for p in net.parameters())
    return parameters * _BYTES_PER_PARAMETER * _WEIGHT_COPIES + _MARGIN_BYTES


def check_free_space(folder: Path, net: nn.Module) -> None:
    """Refuse to start a run that cannot fit in the free space of ``folder``'s file system."""
    needed = estimated_run_bytes(net)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise InsufficientSpaceError(
            errno.ENOSPC, f"{free / 2**20:.1f} MiB free, the run needs about {needed / 2**20:.1f} MiB "
            "(checkpoints and model); free some space or choose another output_dir", str(folder))


def best_effort(step: Callable[[], Any], what: str, say: Callable[[str], None]) -> bool:
    """Run a bookkeeping ``step`` on an error path, where a second failure must not raise: say it instead."""
    try:
        step()
    except Exception as error:  # noqa: BLE001 - the error path must finish whatever fails
        reason = write_failure_reason(error) or f"{type(error).__name__}: {error}"
        say(f"    could not {what}: {reason.splitlines()[0] if reason else ''}")
        return False
    return True
