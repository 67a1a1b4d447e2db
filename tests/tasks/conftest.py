"""Where the real data sets live for the task tests.

A test that needs a full data set asks the ``real_data`` fixture for it by name: it gets the folder
``$HARNESS_DATA_DIR`` (which contains ``ptb/``, ``conll2003/``, …), or the test skips saying how to get
the data (fails instead with HARNESS_REQUIRE_DATA=1 or CI set; see tests/real_data.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from real_data import real_data_root


@pytest.fixture
def real_data(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """``real_data("ptb")``: the folder that contains that data set, also exported as HARNESS_DATA_DIR."""

    def find(name: str) -> Path:
        root = real_data_root(name)
        monkeypatch.setenv("HARNESS_DATA_DIR", str(root))
        return root

    return find
