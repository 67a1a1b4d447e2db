"""In-process plugin loading: every failure stays inside its own plugin, the registries
refuse duplicates naming both plugins, and unknown names list what is installed.

The entry-point tests put the pip-installed fixture distributions (see conftest.py) on
``sys.path``; the others hand plugin objects to ``load_plugins(extra_plugins=...)``.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path

import pytest
from torch import Tensor

from harness import hookimpl
from harness.core.cells import RecurrentCell, State
from harness.core.errors import DuplicateNameError, PluginError, UnknownNameError
from harness.core.loading import LoadedPlugins, PluginInfo, load_plugins
from harness.core.tasks import Task
from harness.plugins.cells.lstm import LSTMCell

BUILTIN_CELLS = ("gru", "gru_simple", "lstm", "peephole_lstm", "vanilla")

#: Plugin name → fragments its error must contain (fixture modules in fixtures/).
FAILURES = {
    "broken_import": (
        'Error importing plugin "broken_import": ModuleNotFoundError',
        "harness_fx_module_that_does_not_exist",
    ),
    "bad_argument": ('Invalid plugin "bad_argument"', "{'extra'}", "can not be found in the hookspec"),
    "raises_in_hook": (
        "plugin 'raises_in_hook' raised in register_cells: RuntimeError: fixture failure",
        "harness_fx_raises_in_hook.py:",  # where it raised
    ),
    "duplicate_cell": ("cell 'lstm' is registered by both plugin 'lstm' and plugin 'duplicate_cell'",),
    "misspelt_hook": (
        'Invalid plugin "misspelt_hook": unknown hook \'register_cell\'',
        "Did you mean 'register_cells' instead of 'register_cell'?",
    ),
    "not_a_cell": (
        "plugin 'not_a_cell' registered NotACell as a cell",
        "does not subclass harness.core.cells.RecurrentCell",
    ),
}


def by_name(loaded: LoadedPlugins) -> dict[str, PluginInfo]:
    """Plugin reports keyed by name; the first of two same-named plugins wins, as in the host."""
    keyed: dict[str, PluginInfo] = {}
    for info in loaded.plugins:
        keyed.setdefault(info.name, info)
    return keyed


def plugin(**hooks: Callable[..., None]) -> types.ModuleType:
    """A plugin module whose hook implementations are the given functions."""
    module = types.ModuleType("harness_test_plugin")
    for hook_name, function in hooks.items():
        setattr(module, hook_name, hookimpl(function))
    return module


def registering(*cells: object) -> types.ModuleType:
    """A plugin whose register_cells registers each of ``cells``."""

    def register_cells(register: Callable[[object], None]) -> None:
        for cell in cells:
            register(cell)

    return plugin(register_cells=register_cells)


class MiniCell(RecurrentCell):
    name = "mini_rnn"

    def step(self, projected: Tensor, state: State) -> State:
        return (projected + state[0],)


class ImpostorLSTM(MiniCell):
    name = "lstm"


class MiniTask(Task):
    name = "mini_task"
    family = "classification"


# -- each failure kind, from a real installed distribution -------------------------------------


@pytest.mark.parametrize("broken", sorted(FAILURES))
def test_each_failure_is_isolated_to_its_plugin(
    broken: str, third_party_on_path: Path, builtin_plugins: frozenset[str]
) -> None:
    loaded = load_plugins(allow=[*builtin_plugins, "gain_rnn", broken])
    plugins = by_name(loaded)

    # The impostor distribution's entry point is also called "vanilla", so the allow-list lets it in.
    assert [(p.name, p.distribution) for p in loaded.broken] == [
        (broken, f"harness-fx-{broken.replace('_', '-')}"),
        ("vanilla", "harness-fx-impostor"),
    ]
    errors = "\n".join(plugins[broken].errors)
    for fragment in FAILURES[broken]:
        assert fragment in errors
    assert plugins[broken].cells == [] and plugins[broken].version is not None
    assert broken not in loaded.versions()
    # Everything else loaded: every built-in and the healthy third-party cell.
    assert set(plugins) == {*builtin_plugins, "gain_rnn", broken}
    assert set(BUILTIN_CELLS) | {"gain_rnn"} <= set(loaded.cells.names())
    assert loaded.versions()["gain_rnn"] == "1.4.2"
    assert loaded.cells.get("lstm") is LSTMCell and loaded.plugin_of_cell("lstm").name == "lstm"


@pytest.mark.parametrize("broken", sorted(FAILURES))
@pytest.mark.parametrize("switch", ["argument", "environment"])
def test_strict_makes_each_failure_fatal(
    broken: str, switch: str, third_party_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    strict = True if switch == "argument" else None
    if switch == "environment":
        monkeypatch.setenv("HARNESS_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError) as raised:
        load_plugins(strict=strict, allow=["lstm", "gain_rnn", broken])
    message = str(raised.value)
    assert raised.value.exit_code == 3
    assert message.startswith("1 plugin(s) are broken and strict plugin loading is on:")
    assert f"\n  {broken}: " in message and FAILURES[broken][0] in message
    assert "gain_rnn" not in message and "  lstm:" not in message


def test_strict_passes_when_nothing_is_broken(third_party_on_path: Path) -> None:
    loaded = load_plugins(strict=True, allow=["lstm", "gain_rnn"])
    assert [p.name for p in loaded.plugins] == ["lstm", "gain_rnn"]


def test_third_party_plugin_is_stamped_with_its_distribution(third_party_on_path: Path) -> None:
    loaded = load_plugins(allow=["gain_rnn"])
    (info,) = loaded.plugins
    assert (info.distribution, info.version, info.builtin) == ("harness-fx-gain-rnn", "1.4.2", False)
    assert (info.module, info.hooks, info.cells) == ("harness_fx_gain_rnn", ["register_cells"], ["gain_rnn"])
    assert info.errors == []
    assert loaded.plugin_of_cell("gain_rnn") is info


def test_plugin_named_like_a_builtin_is_refused_before_import(third_party_on_path: Path) -> None:
    loaded = load_plugins(allow=["vanilla"])
    builtin, impostor = loaded.plugins
    assert builtin.builtin and not builtin.broken and builtin.cells == ["vanilla"]
    assert (impostor.distribution, impostor.version) == ("harness-fx-impostor", "6.6.6")
    assert impostor.errors == [
        "a plugin named 'vanilla' is already loaded (from rnn-harness); plugin names must be unique "
        "across installed distributions."
    ]
    assert "harness_fx_impostor" not in sys.modules and "impostor_rnn" not in loaded.cells


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_autoload_off_loads_builtins_only(
    how: str, third_party_on_path: Path, builtin_plugins: frozenset[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if how == "environment":
        monkeypatch.setenv("HARNESS_DISABLE_PLUGIN_AUTOLOAD", "1")
    loaded = load_plugins(autoload=False if how == "argument" else None)
    assert {p.name for p in loaded.plugins} == builtin_plugins
    assert all(p.builtin and not p.broken for p in loaded.plugins)
    assert not [m for m in sys.modules if m.startswith("harness_fx_")], "a third-party module was imported"


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_allow_list_loads_only_the_named_plugins(
    how: str, third_party_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if how == "environment":
        monkeypatch.setenv("HARNESS_PLUGINS", " lstm, gru ,gain_rnn")
    loaded = load_plugins(allow=["lstm", "gru", "gain_rnn"] if how == "argument" else None)
    assert sorted(p.name for p in loaded.plugins) == ["gain_rnn", "gru", "lstm"]
    assert sorted(loaded.cells.names()) == ["gain_rnn", "gru", "lstm"]
    assert sorted(m for m in sys.modules if m.startswith("harness_fx_")) == ["harness_fx_gain_rnn"]


def test_loading_without_third_party_plugins_is_healthy(builtin_plugins: frozenset[str]) -> None:
    loaded = load_plugins(strict=True)
    assert {p.name for p in loaded.plugins} >= builtin_plugins
    assert set(BUILTIN_CELLS) <= set(loaded.cells.names())
    for name in BUILTIN_CELLS:
        info = loaded.plugin_of_cell(name)
        assert (info.name, info.builtin, info.distribution) == (name, True, "rnn-harness")


# -- the hooks and the registries, through extra_plugins ---------------------------------------


def test_hook_register_cells() -> None:
    loaded = load_plugins(allow=["mini"], extra_plugins=[("mini", registering(MiniCell))])
    (info,) = loaded.plugins
    assert loaded.cells.get("mini_rnn") is MiniCell
    assert loaded.plugin_of_cell("mini_rnn") is info
    assert (info.hooks, info.cells, info.tasks, info.broken) == (["register_cells"], ["mini_rnn"], [], False)


def test_hook_register_tasks() -> None:
    tasks = plugin(register_tasks=lambda register: register(MiniTask))
    loaded = load_plugins(allow=["tasks"], extra_plugins=[("tasks", tasks)])
    (info,) = loaded.plugins
    assert loaded.tasks.get("mini_task") is MiniTask
    assert loaded.plugin_of_task("mini_task") is info
    assert (info.hooks, info.cells, info.tasks, info.broken) == (["register_tasks"], [], ["mini_task"], False)


def test_duplicate_task_names_both_plugins() -> None:
    first = plugin(register_tasks=lambda register: register(MiniTask))
    second = plugin(register_tasks=lambda register: register(type("Again", (MiniTask,), {})))
    loaded = load_plugins(allow=["first", "second"], extra_plugins=[("first", first), ("second", second)])
    assert loaded.tasks.get("mini_task") is MiniTask
    assert [p.name for p in loaded.broken] == ["second"]
    assert "task 'mini_task' is registered by both plugin 'first' and plugin 'second'" in loaded.broken[0].errors[0]


def test_duplicate_cell_names_both_plugins_and_the_builtin_keeps_it() -> None:
    loaded = load_plugins(extra_plugins=[("third", registering(ImpostorLSTM, MiniCell))])
    third = by_name(loaded)["third"]
    assert third.errors == [
        "cell 'lstm' is registered by both plugin 'lstm' and plugin 'third'; the one from 'lstm' is kept. "
        "Rename one of them, or leave one plugin out with HARNESS_PLUGINS."
    ]
    assert loaded.cells.get("lstm") is LSTMCell and loaded.plugin_of_cell("lstm").name == "lstm"
    # A broken plugin keeps none of its entries: its accepted cell must not train either.
    assert third.cells == [] and "mini_rnn" not in loaded.cells
    with pytest.raises(UnknownNameError, match="plugin 'third' is installed but broken"):
        loaded.cells.get("mini_rnn")


def test_registry_add_raises_duplicate_name_error_naming_both_plugins() -> None:
    loaded = load_plugins()
    with pytest.raises(DuplicateNameError) as raised:
        loaded.cells.add(ImpostorLSTM, plugin="third")
    error = raised.value
    assert (error.kind, error.name, error.first_plugin, error.second_plugin) == ("cell", "lstm", "lstm", "third")
    assert "plugin 'lstm'" in str(error) and "plugin 'third'" in str(error)
    assert isinstance(error, PluginError) and error.exit_code == 3
    assert loaded.cells.get("lstm") is LSTMCell


def test_strict_duplicate_is_fatal_and_names_both_plugins() -> None:
    both = r"\n  third: cell 'lstm' is registered by both plugin 'lstm' and plugin 'third'"
    with pytest.raises(PluginError, match=both):
        load_plugins(strict=True, extra_plugins=[("third", registering(ImpostorLSTM))])


def test_unknown_cell_lists_installed_cells_with_did_you_mean() -> None:
    cells = load_plugins().cells
    with pytest.raises(UnknownNameError) as raised:
        cells.get("lsmt")
    installed = sorted(cells.names())
    assert set(BUILTIN_CELLS) <= set(installed)
    assert str(raised.value) == f"unknown cell 'lsmt'. Did you mean 'lstm'? Installed cells: {', '.join(installed)}."
    assert raised.value.exit_code == 2 and raised.value.known == installed


def test_unknown_name_without_a_close_match_still_lists_installed() -> None:
    loaded = load_plugins(allow=["lstm", "gru"])
    with pytest.raises(UnknownNameError, match=r"^unknown cell 'transformer'\. Installed cells: gru, lstm\.$"):
        loaded.cells.get("transformer")
    with pytest.raises(UnknownNameError, match=r"^unknown task 'sentiment'\. Installed tasks: \(none\)\.$"):
        loaded.tasks.get("sentiment")


class NoName(MiniCell):
    name = None  # type: ignore[assignment]


class BadName(MiniCell):
    name = "Mini-RNN"


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        pytest.param(MiniCell(2, 3), "register the class itself", id="instance"),
        pytest.param(MiniTask, "does not subclass harness.core.cells.RecurrentCell", id="task-as-cell"),
        pytest.param(NoName, "with name None", id="no-name"),
        pytest.param(BadName, "with name 'Mini-RNN'", id="bad-name"),
    ],
)
def test_registry_refuses_invalid_entries(entry: object, fragment: str) -> None:
    plugins = [("bad", registering(entry)), ("good", registering(MiniCell))]
    loaded = load_plugins(allow=["bad", "good"], extra_plugins=plugins)
    bad, good = loaded.plugins
    assert bad.broken and fragment in bad.errors[0] and bad.cells == []
    assert not good.broken and loaded.cells.get("mini_rnn") is MiniCell


def test_same_module_under_two_plugin_names_breaks_only_the_second() -> None:
    # Two entry points naming one module: pluggy raises ValueError, which must not abort loading.
    shared = registering(MiniCell)
    after = plugin(register_tasks=lambda register: register(MiniTask))
    loaded = load_plugins(
        allow=["first", "alias", "after"],
        extra_plugins=[("first", shared), ("alias", shared), ("after", after)],
    )
    first, alias, last = loaded.plugins
    assert not first.broken and first.cells == ["mini_rnn"]
    assert alias.errors == [
        'Invalid plugin "alias": harness_test_plugin is already loaded as plugin \'first\'; '
        "give each entry point its own module or object."
    ]
    assert not last.broken and last.tasks == ["mini_task"]


def test_extra_plugin_named_like_a_builtin_is_refused() -> None:
    loaded = load_plugins(allow=["lstm"], extra_plugins=[("lstm", registering(MiniCell))])
    assert [p.broken for p in loaded.plugins] == [False, True]
    assert "a plugin named 'lstm' is already loaded (from rnn-harness)" in loaded.plugins[1].errors[0]
    assert "mini_rnn" not in loaded.cells


def test_trace_switch_prints_every_hook_call(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    load_plugins(allow=["lstm", "mini"], extra_plugins=[("mini", registering(MiniCell))])
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("HARNESS_TRACE_PLUGINS", "1")
    load_plugins(allow=["lstm", "mini"], extra_plugins=[("mini", registering(MiniCell))])
    trace = capsys.readouterr().err
    assert "register_cells plugin=lstm [hook]" in trace and "register_cells plugin=mini [hook]" in trace
