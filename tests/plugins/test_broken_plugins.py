"""A broken plugin is all or nothing, says where it broke, and explains a missing name.

* a hook that raises after registering some items leaves none of them registered;
* a module with a syntax error is reported with its file and line, not importlib's frames;
* ``unknown cell 'mgu'`` says that a plugin of that name is installed but broken;
* a task whose ``load()`` raises ValueError for a bad option ends in one line (exit code 2).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from pathlib import Path

import pytest
from torch import Tensor

from harness import hookimpl
from harness.core.cells import RecurrentCell, State
from harness.core.errors import BadInputError, UnknownNameError
from harness.core.loading import load_plugins
from harness.core.tasks import Task, TaskData, TaskOptionError


class HalfCell(RecurrentCell):
    name = "half_rnn"

    def step(self, projected: Tensor, state: State) -> State:
        return (projected + state[0],)


class HalfTask(Task):
    name = "half_task"
    family = "classification"


def half_registered_plugin() -> types.ModuleType:
    """Registers a cell and a task, then its task hook raises."""
    module = types.ModuleType("harness_half_plugin")

    def register_cells(register: Callable[[type], None]) -> None:
        register(HalfCell)

    def register_tasks(register: Callable[[type], None]) -> None:
        register(HalfTask)
        raise RuntimeError("half way through")

    module.register_cells = hookimpl(register_cells)  # type: ignore[attr-defined]
    module.register_tasks = hookimpl(register_tasks)  # type: ignore[attr-defined]
    return module


def test_a_hook_that_raises_after_registering_keeps_none_of_its_items() -> None:
    loaded = load_plugins(allow=["lstm", "half"], extra_plugins=[("half", half_registered_plugin())])
    (half,) = loaded.broken
    assert half.name == "half" and "raised in register_tasks: RuntimeError: half way through" in half.errors[0]
    assert (half.cells, half.tasks) == ([], [])
    assert "half_rnn" not in loaded.cells and "half_task" not in loaded.tasks
    assert loaded.cells.names() == ["lstm"]  # the healthy plugin is untouched
    with pytest.raises(UnknownNameError) as raised:
        loaded.tasks.get("half_task")
    message = str(raised.value)
    assert message.startswith("unknown task 'half_task'. plugin 'half' is installed but broken (")
    assert "RuntimeError: half way through" in message and "see `harness plugins`" in message
    assert raised.value.exit_code == 2 and "\n" not in message


@pytest.fixture(scope="module")
def syntax_error_site(tmp_path_factory: pytest.TempPathFactory, plugin_kit: types.SimpleNamespace) -> Path:
    """``harness-fx-syntax-error`` installed with pip; its entry point is named ``mgu``."""
    root = tmp_path_factory.mktemp("syntax_error")
    distribution = plugin_kit.Distribution("harness-fx-syntax-error", "0.7.0", "mgu", "syntax_error.py",
                                           "harness_fx_syntax_error")
    plugin_kit.pip_install(root / "site", [distribution.write(root / "src")])
    return root / "site"


def test_a_syntax_error_names_the_plugin_file_and_line(syntax_error_site: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(syntax_error_site))
    loaded = load_plugins(allow=["lstm", "mgu"])
    (broken,) = loaded.broken
    (error,) = broken.errors
    path = syntax_error_site / "harness_fx_syntax_error.py"
    assert error.startswith('Error importing plugin "mgu": SyntaxError: ')
    assert error.endswith(f"({path}:8)") and "frozen" not in error
    with pytest.raises(UnknownNameError, match=r"^unknown cell 'mgu'\. plugin 'mgu' is installed but broken "):
        loaded.cells.get("mgu")


def test_harness_run_with_the_broken_cell_says_why_in_one_line(
    syntax_error_site: Path, tmp_path: Path, run_harness: Callable[..., object]
) -> None:
    experiment = tmp_path / "uses_mgu.yaml"
    experiment.write_text("cells: [mgu]\ntasks: [adding]\nseeds: [0]\n")
    run = run_harness(syntax_error_site, "run", str(experiment), cwd=tmp_path)
    assert run.returncode == 2, run.explain()
    errors = [line for line in run.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in run.stderr, run.explain()
    assert f"{experiment}:1: cells[0].name: unknown cell 'mgu'. plugin 'mgu' is installed but broken" in errors[0]
    assert "harness_fx_syntax_error.py:8)" in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["uses_mgu.yaml"]  # nothing created


class PickyTask(Task):
    """A task whose load() refuses an option the way the task-writing guide says to."""

    name = "picky"
    family = "classification"

    def load(self) -> TaskData:
        raise ValueError("vocabulary file 'missing.txt' does not exist;\n  set vocabulary_file to an existing file")


class PickierTask(PickyTask):
    name = "pickier"


def test_a_value_error_from_load_is_bad_input_in_one_line() -> None:
    with pytest.raises(TaskOptionError) as raised:
        PickyTask().load()
    assert isinstance(raised.value, BadInputError) and raised.value.exit_code == 2
    assert str(raised.value) == ("task 'picky': vocabulary file 'missing.txt' does not exist; "
                                 "set vocabulary_file to an existing file")
    assert isinstance(raised.value.__cause__, ValueError)
    with pytest.raises(TaskOptionError, match="^task 'pickier': "):  # inherited load: wrapped once, named right
        PickierTask().load()


def test_harness_run_stops_on_a_value_error_from_load_with_exit_2_and_creates_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import harness.cli.common
    import harness.cli.main

    picky_plugin = types.ModuleType("harness_fx_picky")
    picky_plugin.register_tasks = hookimpl(lambda register: register(PickyTask))  # type: ignore[attr-defined]
    monkeypatch.setattr(harness.cli.common, "load_plugins",
                        lambda **options: load_plugins(extra_plugins=[("picky", picky_plugin)], **options))
    monkeypatch.chdir(tmp_path)
    Path("picky.yaml").write_text("cells: [gru]\ntasks: [picky]\nseeds: [0]\ndevice: cpu\n", encoding="utf-8")
    result = CliRunner().invoke(harness.cli.main.cli, ["run", "picky.yaml"])
    assert result.exit_code == 2, result.output
    assert result.output == ("Error: task 'picky': vocabulary file 'missing.txt' does not exist; "
                             "set vocabulary_file to an existing file\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["picky.yaml"]
