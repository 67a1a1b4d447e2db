"""Difficulty sweeps: a swept option of a third-party task makes one grid task per value.

Each value is its own task (label ``name[option=value]``), with its own run keys, MLflow runs
and tags; a rerun skips the variants that finished; a bad sweep names file:line and key.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import pytest

from harness import hookimpl
from harness.experiment import PluginChoice, load_experiment
from harness.core.errors import ConfigError
from harness.core.loading import LoadedPlugins, load_plugins
from harness.runs.grid import expand_grid
from harness.runs.runner import Runner
from harness.runs.sweeps import sweep_point
from harness.core.tasks import Example, Task, TaskConfig, TaskData
from harness.runs.tracking import Tracker, default_tracking_uri
from harness.core.vocab import Vocabulary


class RecallConfig(TaskConfig):
    gap: int = 4
    filler: Literal["r", "s"] = "r"


class Recall(Task):
    """Many-to-one: the class is the first token, read after ``gap`` filler tokens."""

    name = "recall_first"
    family = "classification"
    Config = RecallConfig
    primary_metric = "accuracy"
    higher_is_better = True

    def load(self) -> TaskData:
        rng = random.Random(self.config.gap)
        vocab = Vocabulary(["p", "q", "r", "s"])
        labels = Vocabulary(["p", "q"], specials=())

        def split(size: int) -> list[Example]:
            firsts = [rng.choice("pq") for _ in range(size)]
            return [Example(vocab.encode([f] + [self.config.filler] * self.config.gap), labels.id(f)) for f in firsts]

        return TaskData(split(32), split(16), split(16), input_vocab=vocab, output_vocab=labels)


PLUGIN = SimpleNamespace(register_tasks=hookimpl(lambda register: register(Recall)))


@pytest.fixture(scope="module")
def plugins() -> LoadedPlugins:
    return load_plugins(extra_plugins=[("recall-plugin", PLUGIN)])


def write(tmp_path: Path, task_line: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "# A sweep of a third-party task's option: harness run sweep.yaml\n"  # 1
        "cells: [vanilla]\n"                                                   # 2
        "tasks:\n"                                                             # 3
        f"{task_line}\n"                                                       # 4
        "seeds: [0]\n"                                                         # 5
        "model: {hidden_size: 4, embedding_size: 4}\n"
        "training: {max_epochs: 1, batch_size: 16}\n"
        "device: cpu\n"
        f"output_dir: {tmp_path / 'runs'}\n"
        f"reports_dir: {tmp_path / 'reports'}\n"
    )
    return path


def test_a_swept_option_makes_one_task_per_value_with_its_own_runs(tmp_path: Path, plugins: LoadedPlugins) -> None:
    path = write(tmp_path, "  - {name: recall_first, options: {filler: s}, sweep: {gap: [2, 6, 12]}}")
    loaded = load_experiment(path)
    specs = expand_grid(loaded, plugins)
    assert [s.task.label for s in specs] == [f"recall_first[gap={g}]" for g in (2, 6, 12)]
    assert [s.task.config.gap for s in specs] == [2, 6, 12]
    assert {s.task.config.filler for s in specs} == {"s"}  # the listed options stay
    assert len({s.key for s in specs}) == 3

    runner = Runner(loaded, plugins, specs, verbose=False)
    runner.open()
    first = runner.run()
    assert (first.finished, first.failed, first.skipped) == (3, 0, 0)
    records = Tracker(default_tracking_uri(tmp_path / "runs"), "sweep").runs()
    points = sorted((sweep_point(r).option, sweep_point(r).value, r.tag("task")) for r in records)
    assert points == [("gap", g, f"recall_first[gap={g}]") for g in (2, 6, 12)]
    assert {sweep_point(r).task for r in records} == {"recall_first"}

    # Add a value: only the new variant runs; the finished ones keep their keys and are skipped.
    path = write(tmp_path, "  - {name: recall_first, options: {filler: s}, sweep: {gap: [2, 6, 12, 20]}}")
    loaded = load_experiment(path)
    again = expand_grid(loaded, plugins)
    assert {s.key for s in specs} < {s.key for s in again}
    rerun = Runner(loaded, plugins, again, verbose=False)
    rerun.open()
    second = rerun.run()
    assert (second.finished, second.skipped) == (1, 3)


def test_a_categorical_option_can_be_swept(tmp_path: Path, plugins: LoadedPlugins) -> None:
    loaded = load_experiment(write(tmp_path, "  - {name: recall_first, sweep: {filler: [r, s]}}"))
    specs = expand_grid(loaded, plugins)
    assert [s.task.label for s in specs] == ["recall_first[filler=r]", "recall_first[filler=s]"]
    assert specs[0].key != specs[1].key


def test_a_built_in_task_can_be_swept(tmp_path: Path, plugins: LoadedPlugins) -> None:
    line = "  - {name: agreement, options: {train_size: 8}, sweep: {max_distance: [5, 50]}}"
    specs = expand_grid(load_experiment(write(tmp_path, line)), plugins)
    assert [s.task.label for s in specs] == ["agreement[max_distance=5]", "agreement[max_distance=50]"]
    assert [s.task.config.max_distance for s in specs] == [5, 50]


@pytest.mark.parametrize(("line", "expected"), [
    ("  - {name: recall_first, sweep: {gapp: [1, 2]}}",
     ":4: tasks[0].sweep.gapp: task 'recall_first' has no option 'gapp' to sweep; its options: gap, filler"),
    ("  - {name: recall_first, sweep: {gap: [1, lots]}}",
     ":4: tasks[0].sweep.gap[1]: gap='lots' is not a valid value for task 'recall_first'"),
    ("  - {name: recall_first, sweep: {filler: [r, t]}}",
     ":4: tasks[0].sweep.filler[1]: filler='t' is not a valid value"),
    ("  - {name: recall_first, sweep: {gap: []}}", ":4: tasks[0].sweep: "),
    ("  - {name: recall_first, sweep: {gap: [1, 1]}}", ":4: tasks[0].sweep: "),
    ("  - {name: recall_first, sweep: {gap: [1], filler: [r]}}", ":4: tasks[0].sweep: "),
])
def test_a_bad_sweep_names_file_line_and_key(tmp_path: Path, plugins: LoadedPlugins, line: str,
                                             expected: str) -> None:
    path = write(tmp_path, line)
    with pytest.raises(ConfigError) as error:
        expand_grid(load_experiment(path), plugins)
    assert str(error.value).startswith(f"{path}{expected}"), str(error.value)
    assert "\n" not in str(error.value)


def test_files_without_a_sweep_dump_as_before() -> None:
    # Run keys hash dumped settings: an unswept entry must dump exactly as it did before sweeps existed.
    assert PluginChoice.model_validate({"name": "copy", "options": {"delay": 3}}).model_dump() == {
        "name": "copy", "options": {"delay": 3}, "label": None}
    assert "diagnostics" not in load_experiment(ROOT / "experiments" / "tune_quick.yaml").experiment.model_dump()


ROOT = Path(__file__).resolve().parents[2]


class NeedsGapConfig(TaskConfig):
    gap: int  # required: a sweep may be the only place that gives it


class NeedsGap(Recall):
    name = "needs_gap"
    Config = NeedsGapConfig


def test_a_required_option_can_come_from_the_sweep_alone(tmp_path: Path) -> None:
    plugins = load_plugins(extra_plugins=[("needs-gap", SimpleNamespace(
        register_tasks=hookimpl(lambda register: register(NeedsGap))))])
    specs = expand_grid(load_experiment(write(tmp_path, "  - {name: needs_gap, sweep: {gap: [1, 3]}}")), plugins)
    assert [s.task.config.gap for s in specs] == [1, 3]
    path = write(tmp_path, "  - {name: recall_first, options: {filler: x}, sweep: {gap: [1, 3]}}")
    with pytest.raises(ConfigError) as error:  # a bad listed option is blamed on options, not on the sweep
        expand_grid(load_experiment(path), load_plugins(extra_plugins=[("recall-plugin", PLUGIN)]))
    assert str(error.value).startswith(f"{path}:4: tasks[0].options.filler: "), str(error.value)
