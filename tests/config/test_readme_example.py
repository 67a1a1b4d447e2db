"""The experiment file shown in README.md is a valid experiment file."""

from __future__ import annotations

import re
from pathlib import Path

from harness.experiment import load_experiment
from harness.core.loading import load_plugins
from harness.runs.grid import expand_grid

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_example_validates_and_expands(tmp_path) -> None:
    block = re.search(r"```yaml\n(# Compare the LSTM.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert block, "README.md lost its example experiment file"
    path = tmp_path / "mine.yaml"
    path.write_text(block.group(1))
    loaded = load_experiment(path)
    specs = expand_grid(loaded, load_plugins())
    assert len(specs) == 2 * 1 * 3  # 2 cells × 1 task × 3 seeds
    assert loaded.experiment.reference.results == {"agreement": {"lstm": [0.98]}}
