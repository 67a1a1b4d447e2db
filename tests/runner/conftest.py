"""Fixtures for end-to-end runner tests: a tiny experiment file and ``harness`` as a subprocess.

The tiny grid is 2 cells × 2 tasks × 2 seeds: ``vanilla`` (the fused kernel on the CPU)
and ``gru_simple`` (no torch.nn equivalent: its fused kernel) on ``agreement``
(classification, with distance buckets) and ``copy`` (tagging), with sizes small
enough that the whole grid trains in a few seconds on one CPU core. Everything the
runner writes (output folder, reports folder) stays inside temporary folders.

Most of the cost of a ``harness run`` is importing torch, Lightning and MLflow, so
each test module describes its whole subprocess scenario as one function,
``build_scenario(directory, kit)``. The scenarios of every selected module start
together, in threads, when the first of them is needed (:func:`scenarios`); each
module's tests then only look at what its scenario left behind.
"""

from __future__ import annotations

import math
import sqlite3
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest
from harness_processes import (TIMEOUT, Finished, Started, harness_command, harness_env,  # noqa: F401 - kit.*
                               mlflow_client, mlflow_runs, run_all, run_harness, start_harness, tag,
                               write_experiment)


#: The tiny grid. Task-major order: agreement × {vanilla, gru_simple} × {0, 1}, then copy.
TINY: dict[str, Any] = {
    "cells": ["vanilla", "gru_simple"],
    "tasks": [
        {"name": "agreement",
         "options": {"train_size": 64, "validation_size": 32, "test_size": 32, "max_distance": 6}},
        {"name": "copy",
         "options": {"train_size": 64, "validation_size": 32, "test_size": 32, "delay": 3, "copy_length": 3}},
    ],
    "seeds": [0, 1],
    "model": {"hidden_size": 8, "embedding_size": 4},
    "training": {"max_epochs": 2, "batch_size": 16},
    "device": "cpu",
    "output_dir": "out",
    "reports_dir": "reports",
}


def tiny_config(**changes: Any) -> dict[str, Any]:
    """A copy of :data:`TINY` with top-level keys replaced."""
    data = deepcopy(TINY)
    data.update(changes)
    return data


@pytest.fixture
def tiny_experiment(tmp_path: Path) -> Path:
    """``tmp_path/tiny.yaml``: the 2 × 2 × 2 grid, output in ``tmp_path/out``, reports in ``tmp_path/reports``."""
    return write_experiment(tmp_path, "tiny", tiny_config())


# ---------------------------------------------------------------------------
# Looking at what a run left behind (running harness: harness_processes)
# ---------------------------------------------------------------------------


def ledger_rows(output_dir: Path) -> dict[str, dict[str, Any]]:
    """The ledger's ``runs`` table, by run key."""
    with sqlite3.connect(output_dir / "ledger.db") as connection:
        connection.row_factory = sqlite3.Row
        return {row["key"]: dict(row) for row in connection.execute("SELECT * FROM runs ORDER BY position")}


def read_results(report_dir: Path) -> list[dict[str, str]]:
    import csv

    with open(report_dir / "results.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def is_finite_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


@pytest.fixture(scope="session")
def kit() -> Any:
    """This module, so tests reach its helpers (``kit.run_harness``) without importing a conftest."""
    return sys.modules[__name__]


# ---------------------------------------------------------------------------
# Scenarios: each module's subprocess story, all started at once
# ---------------------------------------------------------------------------

_SCENARIO_BUILDERS: dict[str, Callable[[Path, Any], Any]] = {}


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Remember the ``build_scenario`` of every selected test module (and only those).

    The scenarios all start with the first scenario module's first test. Tests selected
    after that module which need no scenario (e.g. ``tests/config`` in ``pytest
    tests/runner tests/config``) are moved up to run right after it, while the other
    modules' scenarios are still running in the background.
    """
    def build_of(item: pytest.Item) -> Any:
        build = getattr(getattr(item, "module", None), "build_scenario", None)
        return build if callable(build) else None

    for item in items:
        if build_of(item) is not None:
            _SCENARIO_BUILDERS.setdefault(item.module.__name__, build_of(item))
    first = next((i for i, item in enumerate(items) if build_of(item) is not None), None)
    if first is None:
        return
    first_module = items[first].module.__name__
    end = next((i for i in range(first, len(items)) if getattr(items[i], "module", None) is None
                or items[i].module.__name__ != first_module), len(items))
    rest = items[end:]
    items[end:] = [i for i in rest if build_of(i) is None] + [i for i in rest if build_of(i) is not None]


@pytest.fixture(scope="session")
def scenarios(tmp_path_factory: pytest.TempPathFactory, kit: Any) -> Iterator[dict[str, Future[Any]]]:
    """Every selected module's scenario, started in parallel threads: ``{module name: future}``."""
    from mlflow.tracking import MlflowClient  # noqa: F401 - import once here, not in several threads at once

    directories = {name: tmp_path_factory.mktemp(name.rpartition(".")[2]) for name in _SCENARIO_BUILDERS}
    with ThreadPoolExecutor(max_workers=max(len(_SCENARIO_BUILDERS), 1), thread_name_prefix="scenario") as pool:
        yield {name: pool.submit(build, directories[name], kit) for name, build in _SCENARIO_BUILDERS.items()}


def scenario_of(module_name: str, scenarios: dict[str, Future[Any]]) -> Any:
    """The finished scenario of a module (its build_scenario's result; its exception re-raised)."""
    return scenarios[module_name].result()
