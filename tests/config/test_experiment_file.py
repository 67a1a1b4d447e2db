"""Experiment files: every bad input is refused before anything is created, with file:line: key.path.

Most checks run in-process (``load_experiment`` + ``expand_grid``, and ``harness run``
through click's CliRunner); a few run the real ``harness`` executable in a subprocess.
Bad files are made from one valid file by replacing numbered lines, so each expected
line number can be read off the table below.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from forked_harness import HarnessProcess

from harness.core.errors import ConfigError
from harness.experiment import Experiment, TrainingSettings, load_experiment

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"

#: A valid experiment file, one entry per line (line 1 first).
VALID_LINES = (
    "# Run it: harness run exp.yaml",                                                      # 1
    "cells:",                                                                              # 2
    "  - vanilla",                                                                         # 3
    "  - gru_simple",                                                                      # 4
    "tasks:",                                                                              # 5
    "  - name: agreement",                                                                 # 6
    "    options: {train_size: 8, validation_size: 4, test_size: 4, max_distance: 3}",     # 7
    "seeds: [0, 1]",                                                                       # 8
    "model:",                                                                              # 9
    "  hidden_size: 8",                                                                    # 10
    "  embedding_size: 4",                                                                 # 11
    "training:",                                                                           # 12
    "  max_epochs: 2",                                                                     # 13
    "  batch_size: 16",                                                                    # 14
    "output_dir: out",                                                                     # 15
    "reports_dir: reports",                                                                # 16
)


def experiment_text(**replace: str) -> str:
    """The valid file with some lines replaced: ``experiment_text(l13="  max_epochs: 0")``."""
    lines = list(VALID_LINES)
    for name, text in replace.items():
        lines[int(name[1:]) - 1] = text
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Bad:
    """A bad experiment file and the start of the message it must get (file:line: key.path: ...)."""

    id: str
    replace: dict[str, str]
    prefix: str  # the message starts with "<file>" + this
    contains: tuple[str, ...] = ()
    needs_plugins: bool = False  # caught by expand_grid (plugin options), not load_experiment


def _valid_keys(model: Any) -> str:
    return "valid keys here: " + ", ".join(model.model_fields)


BAD_FILES = [
    Bad("yaml-syntax", {"l14": "   batch_size: 16"}, ":14: YAML syntax error: ",
        ("mapping values are not allowed here",)),
    Bad("unknown-top-level-key", {"l15": "epochs: 3"}, ":15: epochs: unknown key 'epochs'; ",
        (_valid_keys(Experiment),)),
    Bad("unknown-nested-key", {"l13": "  max_epoch: 2"}, ":13: training.max_epoch: unknown key 'max_epoch'; ",
        (_valid_keys(TrainingSettings), "max_epochs")),
    Bad("wrong-type", {"l14": "  batch_size: many"}, ":14: training.batch_size: ",
        ("valid integer", "(got 'many')")),
    Bad("wrong-type-in-list", {"l8": "seeds: [0, x]"}, ":8: seeds[1]: ", ("valid integer", "(got 'x')")),
    Bad("max-epochs-zero", {"l13": "  max_epochs: 0"}, ":13: training.max_epochs: ",
        ("greater than or equal to 1", "(got 0)")),
    Bad("empty-seed-list", {"l8": "seeds: []"}, ":8: seeds: ", ("at least 1 item",)),
    Bad("duplicate-seeds", {"l8": "seeds: [0, 1, 0]"}, ":8: seeds: ", ("seeds must be distinct",)),
    Bad("unknown-device", {"l15": "device: tpu"}, ":15: device: ", ("'auto', 'cpu' or 'gpu'",)),
    Bad("hidden-size-and-budget", {"l11": "  parameter_budget: 1000"}, ":9: model: ",
        ("give hidden_size or parameter_budget, not both",)),
    Bad("unknown-cell", {"l4": "  - lsmt"}, ":4: cells[1].name: unknown cell 'lsmt'. Did you mean 'lstm'? ",
        ("Installed cells: {cells}.",), needs_plugins=True),
    Bad("unknown-task", {"l6": "  - name: agreemnt"},
        ":6: tasks[0].name: unknown task 'agreemnt'. Did you mean 'agreement'? ",
        ("Installed tasks: {tasks}.",), needs_plugins=True),
    Bad("bad-cell-option", {"l4": "  - {name: gru, options: {reset: middle}}"}, ":4: cells[1].options.reset: ",
        ("'before' or 'after'", "(got 'middle')", "gru is from plugin 'gru'", "reset"), needs_plugins=True),
    Bad("bad-task-option", {"l7": "    options: {train_size: 8, validation_size: 4, test_size: 4, max_distance: 0}"},
        ":7: tasks[0].options.max_distance: ", ("greater than or equal to 1", "agreement is from plugin 'agreement'"),
        needs_plugins=True),
    Bad("unknown-task-option", {"l7": "    options: {train_size: 8, max_distanse: 3}"},
        ":7: tasks[0].options.max_distanse: unknown key 'max_distanse'", ("max_distance",), needs_plugins=True),
    Bad("bidirectional-language-model",
        {"l6": "  - name: brackets", "l7": "    options: {train_size: 8, validation_size: 4, test_size: 4}",
         "l11": "  bidirectional: true"},
        ":11: model.bidirectional: task 'brackets' predicts the next step (language_model)", ("set model.bidirectional: false",),
        needs_plugins=True),
]

#: Bad --set overrides on the valid file: (id, overrides, the message starts with ...).
BAD_OVERRIDES = [
    ("set-missing-list-index", ["cells.5.name=x"], "--set 'cells.5.name=x': cells[5] does not exist in "),
    ("set-below-a-scalar", ["training.max_epochs.x=1"], "--set 'training.max_epochs.x=1': cannot set "),
    ("set-malformed-value", ["training.max_epochs=[1"], "--set 'training.max_epochs=[1': the value is not valid YAML"),
    ("set-no-equals", ["training.max_epochs"], "--set 'training.max_epochs': expected KEY=VALUE"),
    ("set-unknown-key", ["training.max_epoch=1"],
     "{file}: --set training.max_epoch=1: training.max_epoch: unknown key"),
    ("set-invalid-value", ["training.max_epochs=0"], "{file}: --set training.max_epochs=0: training.max_epochs: "),
]


@pytest.fixture(autouse=True)
def _no_harness_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    """HARNESS_* switches of the caller's environment must not change what loads."""
    for name in [n for n in os.environ if n.startswith("HARNESS_")]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def plugins() -> Any:
    from harness.core.loading import load_plugins

    return load_plugins(strict=False, autoload=False)


