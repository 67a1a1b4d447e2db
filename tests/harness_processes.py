"""``harness`` as a subprocess, and reading what it recorded: shared by the runner and tuning tests.

Importable from any test module or conftest (``pythonpath = ["tests"]`` in pyproject.toml).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from forked_harness import SUITE_THREADS, HarnessProcess, harness_script

#: Generous: a loaded 2-core machine can take half a minute to start a harness process.
TIMEOUT = 300


def write_experiment(directory: Path, name: str, data: dict[str, Any], *, command: str = "run") -> Path:
    """Write ``<directory>/<name>.yaml``, starting with the comment that says how to run it."""
    path = directory / f"{name}.yaml"
    path.write_text(f"# Run it: harness {command} {path.name}\n" + yaml.safe_dump(data, sort_keys=False),
                    encoding="utf-8")
    return path


def tuning_experiment(*, cell: str, budget: int, train_size: int, length: int, max_epochs: int) -> dict[str, Any]:
    """A small ``harness tune`` experiment: one cell on ``adding``, learning rate searched at random."""
    return {
        "cells": [cell],
        "tasks": [{"name": "adding", "options": {"train_size": train_size, "validation_size": 32, "test_size": 32,
                                                 "length": length}}],
        "seeds": [0],
        "model": {"hidden_size": 8},
        "training": {"max_epochs": max_epochs, "batch_size": 16, "cpu_threads": 1},
        "device": "cpu",
        "output_dir": "out",
        "reports_dir": "reports",
        "tuning": {
            "trials": budget,
            "sampler": {"name": "random", "seed": 0},
            "pruner": "none",
            "search_space": {"training.learning_rate": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}},
        },
    }


def harness_command() -> list[str]:
    """The installed ``harness`` console script of this interpreter's environment."""
    return [harness_script()]


def harness_env() -> dict[str, str]:
    """The caller's environment without HARNESS_* switches (they would change what loads),
    except the session's processed-data cache folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_") and not k.startswith("MLFLOW_")}
    if "HARNESS_CACHE_DIR" in os.environ:
        env["HARNESS_CACHE_DIR"] = os.environ["HARNESS_CACHE_DIR"]
    env.update(SUITE_THREADS, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
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

    def __init__(self, cwd: Path, args: Sequence[str], label: str = "", *, fork: bool = True) -> None:
        self.cwd, self.args = cwd, tuple(str(a) for a in args)
        logs = cwd / "logs"
        logs.mkdir(exist_ok=True)
        stem = label or f"harness-{time.monotonic_ns()}"
        self.stdout_path, self.stderr_path = logs / f"{stem}.out", logs / f"{stem}.err"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = HarnessProcess(self.args, cwd=cwd, env=harness_env(), stdout=out, stderr=err,
                                          stdin=subprocess.DEVNULL, fork=fork)

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

    def wait_for_file(self, folder: Path, pattern: str, *, timeout: float = TIMEOUT) -> None:
        """Poll until a file matching ``pattern`` exists under ``folder`` (e.g. a checkpoint's sha256
        sidecar, written last: the checkpoint is complete), failing if the process exits first."""
        deadline = time.monotonic() + timeout
        while not any(folder.glob(pattern)):
            assert self.process.poll() is None, self.finish().explain()
            assert time.monotonic() < deadline, self.stderr()
            time.sleep(0.005)

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


def start_harness(cwd: Path, *args: str, label: str = "", fork: bool = True) -> Started:
    """Start ``harness ARGS`` in ``cwd``; ``fork=False``: a real exec, see :class:`HarnessProcess`."""
    return Started(cwd, args, label, fork=fork)


def run_harness(cwd: Path, *args: str, timeout: float = TIMEOUT) -> Finished:
    """Run ``harness ARGS`` in ``cwd`` to completion."""
    return Started(cwd, args).finish(timeout)


def run_all(*invocations: tuple[Path, Sequence[str]]) -> list[Finished]:
    """Start several harness invocations at once (separate folders) and wait for all of them."""
    started = [Started(cwd, args) for cwd, args in invocations]
    return [s.finish() for s in started]


def mlflow_client(output_dir: Path) -> Any:
    """An MlflowClient on the default store of ``output_dir``."""
    from mlflow.tracking import MlflowClient

    db = output_dir / "mlflow.db"
    assert db.exists(), f"no MLflow store at {db}"
    return MlflowClient(f"sqlite:///{db}")


def mlflow_runs(output_dir: Path, experiment: str) -> list[Any]:
    """Every MLflow run of ``experiment`` in the default store of ``output_dir`` (all statuses), oldest first."""
    return _runs_of(mlflow_client(output_dir), experiment, str(output_dir))


def tracked_runs(tracking_uri: str, experiment: str) -> list[Any]:
    """Every MLflow run of ``experiment`` at ``tracking_uri`` (a database server's too), oldest first."""
    from mlflow.tracking import MlflowClient

    from harness.experiment.storage_url import with_default_driver

    return _runs_of(MlflowClient(with_default_driver(tracking_uri)), experiment, tracking_uri)


def _runs_of(client: Any, experiment: str, where: str) -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r} in {where}"
    return list(client.search_runs([found.experiment_id], max_results=1000,
                                   order_by=["attributes.start_time ASC"]))


