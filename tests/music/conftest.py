"""Shared bits of the music tests: where the polyphonic-music data lives.

The tests read the real JSON files from ``$HARNESS_DATA_DIR/polyphonic-music/`` (default:
``../shared/data`` beside the repository, the folder that contains ``polyphonic-music/``).
Without the data those tests fail with a message saying where they looked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_DIR = Path(os.environ.get("HARNESS_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data")
JSB = DATA_DIR / "polyphonic-music" / "JSB_Chorales.json"


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    if not JSB.is_file():
        pytest.fail(f"no polyphonic-music data under {DATA_DIR}: set HARNESS_DATA_DIR to the folder "
                    "that contains polyphonic-music/")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(DATA_DIR))
    return DATA_DIR