def write(directory: Path, text: str, name: str = "exp.yaml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def load_and_expand(path: Path, plugins: Any, overrides: tuple[str, ...] | list[str] = ()) -> list[Any]:
    from harness.runs.grid import expand_grid

    return expand_grid(load_experiment(path, overrides), plugins)


def assert_nothing_created(directory: Path, *expected: str) -> None:
    """Only the experiment file (and what the test put there) is in the folder: no out/, reports/, runs/."""
    assert sorted(p.name for p in directory.iterdir()) == sorted(("exp.yaml", *expected))


# ---------------------------------------------------------------------------
# The real executable, a few cases, started first so they run while the rest does
# ---------------------------------------------------------------------------

SUBPROCESS_CASES = {
    "yaml-syntax": ((), "exp.yaml:14: YAML syntax error: mapping values are not allowed here"),
    "unknown-cell": ((), "exp.yaml:4: cells[1].name: unknown cell 'lsmt'. Did you mean 'lstm'? Installed cells: "),
}


@pytest.fixture(scope="module", autouse=True)
def cli_subprocesses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Path, subprocess.Popen]]]:
    """``harness run exp.yaml`` for each SUBPROCESS_CASES entry, each in its own folder, all started now."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    bad = {b.id: b for b in BAD_FILES}
    started = {}
    for case, (extra, _) in SUBPROCESS_CASES.items():
        directory = tmp_path_factory.mktemp(f"cli-{case}")
        write(directory, experiment_text(**bad[case].replace) if case in bad else experiment_text())
        started[case] = (directory, HarnessProcess(["run", "exp.yaml", *extra], cwd=directory, env=env,
                                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                     stdin=subprocess.DEVNULL))
    yield started
    for _, process in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------
# In-process: load_experiment / expand_grid
# ---------------------------------------------------------------------------


def test_the_valid_file_is_valid(tmp_path: Path, plugins: Any) -> None:
    specs = load_and_expand(write(tmp_path, experiment_text()), plugins)
    assert len(specs) == 2 * 1 * 2
    assert_nothing_created(tmp_path)


@pytest.mark.parametrize("bad", BAD_FILES, ids=lambda b: b.id)
def test_a_bad_file_raises_config_error_naming_file_line_and_key(tmp_path: Path, plugins: Any, bad: Bad,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the file's relative output_dir/reports_dir would land here
    path = write(tmp_path, experiment_text(**bad.replace))
    if not bad.needs_plugins:
        with pytest.raises(ConfigError) as schema_error:
            load_experiment(path)
        assert str(schema_error.value).startswith(f"{path}{bad.prefix}"), str(schema_error.value)
    with pytest.raises(ConfigError) as error:
        load_and_expand(path, plugins)
    message = str(error.value)
    assert message.startswith(f"{path}{bad.prefix}"), message
    installed = {"cells": ", ".join(sorted(plugins.cells.names())), "tasks": ", ".join(sorted(plugins.tasks.names()))}
    for fragment in bad.contains:
        assert fragment.format(**installed) in message, (fragment, message)
    assert_nothing_created(tmp_path)


def test_unknown_cell_lists_exactly_the_installed_cells(tmp_path: Path, plugins: Any) -> None:
    path = write(tmp_path, experiment_text(l4="  - lsmt"))
    with pytest.raises(ConfigError) as error:
        load_and_expand(path, plugins)
    assert {"vanilla", "gru_simple", "gru", "lstm", "peephole_lstm"} <= set(plugins.cells.names())
    assert str(error.value).endswith(f"Installed cells: {', '.join(sorted(plugins.cells.names()))}.")


def test_a_missing_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: no such experiment file"):
        load_experiment(tmp_path / "missing.yaml")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("case", "overrides", "prefix"), BAD_OVERRIDES, ids=[c[0] for c in BAD_OVERRIDES])
def test_a_bad_set_raises_config_error(tmp_path: Path, case: str, overrides: list[str], prefix: str) -> None:
    path = write(tmp_path, experiment_text())
    with pytest.raises(ConfigError) as error:
        load_experiment(path, overrides)
    assert str(error.value).startswith(prefix.format(file=path)), str(error.value)
    assert_nothing_created(tmp_path)


def test_set_overrides_values_of_the_file(tmp_path: Path, plugins: Any) -> None:
    path = write(tmp_path, experiment_text())
    loaded = load_experiment(path, ["training.max_epochs=1", "seeds=[3]", "cells.1=lstm",
                                    "tasks.0.options.max_distance=5"])
    experiment = loaded.experiment
    assert experiment.training.max_epochs == 1
    assert experiment.training.batch_size == 16  # untouched values stay
    assert experiment.seeds == [3]
    assert [c.name for c in experiment.cells] == ["vanilla", "lstm"]
    assert experiment.tasks[0].options["max_distance"] == 5
    # An override is part of what a run is, so it changes the run keys.
    plain = {s.key for s in load_and_expand(path, plugins)}
    overridden = {s.key for s in load_and_expand(path, plugins, ["training.max_epochs=1"])}
    assert len(plain) == len(overridden) == 4 and not plain & overridden
    # A line that is still the file's is still reported with its line.
    with pytest.raises(ConfigError) as error:
        load_experiment(write(tmp_path, experiment_text(l14="  batch_size: 0")), ["training.max_epochs=1"])
    assert str(error.value).startswith(f"{path}:14: training.batch_size: ")


# ---------------------------------------------------------------------------
# harness run, in-process through click: exit code 2, the message, nothing created
# ---------------------------------------------------------------------------


def invoke_run(directory: Path, *args: str) -> Any:
    from click.testing import CliRunner

    from harness.cli.main import cli

    return CliRunner().invoke(cli, ["run", *args], catch_exceptions=False)


@pytest.mark.parametrize("bad", BAD_FILES, ids=lambda b: b.id)
def test_harness_run_exits_2_on_a_bad_file_and_creates_nothing(tmp_path: Path, bad: Bad,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, experiment_text(**bad.replace))
    result = invoke_run(tmp_path, "exp.yaml")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: exp.yaml{bad.prefix}"), result.stderr
    assert_nothing_created(tmp_path)


@pytest.mark.parametrize(("case", "overrides", "prefix"), BAD_OVERRIDES, ids=[c[0] for c in BAD_OVERRIDES])
def test_harness_run_exits_2_on_a_bad_set(tmp_path: Path, case: str, overrides: list[str], prefix: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, experiment_text())
    args = [a for o in overrides for a in ("--set", o)]
    result = invoke_run(tmp_path, "exp.yaml", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: " + prefix.format(file="exp.yaml")), result.stderr
    assert_nothing_created(tmp_path)


def test_harness_run_exits_2_on_a_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke_run(tmp_path, "missing.yaml")
    assert result.exit_code == 2, result.output
    assert "missing.yaml: no such experiment file" in result.stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------
# The shipped experiment files
# ---------------------------------------------------------------------------


def test_quickstart_expands_its_sweeps_to_125_runs_with_matched_parameter_counts(plugins: Any) -> None:
    loaded = load_experiment(EXPERIMENTS / "quickstart.yaml")
    budget = loaded.experiment.model.parameter_budget
    assert budget is not None and loaded.name == "quickstart"
    assert loaded.experiment.diagnostics.gradient_flow
    specs = load_and_expand(EXPERIMENTS / "quickstart.yaml", plugins)
    cells = ["vanilla", "gru_simple", "gru", "lstm", "peephole_lstm"]
    tasks = ["agreement[max_distance=8]", "agreement[max_distance=24]", "agreement[max_distance=48]",
             "adding[length=10]", "adding[length=30]"]
    assert len(specs) == 125
    assert len({s.key for s in specs}) == 125
    assert sorted((s.cell.name, s.task.label, s.seed) for s in specs) == sorted(
        (c, t, s) for c in cells for t in tasks for s in range(5))
    for spec in specs:
        assert abs(spec.stack_param_count - budget) <= 0.05 * budget, (spec.run_name, spec.stack_param_count)
    # Matching by size means a different width per cell: the simplest cell is the widest.
    for task in tasks:
        hidden = {s.cell.name: s.hidden_size for s in specs if s.task.label == task}
        assert max(hidden, key=hidden.get) == "vanilla", hidden
        assert hidden["vanilla"] > hidden["gru_simple"] > hidden["gru"] > hidden["lstm"], hidden


def test_every_experiment_file_starts_with_a_comment_saying_how_to_run_it() -> None:
    files = sorted(p for p in EXPERIMENTS.iterdir() if p.is_file())
    assert files, "experiments/ is empty"
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines and lines[0].startswith("#"), f"{path.name} does not begin with a comment"
        header = []
        for line in lines:
            if not line.startswith("#"):
                break
            header.append(line)
        # A file with a tuning block is meant for `harness tune`.
        verb = "tune" if any(line.startswith("tuning:") for line in lines) else "run"
        command = f"harness {verb} experiments/{path.name}"
        assert any(re.search(rf"(^|\s){re.escape(command)}(\s|$)", line) for line in header), (
            f"the opening comment of {path.name} does not contain `{command}`")


# ---------------------------------------------------------------------------
# The real executable (started at the top of the module)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(SUBPROCESS_CASES))
def test_the_harness_executable_exits_2_and_creates_nothing(cli_subprocesses: dict[str, Any], case: str) -> None:
    directory, process = cli_subprocesses[case]
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 2, (stdout, stderr)
    assert stderr.startswith("Error: " + SUBPROCESS_CASES[case][1]), stderr
    assert "Traceback" not in stderr
    assert_nothing_created(directory)
