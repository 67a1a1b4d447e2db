"""T17: every run records where its plugins' code came from (``harness.plugin_provenance``).

A real third-party distribution (``harness-fx-gain-rnn`` 1.4.2, installed with the real pip, see
conftest.py) trains on the built-in ``adding`` task through ``harness tune``, which opens MLflow
runs both ways there are: its trials, and the re-training runs, which the grid runner records
(``harness run``'s own code; its process pool and Ray executors record through the same driver
code, ``RunSpec.plugin_tags``). The expected values are read from the installed dist-info folders
by path, and the RECORD digest is of the file's bytes, so nothing here repeats the harness's own
way of finding them.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from harness_processes import installed_provenance, mlflow_runs, tag, tuning_experiment, write_experiment

from harness.core.loading import load_plugins
from harness.core.provenance import NO_RECORD, record_sha256

ALLOW = {"HARNESS_PLUGINS": "gain_rnn,adding"}  # the allow-list keeps the broken fixtures out
TUNE = tuning_experiment(cell="gain_rnn", budget=2, train_size=64, length=6, max_epochs=1)


@pytest.fixture(scope="module")
def recorded(third_party_site: Path, plugin_kit: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The MLflow runs of ``harness tune``: its trials (``tune-trials``) and its re-training (``tune``)."""
    folder = tmp_path_factory.mktemp("provenance")
    write_experiment(folder, "tune", TUNE, command="tune")
    finished = plugin_kit.start_harness(third_party_site, "tune", "tune.yaml", env=ALLOW, cwd=folder).result()
    assert finished.returncode == 0, finished.explain()
    return {experiment: mlflow_runs(folder / "out", experiment) for experiment in ("tune-trials", "tune")}


@pytest.mark.parametrize("experiment", ["tune-trials", "tune"])
def test_every_run_names_the_third_party_distribution_its_version_and_record_hash(
        recorded: dict[str, Any], third_party_site: Path, experiment: str) -> None:
    runs = recorded[experiment]
    assert runs, f"no runs in {experiment}"
    expected = {"cell": installed_provenance("gain_rnn", "harness-fx-gain-rnn", third_party_site),
                "task": installed_provenance("adding")}
    assert expected["cell"]["version"] == "1.4.2"
    for run in runs:
        assert json.loads(tag(run, "plugin_provenance")) == expected, run.data.tags
        versions = json.loads(tag(run, "plugin_versions"))
        assert (versions["gain_rnn"], versions["adding"]) == ("1.4.2", expected["task"]["version"])


def test_the_record_hash_is_of_the_file_bytes_not_its_text(third_party_on_path: Path) -> None:
    (info,) = load_plugins(allow=["gain_rnn"]).plugins
    record = third_party_on_path / "harness_fx_gain_rnn-1.4.2.dist-info" / "RECORD"
    assert b"\r\n" in record.read_bytes()  # pip's CSV line ends: hashing the text would differ
    assert info.record_sha256 == hashlib.sha256(record.read_bytes()).hexdigest()
    assert info.provenance() == {"plugin": "gain_rnn", "distribution": "harness-fx-gain-rnn", "version": "1.4.2",
                                 "record_sha256": info.record_sha256}


def test_a_distribution_without_record_is_recorded_as_none(tmp_path: Path) -> None:
    egg_info = tmp_path / "legacy.egg-info"  # what `setup.py develop` leaves: metadata, no RECORD
    egg_info.mkdir()
    (egg_info / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: legacy\nVersion: 1.0\n")
    (egg_info / "SOURCES.txt").write_text("legacy.py\nlegacy.egg-info/PKG-INFO\n")
    assert record_sha256(metadata.PathDistribution(egg_info)) == NO_RECORD == "none"
    assert record_sha256(None) == "none"


def test_an_in_process_plugin_has_no_distribution() -> None:
    from harness import hookimpl

    class Plugin:
        @hookimpl
        def register_cells(self, register: Any) -> None:
            pass

    loaded = load_plugins(allow=["embedded"], extra_plugins=[("embedded", Plugin())])
    (info,) = loaded.plugins
    assert info.provenance() == {"plugin": "embedded", "distribution": "none", "version": "unknown",
                                 "record_sha256": "none"}
