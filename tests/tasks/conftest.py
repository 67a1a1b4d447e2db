"""Where the real data sets live for the task tests.

The tests read the real files from ``$HARNESS_DATA_DIR`` (default: ``../shared/data`` beside
the repository, the folder that contains ``ptb/``, ``conll2003/``, …). Without the data these
tests fail, saying where they looked; they never skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_DIR = Path(os.environ.get("HARNESS_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data")


@pytest.fixture
def real_data_dir(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder that contains the data sets, also exported as HARNESS_DATA_DIR."""
    if not DATA_DIR.is_dir():
        pytest.fail(f"no data sets under {DATA_DIR}: set HARNESS_DATA_DIR to the folder that contains ptb/, "
                    "conll2003/, sst2/, multi30k/ and tinyshakespeare/")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(DATA_DIR))
    return DATA_DIR