def tag(run: Any, name: str) -> str | None:
    return run.data.tags.get(f"harness.{name}")


def installed_provenance(plugin: str, distribution: str = "rnn-harness", site: Path | None = None) -> dict[str, str]:
    """The ``plugin_provenance`` entry a run of ``plugin`` must carry, read from the installed files.

    Found by path in ``site`` (default: this environment's site-packages), never through
    importlib.metadata as the harness finds it, and hashed from the RECORD file's bytes.
    """
    folder = site or Path(sysconfig.get_path("purelib"))
    (dist_info,) = folder.glob(f"{distribution.replace('-', '_')}-*.dist-info")
    version = dist_info.name.removesuffix(".dist-info").split("-", 1)[1]
    digest = hashlib.sha256((dist_info / "RECORD").read_bytes()).hexdigest()
    return {"plugin": plugin, "distribution": distribution, "version": version, "record_sha256": digest}


def assert_trial_equals_reference(reference: Finished, reference_trials: list[Any], trials: list[Any],
                                  epochs: int) -> None:
    """A trial retried after an interruption (the last of ``trials``) equals the uninterrupted
    reference run's only trial: its values, and every epoch reported exactly once, bit-exact."""
    assert reference.returncode == 0, reference.explain()
    expected, = reference_trials
    retried = trials[-1]
    assert expected.params == retried.params
    assert sorted(retried.intermediate_values) == list(range(1, epochs + 1))
    assert retried.intermediate_values == expected.intermediate_values
    assert retried.value == expected.value
    assert retried.user_attrs["epochs"] == epochs


def assert_resumed_as_uninterrupted(rerun: Finished, newest_epoch: int, epochs: int, expected: Any,
                                    resumed: Any) -> None:
    """A rerun after a kill resumed from the newest checkpoint (epoch ``newest_epoch`` of ``epochs``),
    and its MLflow run ``resumed`` ended with exactly the test metrics and weights of ``expected``."""
    assert rerun.returncode == 0, rerun.explain()
    assert f"resumed from epoch {newest_epoch} checkpoint" in rerun.stderr, rerun.explain()
    assert f"epoch 1/{epochs}" not in rerun.stderr and f"epoch {newest_epoch + 1}/{epochs}" in rerun.stderr
    test_metrics = {k: v for k, v in expected.data.metrics.items() if k.startswith("test_")}
    assert test_metrics and test_metrics == {k: resumed.data.metrics[k] for k in test_metrics}  # exact
    assert tag(resumed, "model_sha256") == tag(expected, "model_sha256")  # the same weights, bit for bit
