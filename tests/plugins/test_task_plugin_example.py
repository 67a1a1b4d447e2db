"""The task-writing guide's example, installed with the real pip and run like a user would.

``examples/task_plugin`` (the ``parity`` task) is copied to a temporary folder, installed with
``pip install --no-build-isolation --target`` into a private site directory, and then must show
every option in ``harness tasks show parity`` and train through ``harness run``, reporting its
own metric and accuracy per length group. docs/writing-a-task.md must quote its files exactly.
"""

from __future__ import annotations

import csv
import re
import shutil
import types
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "task_plugin"
GUIDE = ROOT / "docs" / "writing-a-task.md"


def test_the_guide_quotes_the_example_files_exactly() -> None:
    quoted = re.findall(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)
    assert {path for path, _ in quoted} == {"examples/task_plugin/pyproject.toml",
                                            "examples/task_plugin/harness_parity.py",
                                            "examples/task_plugin/experiment.yaml"}
    for path, text in quoted:
        assert text == (ROOT / path).read_text(), f"docs/writing-a-task.md quotes an old {path}"


@pytest.fixture(scope="module")
def parity(tmp_path_factory: pytest.TempPathFactory, plugin_kit: types.SimpleNamespace) -> dict[str, Any]:
    """Install the example, then run `harness tasks show` and `harness run` on it together."""
    root = tmp_path_factory.mktemp("task_plugin")
    shutil.copytree(EXAMPLE, root / "src")  # pip builds in place: keep build/ out of the repository
    plugin_kit.pip_install(root / "site", [root / "src"])
    workdir = root / "work"
    workdir.mkdir()
    started = {
        "show": plugin_kit.start_harness(root / "site", "tasks", "show", "parity", "--json", cwd=workdir),
        "run": plugin_kit.start_harness(root / "site", "run", str(root / "src" / "experiment.yaml"), "--quiet",
                                        "--set", "training.max_epochs=1", cwd=workdir),
    }
    return {"site": root / "site", "workdir": workdir, **{k: run.result() for k, run in started.items()}}


def test_pip_installs_the_five_line_package(parity: dict[str, Any]) -> None:
    assert (EXAMPLE / "pyproject.toml").read_text().count("\n") == 5
    installed = sorted(p.name for p in parity["site"].iterdir() if p.name != "__pycache__")
    assert installed == ["harness_parity-0.1.0.dist-info", "harness_parity.py"]


def test_harness_tasks_show_describes_the_third_party_task(parity: dict[str, Any]) -> None:
    details = parity["show"].json()
    assert (details["name"], details["plugin"], details["distribution"], details["version"]) == \
        ("parity", "parity", "harness-parity", "0.1.0")
    assert (details["family"], details["primary_metric"], details["direction"]) == \
        ("classification", "accuracy", "higher is better")
    assert details["data_sets"] == []
    options = {o["name"]: o for o in details["options"]}
    assert list(options) == ["data_seed", "min_length", "max_length", "bucket_width", "train_size",
                             "validation_size", "test_size"]
    assert options["max_length"] == {"name": "max_length", "type": "int", "default": 12, "required": False,
                                     "allowed": "1 to 1,000", "description": "Longest bit string."}
    assert all(o["description"] for o in options.values())


def test_harness_run_trains_it_with_its_own_metric_and_groups(parity: dict[str, Any]) -> None:
    run = parity["run"]
    assert run.returncode == 0, run.explain()
    assert "parity_example: 2 finished, 0 failed" in run.stdout
    with open(parity["workdir"] / "reports" / "parity_example" / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["cell"] for row in rows) == ["gru", "vanilla"]
    for row in rows:
        assert 0.0 <= float(row["test_odd_recall"]) <= 1.0  # the task's evaluate()
        groups = [key for key in row if key.startswith("test_accuracy/len-")]
        assert groups == ["test_accuracy/len-01-04", "test_accuracy/len-05-08"]  # max_length 8, width 4
        assert all(0.0 <= float(row[key]) <= 1.0 for key in groups)
