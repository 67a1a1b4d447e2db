"""Shared bits of the music tests: where the polyphonic-music data lives.

The tests read the real JSON files from ``$HARNESS_DATA_DIR/polyphonic-music/`` (default
/work/shared/data, the folder that contains ``polyphonic-music/``); the tests that need
them are skipped when the folder is not there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_DIR = Path(os.environ.get("HARNESS_DATA_DIR") or "/work/shared/data")
JSB = DATA_DIR / "polyphonic-music" / "JSB_Chorales.json"


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    if not JSB.is_file():
        pytest.skip(f"no polyphonic-music data under {DATA_DIR}")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(DATA_DIR))
    return DATA_DIR
