"""The sha256 of a file, with nothing heavy imported: `harness data` and the model loaders share it."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["sha256_of"]


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in blocks (model files and data sets can be large)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
