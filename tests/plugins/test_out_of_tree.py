"""A cell written outside this repository, packaged and installed like a third party's.

``harness-mgu`` (fixtures/mgu.py: the minimal gated unit) is a five-line pyproject.toml
plus one module that subclasses :class:`harness.core.cells.RecurrentCell`. Installed with the
real pip into a private site directory, it must show up in ``harness plugins`` and pass
the conformance kit both ways a third party would run it: ``harness conformance mgu`` and
a ``CellContract`` subclass in the package's own test suite. ``harness-liar-rnn``, whose
``param_count`` lies, must fail the same kit.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

#: The third party's own test module, in its package's tests/ directory.
CONTRACT_TEST = '''\
"""The harness cell contract, run by the MGU package's own test suite."""

from importlib import metadata
from pathlib import Path

from harness.conformance import CellContract


class TestMinimalGatedUnit(CellContract):
    cell_name = "mgu"


def test_the_cell_under_test_is_the_installed_one():
    import harness_mgu

    installed = metadata.distribution("harness-mgu")
    assert Path(harness_mgu.__file__) == Path(installed.locate_file("harness_mgu.py"))
'''


#: Runs the harness CLI in a Python where ``import pytest`` fails, as after a plain ``pip install rnn-harness``.
WITHOUT_PYTEST = """\
import sys


class NoPytest:
    def find_spec(self, name, path=None, target=None):
        if name == "pytest" or name.startswith(("pytest.", "_pytest")):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, NoPytest())
from harness.cli.main import main

sys.argv = ["harness", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module")
def out_of_tree(tmp_path_factory: pytest.TempPathFactory, plugin_kit: types.SimpleNamespace) -> types.SimpleNamespace:
    """A clean site directory with only the two out-of-tree cells installed."""
    root = tmp_path_factory.mktemp("out_of_tree")
    Distribution = plugin_kit.Distribution
    mgu = Distribution("harness-mgu", "0.2.0", "mgu", "mgu.py", "harness_mgu")
    liar = Distribution("harness-liar-rnn", "0.0.9", "liar_rnn", "liar_rnn.py", "harness_liar_rnn")
    mgu_package = mgu.write(root / "src", {"tests/test_mgu_contract.py": CONTRACT_TEST})
    plugin_kit.pip_install(root / "site", [mgu_package, liar.write(root / "src")])
    return types.SimpleNamespace(site=root / "site", mgu_package=mgu_package, workdir=root)


@pytest.fixture(scope="module")
def runs(out_of_tree: types.SimpleNamespace, plugin_kit: types.SimpleNamespace) -> dict[str, Any]:
    """Every subprocess of this module, started together (each imports torch) and then awaited."""
    site, workdir = out_of_tree.site, out_of_tree.workdir
    started = {
        "plugins": plugin_kit.start_harness(site, "plugins", "--json", cwd=workdir),
        "conformance-mgu": plugin_kit.start_harness(site, "conformance", "mgu", cwd=workdir),
        "conformance-liar": plugin_kit.start_harness(site, "conformance", "liar_rnn", cwd=workdir),
        "no-pytest-mgu": plugin_kit.start([sys.executable, "-c", WITHOUT_PYTEST, "conformance", "mgu"],
                                          plugin_kit.subprocess_env(site), workdir),
        "no-pytest-liar": plugin_kit.start([sys.executable, "-c", WITHOUT_PYTEST, "conformance", "liar_rnn"],
                                           plugin_kit.subprocess_env(site), workdir),
        # The third party's own test suite, run from its package directory.
        "package-tests": plugin_kit.start(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_mgu_contract.py"],
            plugin_kit.subprocess_env(site),
            out_of_tree.mgu_package,
        ),
    }
    return {label: run.result() for label, run in started.items()}


def test_the_package_is_five_lines_of_metadata_and_one_module(out_of_tree: types.SimpleNamespace) -> None:
    pyproject = (out_of_tree.mgu_package / "pyproject.toml").read_text().splitlines()
    assert pyproject == [
        "[project]",
        'name = "harness-mgu"',
        'version = "0.2.0"',
        "[project.entry-points.harness]",
        'mgu = "harness_mgu"',
    ]
    installed = sorted(p.name for p in out_of_tree.site.iterdir() if p.name != "__pycache__")
    assert installed == [
        "harness_liar_rnn-0.0.9.dist-info",
        "harness_liar_rnn.py",
        "harness_mgu-0.2.0.dist-info",
        "harness_mgu.py",
    ]


def test_installed_cell_appears_in_harness_plugins(runs: dict[str, Any], builtin_plugins: frozenset[str]) -> None:
    plugins = runs["plugins"].plugins()
    assert plugins["mgu"] == {
        "name": "mgu",
        "module": "harness_mgu",
        "distribution": "harness-mgu",
        "version": "0.2.0",
        "source": "entry point",
        "hooks": ["register_cells"],
        "cells": ["mgu"],
        "tasks": [],
        "broken": False,
        "errors": [],
    }
    assert (plugins["liar_rnn"]["distribution"], plugins["liar_rnn"]["cells"]) == ("harness-liar-rnn", ["liar_rnn"])
    assert set(plugins) == {*builtin_plugins, "mgu", "liar_rnn"}
    assert not any(p["broken"] for p in plugins.values()), runs["plugins"].explain()


def test_harness_conformance_passes_the_out_of_tree_cell(runs: dict[str, Any]) -> None:
    run = runs["conformance-mgu"]
    assert run.returncode == 0, run.explain()
    assert " passed" in run.summary() and " failed" not in run.summary() and " error" not in run.summary()
    assert "[mgu" in run.stdout  # the contract was parametrized with the out-of-tree cell


def test_contract_subclass_in_the_package_test_suite_passes(runs: dict[str, Any]) -> None:
    run = runs["package-tests"]
    assert run.returncode == 0, run.explain()
    summary = run.summary()
    assert "passed" in summary and "failed" not in summary and "error" not in summary, run.explain()
    assert int(summary.split(" passed")[0].split()[-1]) >= 10  # the whole contract ran, not a stub


def test_a_cell_whose_param_count_lies_fails_conformance(runs: dict[str, Any]) -> None:
    run = runs["conformance-liar"]
    assert run.returncode == 1, run.explain()  # pytest's TESTS_FAILED, not a usage or plugin error
    failed = [line for line in run.stdout.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 1 and "::test_param_count" in failed[0] and "[liar_rnn]" in failed[0], run.explain()
    assert " 1 failed, " in run.summary()  # everything else about the cell is fine


def test_harness_conformance_needs_no_pytest(runs: dict[str, Any]) -> None:
    run = runs["no-pytest-mgu"]
    assert run.returncode == 0, run.explain()
    assert run.stdout.startswith("pytest is not installed: running the contract's checks directly")
    assert 'pip install "rnn-harness[conformance]"' in run.stdout.splitlines()[0]
    summary = run.summary()
    assert " passed" in summary and "failed" not in summary, run.explain()
    assert int(summary.split(" passed")[0].split()[-1]) >= 15  # the whole contract ran
    assert "::test_gradcheck[mgu-bi] PASSED" in run.stdout


def test_without_pytest_a_lying_cell_still_fails_exactly_its_promise(runs: dict[str, Any]) -> None:
    run = runs["no-pytest-liar"]
    assert run.returncode == 1, run.explain()
    failed = [line for line in run.stdout.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 1 and "::test_param_count" in failed[0] and "[liar_rnn]" in failed[0], run.explain()
    assert " 1 failed, " in run.summary()

