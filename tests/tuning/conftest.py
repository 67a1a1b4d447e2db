"""Fixtures for the ``harness tune`` tests: tiny experiment files, ``harness`` as a subprocess, Optuna reads.

Most of a subprocess's cost is importing torch, Lightning, MLflow and Optuna, so each
subprocess test module describes its whole story as ``build_scenario(directory, kit)``; the
scenarios of all selected modules start together in threads when the session starts, and
each module's tests then look at what its story left behind. Builders and tests reach the
helpers below through ``kit`` (this module).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import harness_processes as processes
import pytest
from harness_processes import Finished, Started, mlflow_runs, start_harness, tag, tracked_runs  # noqa: F401 - kit.*


def write_experiment(directory: Path, name: str, data: dict[str, Any]) -> Path:
    """``<directory>/<name>.yaml``, starting with the comment that says how to run it."""
    return processes.write_experiment(directory, name, data, command="tune")


def study_trials(output_dir: Path, study: str) -> list[Any]:
    """Every Optuna trial of ``study`` in the default storage of ``output_dir``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=study, storage=f"sqlite:///{output_dir / 'optuna.db'}").get_trials()


# ---------------------------------------------------------------------------
# Scenarios: each subprocess module's story, all started at once
# ---------------------------------------------------------------------------

_BUILDERS: dict[str, Callable[[Path, Any], Any]] = {}
_FUTURES: dict[str, Future[Any]] = {}


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Remember the ``build_scenario`` of every selected module, so they can start together."""
    for item in items:
        build = getattr(getattr(item, "module", None), "build_scenario", None)
        if callable(build) and "tests/tuning" in str(getattr(item, "path", "")):
            _BUILDERS.setdefault(item.module.__name__, build)


@pytest.fixture(scope="session", autouse=True)
def _scenario_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadPoolExecutor]:
    """Starts every scenario with the session, so in-process tests run while the subprocesses work."""
    from mlflow.tracking import MlflowClient  # noqa: F401 - import once here, not in several threads at once

    with ThreadPoolExecutor(max_workers=max(len(_BUILDERS), 1), thread_name_prefix="tune-scenario") as pool:
        for name, build in _BUILDERS.items():
            _FUTURES[name] = pool.submit(build, tmp_path_factory.mktemp(name.rpartition(".")[2]), sys.modules[__name__])
        yield pool


@pytest.fixture(scope="session")
def kit() -> Any:
    """This module, so tests reach its helpers (``kit.tag``) without importing a conftest."""
    return sys.modules[__name__]


@pytest.fixture(scope="session")
def scenario_of(_scenario_pool: ThreadPoolExecutor) -> Callable[[str], Any]:
    """``scenario_of(__name__)``: that module's finished scenario (its exception re-raised)."""
    return lambda module: _FUTURES[module].result()
