"""Shared bits of the music tests: where the polyphonic-music data lives.

The tests read the real JSON files from ``$HARNESS_DATA_DIR/polyphonic-music/``; without them they
skip saying how to get the data (fail instead with HARNESS_REQUIRE_DATA=1 or CI set; see
tests/real_data.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from real_data import real_data_root


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    root = real_data_root("polyphonic-music")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(root))
    return root
