"""The full data sets for real-data tests: found under ``$HARNESS_DATA_DIR/<folder>``, else skipped.

A test that needs a real data set calls :func:`real_data_root` (or a conftest fixture built on it).
Absent data skips the test with one line naming the data set and how to get it; with
``HARNESS_REQUIRE_DATA=1`` (or ``CI`` set) it fails instead, so CI still runs every real-data test.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

ENV_DATA_DIR = "HARNESS_DATA_DIR"
ENV_REQUIRE = "HARNESS_REQUIRE_DATA"
#: Values of HARNESS_REQUIRE_DATA / CI that mean "not set" (CI=false is how some runners say no).
_OFF = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class RealDataSet:
    """A data set as the tasks read it: its folder under the data folder and the files a full copy has."""

    title: str
    folder: str
    files: tuple[str, ...]


DATASETS: dict[str, RealDataSet] = {
    "ptb": RealDataSet("Penn Treebank (PTB)", "ptb", ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")),
    "tinyshakespeare": RealDataSet("tiny-shakespeare", "tinyshakespeare", ("input.txt",)),
    "conll2003": RealDataSet("CoNLL-2003", "conll2003", ("eng.train", "eng.testa", "eng.testb")),
    "sst2": RealDataSet("SST-2", "sst2", ("stsa.binary.train", "stsa.binary.dev", "stsa.binary.test",
                                          "phrases/train.tsv")),
    "multi30k": RealDataSet("Multi30k", "multi30k", tuple(f"{stem}.{lang}" for stem in ("train", "val", "test2016")
                                                          for lang in ("de", "en"))),
    "polyphonic-music": RealDataSet("the polyphonic-music piano rolls", "polyphonic-music",
                                    ("JSB_Chorales.json", "Nottingham.json", "MuseData.json", "Piano-midi.de.json")),
}


def data_required() -> bool:
    """True when absent data must fail the test: HARNESS_REQUIRE_DATA=1, or CI set (unless HARNESS_REQUIRE_DATA=0)."""
    explicit = os.environ.get(ENV_REQUIRE)
    if explicit is not None:
        return explicit.strip().lower() not in _OFF
    return os.environ.get("CI", "").strip().lower() not in _OFF


def missing_reason(name: str) -> str | None:
    """Why data set ``name`` cannot be used (one line), or None when every file of it is present."""
    dataset = DATASETS[name]
    how = f"run `harness data fetch {name}` and set {ENV_DATA_DIR} to the folder that contains {dataset.folder}/"
    root = os.environ.get(ENV_DATA_DIR, "").strip()
    if not root:
        return f"{dataset.title} not found: {ENV_DATA_DIR} is not set; {how}"
    folder = Path(root).expanduser() / dataset.folder
    absent = [file for file in dataset.files if not (folder / file).is_file()]
    if absent:
        return f"{dataset.title} not found under ${ENV_DATA_DIR}/{dataset.folder} ({folder} lacks {absent[0]}); {how}"
    return None


def real_data_root(*names: str) -> Path:
    """The data folder (``$HARNESS_DATA_DIR``) holding every named data set; skips (or fails) otherwise."""
    for name in names:
        reason = missing_reason(name)
        if reason is not None:
            if data_required():
                pytest.fail(f"{reason} ({ENV_REQUIRE} or CI is set, so missing data fails)", pytrace=False)
            pytest.skip(reason)
    return Path(os.environ[ENV_DATA_DIR]).expanduser()
