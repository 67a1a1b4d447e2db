"""T8 of the fault plan under ``harness run``: broken third-party plugins do not stop runs that do not use them.

The same site as ``test_cli_plugins.py`` (seven broken distributions beside a healthy third-party
cell). A grid of the healthy third-party cell and a built-in one trains both runs, warning once per
broken plugin; with strict plugin loading the same command exits 3 at start-up with nothing created.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness_processes import mlflow_runs, tag

BROKEN_PLUGINS = 7  # six broken distributions and one impostor of a built-in name (see conftest.py)

GRID = """\
cells: [gain_rnn, gru]
tasks: [{name: adding, options: {train_size: 32, validation_size: 16, test_size: 16, length: 5}}]
seeds: [0]
model: {hidden_size: 4}
training: {max_epochs: 1, batch_size: 16, cpu_threads: 1}
device: cpu
output_dir: out
reports_dir: reports
"""


@pytest.fixture(scope="module")
def runs(third_party_site: Path, plugin_kit: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``harness run`` without and with ``--strict-plugins``, each in its own folder, started together."""
    started = {}
    for label, switches in (("default", ()), ("strict", ("--strict-plugins",))):
        folder = tmp_path_factory.mktemp(label)
        (folder / "grid.yaml").write_text(GRID, encoding="utf-8")
        started[label] = (folder, plugin_kit.start_harness(third_party_site, *switches, "run", "grid.yaml", cwd=folder))
    return {label: (folder, run.result()) for label, (folder, run) in started.items()}


def test_runs_that_use_no_broken_plugin_train_and_each_broken_one_is_named(runs: dict[str, Any]) -> None:
    folder, run = runs["default"]
    assert run.returncode == 0, run.explain()
    assert "grid: 2 finished, 0 failed, 0 skipped" in run.stdout, run.explain()
    warnings = [line for line in run.stderr.splitlines() if line.startswith("Warning: plugin ")]
    assert len(warnings) == len(set(warnings)) == BROKEN_PLUGINS and all("is broken: " in w for w in warnings), warnings
    assert "Traceback" not in run.stderr
    finished = {tag(r, "cell"): r.info.status for r in mlflow_runs(folder / "out", "grid")}
    assert finished == {"gain_rnn": "FINISHED", "gru": "FINISHED"}


def test_strict_plugin_loading_stops_harness_run_at_start_up_with_nothing_created(runs: dict[str, Any]) -> None:
    folder, run = runs["strict"]
    assert run.returncode == 3, run.explain()
    assert f"Error: {BROKEN_PLUGINS} plugin(s) are broken and strict plugin loading is on:" in run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["grid.yaml"]
