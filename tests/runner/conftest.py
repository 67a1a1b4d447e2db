"""Fixtures for end-to-end runner tests: a tiny experiment file and ``harness`` as a subprocess.

The tiny grid is 2 cells × 2 tasks × 2 seeds: ``vanilla`` (the torch.nn fast path,
execution path "aten") and ``gru_simple`` (the reference Python loop) on ``agreement``
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
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

#: Generous: a loaded 2-core machine can take ~15 s for a tiny grid, mostly imports.
TIMEOUT = 240

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


def write_experiment(directory: Path, name: str, data: dict[str, Any]) -> Path:
    """Write ``<directory>/<name>.yaml`` (with the run command as its first comment line)."""
    path = directory / f"{name}.yaml"
    path.write_text(f"# Run it: harness run {path.name}\n" + yaml.safe_dump(data, sort_keys=False),
                    encoding="utf-8")
    return path


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
# Running harness
# ---------------------------------------------------------------------------


def harness_command() -> list[str]:
    """The installed ``harness`` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "harness"
    if script.exists():
        return [str(script)]
    found = shutil.which("harness")
    return [found] if found else [sys.executable, "-m", "harness.cli"]


def harness_env() -> dict[str, str]:
    """The caller's environment without HARNESS_* switches (they would change what loads)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_") and not k.startswith("MLFLOW_")}
    env["PYTHONUNBUFFERED"] = "1"
    # Tiny RNNs on a shared 2-core machine: two intra-op threads per process only contend
    # (10x slower under load). Results are the same with one thread.
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@dataclass
class Finished:
    """A harness invocation that has exited."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def explain(self) -> str:
        return (f"harness {' '.join(self.args)} exited {self.returncode}\n"
                f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}")


class Started:
    """A running ``harness`` process; stdout and stderr go to files that can be polled."""

    def __init__(self, cwd: Path, args: Sequence[str], label: str = "") -> None:
        self.cwd, self.args = cwd, tuple(str(a) for a in args)
        logs = cwd / "logs"
        logs.mkdir(exist_ok=True)
        stem = label or f"harness-{time.monotonic_ns()}"
        self.stdout_path, self.stderr_path = logs / f"{stem}.out", logs / f"{stem}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(harness_command() + list(self.args), cwd=cwd, env=harness_env(),
                                            stdout=out, stderr=err, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, text: str, *, after: str = "", timeout: float = TIMEOUT) -> None:
        """Poll stderr until ``text`` appears (after the first ``after``, if given)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.stderr()
            start = log.find(after) if after else 0
            if start >= 0 and text in log[start:]:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"harness exited before printing {text!r}:\n{self.finish().explain()}")
            time.sleep(0.02)
        self.process.kill()
        raise AssertionError(f"no {text!r} within {timeout}s:\n{self.finish().explain()}")

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def finish(self, timeout: float = TIMEOUT) -> Finished:
        """Wait for the exit (reaping the process, so its pid is gone) and collect its output."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"harness {' '.join(self.args)} did not exit within {timeout}s:\n{self.stderr()}")
        return Finished(self.args, self.process.returncode,
                        self.stdout_path.read_text(encoding="utf-8", errors="replace"), self.stderr())


def start_harness(cwd: Path, *args: str, label: str = "") -> Started:
    return Started(cwd, args, label)


def run_harness(cwd: Path, *args: str, timeout: float = TIMEOUT) -> Finished:
    """Run ``harness ARGS`` in ``cwd`` to completion."""
    return Started(cwd, args).finish(timeout)


def run_all(*invocations: tuple[Path, Sequence[str]]) -> list[Finished]:
    """Start several harness invocations at once (separate folders) and wait for all of them."""
    started = [Started(cwd, args) for cwd, args in invocations]
    return [s.finish() for s in started]


# ---------------------------------------------------------------------------
# Looking at what a run left behind
# ---------------------------------------------------------------------------


def mlflow_client(output_dir: Path) -> Any:
    """An MlflowClient on the default store of ``output_dir``."""
    from mlflow.tracking import MlflowClient

    db = output_dir / "mlflow.db"
    assert db.exists(), f"no MLflow store at {db}"
    return MlflowClient(f"sqlite:///{db}")


def mlflow_runs(output_dir: Path, experiment: str) -> list[Any]:
    """Every MLflow run of ``experiment`` (all statuses), oldest first."""
    client = mlflow_client(output_dir)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r} in {output_dir}"
    return list(client.search_runs([found.experiment_id], max_results=1000,
                                   order_by=["attributes.start_time ASC"]))


def tag(run: Any, name: str) -> str | None:
    return run.data.tags.get(f"harness.{name}")


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
