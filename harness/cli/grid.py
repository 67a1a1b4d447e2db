"""``harness run`` and ``harness tune``: train a grid or tune it (and the stub left of the removed ``harness worker``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from harness.cli.common import (
    executor_options,
    from_command_line,
    lease_option,
    loaded_plugins,
    storage_option,
    strict_plugins_option,
)
from harness.workflows.report import write_report


@click.command()
@strict_plugins_option
@click.argument("experiment_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a value of the file, e.g. --set training.max_epochs=1 (repeatable).")
@click.option("--quiet", is_flag=True, help="Print only the summary.")
@storage_option
@click.option("--no-wait", is_flag=True,
              help="Do not wait for runs that other drivers hold; report what has finished so far.")
@lease_option
@click.option("--no-resume", is_flag=True,
              help="Start interrupted runs afresh instead of from their last checkpoint (deletes it).")
@executor_options
@click.pass_context
def run(ctx: click.Context, experiment_file: Path, overrides: tuple[str, ...], quiet: bool,
        storage_url: str | None, no_wait: bool, lease_seconds: float, no_resume: bool,
        executor: str | None, ray_address: str | None) -> None:
    """Train every cell × task × seed of EXPERIMENT_FILE, then write its report.

    Finished runs are skipped; interrupted or failed ones run again. With shared storage,
    other `harness run` drivers may take runs of the same grid too; this command waits until
    every run has finished or failed before writing the report. Exit code 0 when every
    run finished, 1 when any failed, 2 for bad input, 130/143 when interrupted.

    Outputs: the run ledger, the MLflow store (mlflow.db) and each run's artifacts (model.pt,
    network.json, config.json) under the file's output_dir (default runs/<name>/); the report
    (results.csv, report.md, index.html, plots/) under <reports_dir>/<name>/ (default reports/<name>/).
    """
    from harness.training.interrupts import RunInterrupted
    from harness.workflows import run_experiment

    try:
        outcome = run_experiment(experiment_file, overrides, storage=storage_url, executor=executor,
                                 ray_address=from_command_line(ctx, "ray_address", ray_address), resume=not no_resume,
                                 wait=not no_wait, verbose=not quiet, lease_seconds=lease_seconds,
                                 plugins=lambda: loaded_plugins(ctx))
    except RunInterrupted as interrupted:  # before any run was claimed
        click.echo(f"{experiment_file}: {interrupted}", err=True)
        sys.exit(interrupted.exit_code)
    summary, paths = outcome.summary, outcome.report
    click.echo(
        f"{outcome.name}: {summary.finished} finished, {summary.failed} failed, {summary.skipped} skipped"
        f" (already finished) in {outcome.seconds:.0f}s"
        + (f"; interrupted by signal {summary.interrupted_by}" if summary.interrupted_by else "")
    )
    if outcome.storage.shared_by_processes:
        click.echo(f"grid ({outcome.storage.describe()}): {summary.describe_grid()}")
    click.echo(f"report: {paths.markdown}  {paths.html}")
    click.echo(f"browse runs: mlflow ui --backend-store-uri {outcome.tracking_uri}")
    sys.exit(outcome.exit_code)


@click.command()
@strict_plugins_option
@click.argument("experiment_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="As for harness run.")
@click.option("--quiet", is_flag=True, help="Print only the summary.")
@storage_option
@lease_option
@executor_options
@click.pass_context
def tune(ctx: click.Context, experiment_file: Path, overrides: tuple[str, ...], quiet: bool,
         storage_url: str | None, lease_seconds: float, executor: str | None, ray_address: str | None) -> None:
    """Search each cell × task of EXPERIMENT_FILE with Optuna, re-train the best over the seeds, report.

    Every (cell, task) study gets the same budget, the file's tuning.trials trials of at most
    training.max_epochs epochs; running the command again continues each study to that total
    (a trial cut short by a signal or a dead worker runs again). Exit code 0 when every study
    has a completed trial and every re-training run finished, 1 otherwise, 2 for bad input,
    130/143 when interrupted.

    With --executor ray (or executor: ray) every trial trains as a Ray task and the re-training
    runs as for `harness run --executor ray`; the studies stay in this process, which decides
    pruning and writes MLflow (docs/scale-out.md).

    Outputs: as for `harness run` (runs/<name>/ and reports/<name>/ by default), plus the Optuna
    studies in the ledger's storage; the report gains each study's trials and importances.
    """
    from harness.experiment import load_experiment
    from harness.runs.executors import choose_executor

    loaded = load_experiment(experiment_file, overrides)  # before heavy imports: bad files fail fast
    loaded = choose_executor(loaded, executor, from_command_line(ctx, "ray_address", ray_address))
    from harness.runs.tracking import Tracker
    from harness.tuning.tune import tune as tune_experiment

    started = time.perf_counter()
    summary = tune_experiment(loaded, loaded_plugins(ctx), storage=storage_url, lease_seconds=lease_seconds,
                              verbose=not quiet, ray_address=ray_address)
    elapsed = time.perf_counter() - started
    if summary.interrupted_by is not None:
        click.echo(f"{loaded.name}: interrupted by signal {summary.interrupted_by} after {elapsed:.0f}s; "
                   f"run `harness tune {experiment_file}` again to continue", err=True)
        sys.exit(summary.exit_code)
    for study in summary.studies:
        best = "no completed trial" if study.best_value is None else \
            f"best {study.plan.monitor} {study.best_value:.4g} (trial {study.best_number})"
        counts = ", ".join(f"{n} {state.lower()}" for state, n in study.counts.items())
        click.echo(f"{study.plan.name}: {counts} of {study.budget} trials; {best}")
    retrain = summary.retrain
    click.echo(f"{loaded.name}: re-training {retrain.finished} finished, {retrain.failed} failed, "
               f"{retrain.skipped} skipped (already finished); {elapsed:.0f}s in all")
    paths = write_report(loaded, Tracker(summary.tracking_uri, loaded.name, loaded.output_dir / "artifacts"),
                          storage_url)
    click.echo(f"report: {paths.markdown}  {paths.html}")
    sys.exit(summary.exit_code)


#: What ``harness worker`` (removed, issue #21) answers, in one line.
WORKER_REMOVED = ("harness worker was removed: run `harness run FILE` with `executor: ray` to spread runs over "
                  "several machines, or `resources: {cpus: N}` / `{gpus: F}` to run several at once on one machine "
                  "(docs/scale-out.md)")


@click.command(hidden=True, context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                              "help_option_names": []})
def worker() -> None:
    """Removed: says what replaced it and exits 2, whatever the arguments."""
    click.echo(f"Error: {WORKER_REMOVED}", err=True)
    sys.exit(2)
