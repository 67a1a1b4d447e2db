"""``harness plugins`` as a user runs it, with real pip-installed third-party distributions.

One distribution per failure kind (see fixtures/README.md) sits next to a healthy one, all
installed into one site directory found through PYTHONPATH. Every failure is reported
against its own plugin while the built-ins and the healthy plugin load (reliability T8);
strict mode turns any of them into exit code 3; the allow-list and autoload switches keep
third-party code from being imported at all (T17).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

BUILTIN_CELLS = ("gru", "gru_simple", "lstm", "peephole_lstm", "vanilla")
JSON_KEYS = {"name", "module", "distribution", "version", "source", "hooks", "cells", "tasks", "broken", "errors"}

#: Plugin name → (distribution, version, a fragment of its error).
BROKEN = {
    "broken_import": (
        "harness-fx-broken-import", "0.1.0", 'Error importing plugin "broken_import": ModuleNotFoundError'
    ),
    "bad_argument": ("harness-fx-bad-argument", "0.2.0", "Argument(s) {'extra'} are declared in the hookimpl"),
    "raises_in_hook": ("harness-fx-raises-in-hook", "0.3.0", "raised in register_cells: RuntimeError: fixture failure"),
    "duplicate_cell": (
        "harness-fx-duplicate-cell", "0.4.0", "registered by both plugin 'lstm' and plugin 'duplicate_cell'"
    ),
    "misspelt_hook": ("harness-fx-misspelt-hook", "0.5.0", "Did you mean 'register_cells' instead of 'register_cell'?"),
    "not_a_cell": ("harness-fx-not-a-cell", "0.6.0", "does not subclass harness.core.cells.RecurrentCell"),
}
IMPOSTOR_ERROR = "a plugin named 'vanilla' is already loaded (from rnn-harness)"


@pytest.fixture(scope="module")
def sentinel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sentinels")


@pytest.fixture(scope="module")
def runs(third_party_site: Path, sentinel_dir: Path, plugin_kit: Any) -> dict[str, Any]:
    """Every ``harness`` invocation of this module, started together and then awaited.

    The sentinel plugin writes ``sentinel_dir/<label>`` whenever it is imported.
    """
    invocations: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
        "json": (("plugins", "--json"), {}),
        "table": (("plugins",), {}),
        "strict-flag": (("--strict-plugins", "plugins", "--json"), {}),
        "strict-environment": (("plugins",), {"HARNESS_STRICT_PLUGINS": "1"}),
        "allow-list": (("plugins", "--json"), {"HARNESS_PLUGINS": "lstm,gru", "HARNESS_STRICT_PLUGINS": "1"}),
        "no-autoload": (("plugins", "--json"), {"HARNESS_DISABLE_PLUGIN_AUTOLOAD": "1"}),
    }
    started = {
        label: plugin_kit.start_harness(
            third_party_site, *args, env={**env, "HARNESS_FX_SENTINEL": str(sentinel_dir / label)}
        )
        for label, (args, env) in invocations.items()
    }
    return {label: run.result() for label, run in started.items()}


@pytest.fixture(scope="module")
def default_run(runs: dict[str, Any]) -> Any:
    """``harness plugins --json`` with no switches."""
    return runs["json"]


def test_without_strict_broken_plugins_only_warn(default_run: Any) -> None:
    assert default_run.returncode == 0, default_run.explain()
    for name in [*BROKEN, "vanilla"]:
        assert f"Warning: plugin {name!r} is broken: " in default_run.stderr
    assert "gain_rnn" not in default_run.stderr


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_each_broken_plugin_is_listed_with_distribution_version_and_error(default_run: Any, name: str) -> None:
    distribution, version, fragment = BROKEN[name]
    entry = default_run.plugins()[name]
    assert (entry["distribution"], entry["version"], entry["source"]) == (distribution, version, "entry point")
    assert entry["broken"] is True and entry["cells"] == [] and entry["tasks"] == []
    assert len(entry["errors"]) == 1 and fragment in entry["errors"][0]


def test_every_other_plugin_still_loads(default_run: Any, builtin_plugins: frozenset[str]) -> None:
    entries = default_run.json()
    healthy = {e["name"] for e in entries if not e["broken"]}
    assert healthy == {*builtin_plugins, "gain_rnn", "sentinel"}
    broken = sorted((e["name"], e["distribution"]) for e in entries if e["broken"])
    assert broken == sorted([(n, d) for n, (d, _, _) in BROKEN.items()] + [("vanilla", "harness-fx-impostor")])
    cells = {cell: e["name"] for e in entries for cell in e["cells"]}
    assert {c: cells.get(c) for c in BUILTIN_CELLS} == {c: c for c in BUILTIN_CELLS}  # lstm stays built-in
    assert cells["gain_rnn"] == "gain_rnn" and "impostor_rnn" not in cells and "not_a_cell" not in cells


def test_json_describes_builtin_and_third_party_plugins(default_run: Any) -> None:
    entries = default_run.json()
    assert all(set(e) == JSON_KEYS for e in entries)
    assert default_run.plugins()["lstm"] == {
        "name": "lstm",
        "module": "harness.plugins.cells.lstm",
        "distribution": "rnn-harness",
        "version": metadata.version("rnn-harness"),
        "source": "built-in",
        "hooks": ["register_cells"],
        "cells": ["lstm"],
        "tasks": [],
        "broken": False,
        "errors": [],
    }
    assert default_run.plugins()["gain_rnn"] == {
        "name": "gain_rnn",
        "module": "harness_fx_gain_rnn",
        "distribution": "harness-fx-gain-rnn",
        "version": "1.4.2",
        "source": "entry point",
        "hooks": ["register_cells"],
        "cells": ["gain_rnn"],
        "tasks": [],
        "broken": False,
        "errors": [],
    }
    impostor = [e for e in entries if e["distribution"] == "harness-fx-impostor"]
    assert [(e["name"], e["version"], e["broken"]) for e in impostor] == [("vanilla", "6.6.6", True)]
    assert IMPOSTOR_ERROR in impostor[0]["errors"][0]


def test_autoload_imports_third_party_plugins(default_run: Any, sentinel_dir: Path) -> None:
    # The positive control for the sentinel checks below.
    assert default_run.plugins()["sentinel"]["broken"] is False
    assert (sentinel_dir / "json").read_text() == "imported\n"


def test_table_shows_broken_lines(runs: dict[str, Any], builtin_plugins: frozenset[str]) -> None:
    run = runs["table"]
    assert run.returncode == 0, run.explain()
    rows = {line.split()[0]: line for line in run.stdout.splitlines() if not line.startswith(" ")}
    assert set(rows) == {*builtin_plugins, *BROKEN, "gain_rnn", "sentinel"}  # the impostor row is also "vanilla"
    for name, (distribution, version, _) in BROKEN.items():
        assert rows[name].split()[1:4] == ["BROKEN", distribution, version]
    assert rows["gain_rnn"].split() == ["gain_rnn", "ok", "harness-fx-gain-rnn", "1.4.2", "cell:gain_rnn"]
    assert rows["lstm"].split() == ["lstm", "ok", "built-in", "cell:lstm"]
    impostor = [line for line in run.stdout.splitlines() if "harness-fx-impostor" in line]
    assert len(impostor) == 1 and impostor[0].split()[:2] == ["vanilla", "BROKEN"]
    for name, (_, _, fragment) in BROKEN.items():
        assert fragment in run.stdout
    # Error lines (even pluggy's multi-line ones) are indented under their plugin's row.
    assert len(rows) + 1 == len([line for line in run.stdout.splitlines() if not line.startswith("    ")])


@pytest.mark.parametrize("label", ["strict-flag", "strict-environment"])
def test_strict_makes_broken_plugins_fatal(runs: dict[str, Any], label: str) -> None:
    run = runs[label]
    assert run.returncode == 3, run.explain()
    assert run.stdout == ""
    assert "Error: 7 plugin(s) are broken and strict plugin loading is on:\n" in run.stderr
    for name, (_, _, fragment) in BROKEN.items():
        assert f"\n  {name}: " in run.stderr and fragment in run.stderr
    assert f"\n  vanilla: {IMPOSTOR_ERROR}" in run.stderr
    assert "gain_rnn" not in run.stderr and "Traceback" not in run.stderr


def test_allow_list_loads_only_those_and_imports_nothing_else(runs: dict[str, Any], sentinel_dir: Path) -> None:
    run = runs["allow-list"]
    assert run.returncode == 0, run.explain()  # strict is on, but none of the broken plugins was loaded
    loaded = [(e["name"], e["cells"], e["broken"]) for e in run.json()]
    assert loaded == [("gru", ["gru"], False), ("lstm", ["lstm"], False)]
    assert not (sentinel_dir / "allow-list").exists()


def test_disable_autoload_loads_builtins_and_never_imports_third_party(
    runs: dict[str, Any], sentinel_dir: Path, builtin_plugins: frozenset[str]
) -> None:
    run = runs["no-autoload"]
    assert run.returncode == 0, run.explain()
    entries = run.json()
    assert {e["name"] for e in entries} == builtin_plugins
    assert all(e["source"] == "built-in" and e["distribution"] == "rnn-harness" and not e["broken"] for e in entries)
    assert {c for e in entries for c in e["cells"]} >= set(BUILTIN_CELLS)
    assert "Warning" not in run.stderr
    assert not (sentinel_dir / "no-autoload").exists()
