"""``harness run`` as a function: train every cell × task × seed of an experiment file, then report.

>>> from harness import run_experiment
>>> outcome = run_experiment("experiments/quickstart.yaml", ["seeds=[0]"])  # doctest: +SKIP
>>> outcome.report.summary  # the verdict as JSON; outcome.report.html the page  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.runs.run_states import DEFAULT_LEASE_SECONDS

if TYPE_CHECKING:
    from harness.core.loading import LoadedPlugins
    from harness.experiment.storage_url import StorageChoice
    from harness.reports.report import ReportPaths
    from harness.runs.grid import GridSummary


@dataclass(frozen=True)
class ExperimentOutcome:
    """What :func:`run_experiment` did: the grid's counts, the report it wrote and where the runs are."""

    name: str
    summary: GridSummary
    report: ReportPaths
    tracking_uri: str
    storage: StorageChoice
    seconds: float

    @property
    def exit_code(self) -> int:
        """``harness run``'s: 0 when every run finished, 1 when any failed, 128+N when stopped by signal N."""
        return self.summary.exit_code


def run_experiment(experiment_file: str | Path, overrides: Sequence[str] = (), *, storage: str | None = None,
                   executor: str | None = None, ray_address: str | None = None, resume: bool = True,
                   wait: bool = True, verbose: bool = True, lease_seconds: float = DEFAULT_LEASE_SECONDS,
                   plugins: LoadedPlugins | Callable[[], LoadedPlugins] | None = None) -> ExperimentOutcome:
    """Train every run of ``experiment_file`` not finished yet, then write its report.

    Args:
        experiment_file: the YAML file; ``overrides`` change it as ``--set KEY=VALUE`` does.
        storage: the ledger's storage URL, overriding the file's (``--storage``).
        executor: ``local`` or ``ray``, overriding the file's (``--executor``).
        ray_address: the Ray cluster for ``executor: ray`` (default: ``$RAY_ADDRESS``, else a
            Ray instance on this machine); naming one with the local executor is an error.
        resume: continue interrupted runs from their last checkpoint (``--no-resume``: False).
        wait: wait for runs other drivers hold (``--no-wait``: False).
        verbose: progress lines on stderr.
        plugins: the loaded plugins, or a function that loads them once the file has been checked
            (default: every installed plugin).
    Raises:
        harness.core.errors.HarnessError: bad input (exit code 2), before anything is created.
        harness.training.interrupts.RunInterrupted: a signal arrived before any run started.
    """
    from harness.core.loading import load_plugins
    from harness.experiment import load_experiment
    from harness.runs.executors import choose_executor
    from harness.runs.grid import expand_grid
    from harness.runs.launch import make_runner
    from harness.runs.storage import experiment_storage
    from harness.workflows.report import write_report

    loaded = load_experiment(experiment_file, overrides)  # before heavy imports: bad files fail fast
    loaded = choose_executor(loaded, executor, ray_address)
    chosen_storage = experiment_storage(loaded, storage)
    plugins = load_plugins() if plugins is None else plugins() if callable(plugins) else plugins
    specs = expand_grid(loaded, plugins)
    runner = make_runner(loaded, plugins, specs, ray_address=ray_address or os.environ.get("RAY_ADDRESS"),
                         verbose=verbose, storage=chosen_storage, lease_seconds=lease_seconds, resume=resume)
    started = time.perf_counter()
    runner.open()
    summary = runner.run(wait=wait)
    seconds = time.perf_counter() - started
    report = write_report(loaded, runner.tracker)
    return ExperimentOutcome(loaded.name, summary, report, runner.tracker.tracking_uri, chosen_storage, seconds)
