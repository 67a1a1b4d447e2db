"""Fixtures for the ``harness tune`` tests: tiny experiment files, ``harness`` as a subprocess, Optuna reads.

Most of a subprocess's cost is importing torch, Lightning, MLflow and Optuna, so each
subprocess test module describes its whole story as ``build_scenario(directory, kit)``; the
scenarios of all selected modules start together in threads when the session starts, and
each module's tests then look at what its story left behind. Builders and tests reach the
helpers below through ``kit`` (this module).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

#: Generous: a loaded 2-core machine can take half a minute to start a harness process.
TIMEOUT = 300


def write_experiment(directory: Path, name: str, data: dict[str, Any]) -> Path:
    """``<directory>/<name>.yaml``, starting with the comment that says how to run it."""
    path = directory / f"{name}.yaml"
    path.write_text(f"# A tuning test: harness tune {path.name}\n" + yaml.safe_dump(data, sort_keys=False),
                    encoding="utf-8")
    return path


def harness_command() -> list[str]:
    script = Path(sys.executable).parent / "harness"
    if script.exists():
        return [str(script)]
    found = shutil.which("harness")
    return [found] if found else [sys.executable, "-m", "harness.cli"]


def harness_env() -> dict[str, str]:
    """The caller's environment without HARNESS_*/MLFLOW_* switches; one thread per process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HARNESS_", "MLFLOW_"))}
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    if "HARNESS_CACHE_DIR" in os.environ:
        env["HARNESS_CACHE_DIR"] = os.environ["HARNESS_CACHE_DIR"]
    return env


@dataclass
class Finished:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def explain(self) -> str:
        return (f"harness {' '.join(self.args)} exited {self.returncode}\n"
                f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}")


class Started:
    """A running ``harness`` whose output goes to files that can be polled."""

    def __init__(self, cwd: Path, args: Sequence[str], label: str) -> None:
        self.args = tuple(args)
        logs = cwd / "logs"
        logs.mkdir(exist_ok=True)
        self.out, self.err = logs / f"{label}.out", logs / f"{label}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.process = subprocess.Popen(harness_command() + list(args), cwd=cwd, env=harness_env(),
                                            stdout=out, stderr=err, stdin=subprocess.DEVNULL)

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, text: str, *, after: str = "") -> None:
        """Poll stderr until ``text`` appears after the first ``after``."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            log = self.stderr()
            start = log.find(after) if after else 0
            if start >= 0 and text in log[start:]:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"harness exited before printing {text!r}:\n{self.finish().explain()}")
            time.sleep(0.02)
        self.process.kill()
        raise AssertionError(f"no {text!r} within {TIMEOUT}s:\n{self.finish().explain()}")

    def finish(self) -> Finished:
        """Wait for the exit (reaping the process, so its pid is gone)."""
        try:
            self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"harness {' '.join(self.args)} did not exit within {TIMEOUT}s:\n{self.stderr()}")
        return Finished(self.args, self.process.returncode, self.out.read_text(encoding="utf-8"), self.stderr())


def start_harness(cwd: Path, *args: str, label: str) -> Started:
    return Started(cwd, args, label)


def study_trials(output_dir: Path, study: str) -> list[Any]:
    """Every Optuna trial of ``study`` in the default storage of ``output_dir``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=study, storage=f"sqlite:///{output_dir / 'optuna.db'}").get_trials()


def mlflow_runs(output_dir: Path, experiment: str) -> list[Any]:
    """Every MLflow run of ``experiment`` in ``output_dir``'s store, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{output_dir / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r} in {output_dir}"
    return list(client.search_runs([found.experiment_id], max_results=1000, order_by=["attributes.start_time ASC"]))


def tag(run: Any, name: str) -> str | None:
    return run.data.tags.get(f"harness.{name}")


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
