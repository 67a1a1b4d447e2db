"""The public API of ``harness/__init__.py``, and the old flat module paths that still import for a release."""

from __future__ import annotations

import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest

import harness
from harness.core.loading import load_plugins


def test_every_name_in_all_resolves_to_its_implementation() -> None:
    from harness.core.cells import CellConfig, RecurrentCell
    from harness.core.hookspecs import hookimpl
    from harness.core.tasks import Example, Task, TaskConfig, TaskData
    from harness.core.vocab import Vocabulary
    from harness.reports.results import load
    from harness.workflows.experiment import run_experiment

    expected = {"CellConfig": CellConfig, "RecurrentCell": RecurrentCell, "Task": Task, "TaskConfig": TaskConfig,
                "hookimpl": hookimpl, "load": load, "run_experiment": run_experiment, "Example": Example,
                "TaskData": TaskData, "Vocabulary": Vocabulary}
    assert set(harness.__all__) == set(expected) | {"__version__"}
    for name, value in expected.items():
        assert getattr(harness, name) is value, name
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        harness.nothing_here  # noqa: B018


def test_importing_harness_imports_neither_torch_nor_mlflow() -> None:
    """`harness status` and plugin discovery stay fast: the heavy parts load on first use."""
    code = "import sys, harness; print(sorted(m for m in ('torch', 'mlflow', 'pandas') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"


def test_an_old_module_path_warns_and_gives_the_moved_module() -> None:
    for old in ("harness.cells", "harness.textdata", "harness.config"):
        sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=r"harness\.cells has moved to harness\.core\.cells"):
        from harness.cells import RecurrentCell as OldRecurrentCell
    with pytest.warns(DeprecationWarning, match=r"harness\.textdata has moved to harness\.data\.reading"):
        import harness.textdata as old_textdata
    with pytest.warns(DeprecationWarning, match=r"harness\.config has moved to harness\.experiment"):
        from harness.config import load_experiment as old_load
    import harness.data.reading
    import harness.experiment

    assert OldRecurrentCell is harness.RecurrentCell
    assert old_textdata is harness.data.reading and old_load is harness.experiment.load_experiment
    with pytest.raises(ModuleNotFoundError):  # names that never existed are not invented
        import harness.nonexistent  # noqa: F401


def test_a_third_party_plugin_written_against_the_old_paths_still_registers() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from harness.cells import CellConfig as OldCellConfig
        from harness.stack import RecurrentStack  # noqa: F401 - a module plugins used to import
    lstm = load_plugins(autoload=True).cells.get("lstm")

    class OldStyleLSTM(lstm):  # type: ignore[misc, valid-type]
        """An LSTM registered the way a plugin of the last release did."""

        name = "old_style_lstm"

        class Config(OldCellConfig):
            pass

    plugin = types.ModuleType("harness_fx_old_paths")
    plugin.register_cells = harness.hookimpl(lambda register: register(OldStyleLSTM))
    loaded = load_plugins(extra_plugins=[("old_paths", plugin)])
    assert loaded.cells.get("old_style_lstm") is OldStyleLSTM
    assert not loaded.broken


def test_run_experiment_trains_records_and_reports(tmp_path: Path) -> None:
    experiment = tmp_path / "tiny.yaml"
    experiment.write_text(
        "cells: [gru]\n"
        "tasks: [{name: adding, options: {length: 5, train_size: 64, validation_size: 32, test_size: 32}}]\n"
        "seeds: [0]\ndevice: cpu\n"
        "model: {hidden_size: 8}\ntraining: {max_epochs: 1, batch_size: 32}\n"
        f"output_dir: {tmp_path / 'runs'}\nreports_dir: {tmp_path / 'reports'}\n", encoding="utf-8")
    outcome = harness.run_experiment(experiment, verbose=False)
    assert (outcome.summary.finished, outcome.summary.failed, outcome.exit_code) == (1, 0, 0)
    assert outcome.report.results_csv.exists() and outcome.report.html.exists()
    frame = harness.load(experiment)
    assert list(frame["status"]) == ["FINISHED"] and frame["task"].tolist() == ["adding"]
    again = harness.run_experiment(experiment, verbose=False)  # finished runs are skipped, as with `harness run`
    assert (again.summary.finished, again.summary.skipped) == (0, 1)
