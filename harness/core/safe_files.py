"""Writing files atomically, and reading model and checkpoint files that may be damaged or hostile.

Every failure to read becomes one :class:`BadInputError` line naming the file and what is wrong
with it: a sha256 mismatch, an empty or truncated file, a file that is not a torch zip, or one
the safe loader refuses because unpickling it would run code.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from harness.core.errors import BadInputError
from harness.core.file_hash import sha256_of
from harness.core.torch_advisory import warn_if_torch_load_is_unsafe


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temp file beside it, fsync, rename, fsync the folder."""
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def check_sidecar(path: Path) -> None:
    """Refuse ``path`` unless ``<path>.sha256`` exists and holds its digest."""
    sidecar = Path(f"{path}.sha256")
    if not path.exists():
        raise BadInputError(f"{path}: no such file")
    if not sidecar.exists():
        raise BadInputError(f"{path}: no sha256 sidecar ({sidecar.name}), so it cannot be verified")
    expected = sidecar.read_text(errors="replace").strip()
    actual = sha256_of(path)
    if actual != expected:
        raise BadInputError(f"{path}: sha256 {actual} does not match the recorded {expected[:64]!r}; "
                            "the file was changed or damaged")


def load_weights_only(path: Path) -> Any:
    """``torch.load(weights_only=True)`` on the CPU, with every failure as one BadInputError line.

    On a torch whose safe loader can be bypassed (before 2.10) the first call in a process warns.
    """
    warn_if_torch_load_is_unsafe()
    if path.stat().st_size == 0:
        raise BadInputError(f"{path}: the file is empty")
    if not zipfile.is_zipfile(path):
        raise BadInputError(f"{path}: not a torch zip archive (truncated, or not a file torch.save wrote)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise BadInputError(_refusal(path, error)) from None
    except (RuntimeError, EOFError, ValueError, KeyError, OSError, zipfile.BadZipFile) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BadInputError(f"{path}: cannot be read as a torch file ({first})") from None


def _refusal(path: Path, error: Exception) -> str:
    """The safe loader's refusal in one line, naming the code the file would have run."""
    # torch words it "Unsupported global: GLOBAL posix.system" or "unsupported GLOBAL posix.system whose …".
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    if found:
        return f"refusing to load {path}: it contains code ({found.group(1)}); it was not unpickled"
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"refusing to load {path}: the safe loader rejected it ({first})"


def describe_load_error(path: Path, error: Exception) -> str:
    """One line for a checkpoint that could not be used."""
    if isinstance(error, BadInputError):
        return str(error).replace(f"{path}: ", "")
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first}"
