"""The experiment file's `report` settings: defaults, validation, and no effect on run keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.experiment import load_experiment
from harness.core.errors import ConfigError
from harness.core.loading import load_plugins
from harness.runs.grid import expand_grid

BASE = "cells: [gru, lstm]\ntasks: [adding]\nseeds: [0]\n"


def test_report_settings_never_change_run_keys(tmp_path: Path) -> None:
    plain, tuned = tmp_path / "plain.yaml", tmp_path / "tuned.yaml"
    plain.write_text(BASE)
    tuned.write_text(BASE + "report: {correction: fdr_bh, reference_cell: gru, memory_horizon_fraction: 0.8}\n")
    plugins = load_plugins()
    first, second = load_experiment(plain), load_experiment(tuned)
    assert (first.experiment.report.correction, first.experiment.report.reference_cell) == ("holm", "lstm")
    assert (second.experiment.report.correction, second.experiment.report.reference_cell) == ("fdr_bh", "gru")
    assert (first.experiment.report.memory_horizon_fraction, second.experiment.report.memory_horizon_fraction) == (
        0.95, 0.8)
    assert [s.key for s in expand_grid(first, plugins)] == [s.key for s in expand_grid(second, plugins)]


def test_unknown_correction_names_the_line(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(BASE + "report:\n  correction: bonferonni\n")
    with pytest.raises(ConfigError) as error:
        load_experiment(file)
    assert "bad.yaml:5" in str(error.value) and "correction" in str(error.value)
