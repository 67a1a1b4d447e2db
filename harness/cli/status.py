"""``harness status``: where a grid stands, read from its ledger alone (no MLflow, no report, no torch).

Counts by state, each running run with its epoch and how long it has run, and each failed or
killed run with its reason. Meant to be run at any time, from any shell, while runs train.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from harness.experiment.storage_url import STORAGE_ENV


@click.command()
@click.argument("experiment_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="As for harness run.")
@click.option("--storage", "storage_url", default=None, metavar="URL", envvar=STORAGE_ENV,
              help="The ledger, as for harness run (default: the file's `storage`, else "
                   f"<output_dir>/ledger.db). Also ${STORAGE_ENV}.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def status(experiment_file: Path, overrides: tuple[str, ...], storage_url: str | None, as_json: bool) -> None:
    """Show how far the runs of EXPERIMENT_FILE have got, read from its run ledger.

    Prints the number of runs in each state (PENDING, RUNNING, DONE, FAILED, KILLED), every
    running run with its epoch and elapsed time, and every failed or killed run with its
    reason. It changes no run, neither rebuilds the report nor opens MLflow (`harness report`
    does that), and creates nothing when the grid has not started.
    """
    from harness.experiment import load_experiment
    from harness.runs.storage import experiment_storage

    loaded = load_experiment(experiment_file, overrides)
    storage = experiment_storage(loaded, storage_url)
    rows = _read_rows(storage, loaded.name)
    summary = summarize(rows, time.time())
    if as_json:
        click.echo(json.dumps({"experiment": loaded.name, "ledger": storage.describe(), **summary}, indent=2))
        return
    for line in format_summary(loaded.name, storage.describe(), summary):
        click.echo(line)


def _read_rows(storage: Any, experiment: str) -> list[Any]:
    """The experiment's ledger rows; none when the ledger file does not exist (nothing ran yet, none is created)."""
    from harness.runs.ledger import open_ledger

    if storage.path is not None and not storage.path.exists():
        return []
    ledger = open_ledger(storage)
    try:
        return ledger.rows(experiment)
    finally:
        ledger.close()


def summarize(rows: list[Any], now: float) -> dict[str, Any]:
    """Counts by state, running runs (epoch, elapsed, stale worker) and failed/killed runs with their reason."""
    from harness.runs.run_states import FAILED, KILLED, RUNNING, is_stale

    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    running = [{
        "run": _name(row), "epoch": row.epoch, "max_epochs": row.spec.get("training", {}).get("max_epochs"),
        "elapsed_s": None if row.started_at is None else max(now - row.started_at, 0.0),
        "attempt": row.attempts, "worker": row.owner,
        "stale": is_stale({"lease_expires": row.lease_expires, "owner": row.owner}, now),
    } for row in rows if row.status == RUNNING]
    ended = [{"run": _name(row), "status": row.status, "reason": row.reason, "attempts": row.attempts}
             for row in rows if row.status in (FAILED, KILLED)]
    return {"total": len(rows), "counts": counts, "running": running, "failed": ended}


def _name(row: Any) -> str:
    return f"{row.cell} × {row.task} × seed {row.seed}"


def format_summary(name: str, ledger: str, summary: dict[str, Any]) -> list[str]:
    from harness.core.durations import format_duration
    from harness.runs.run_states import DONE, FAILED, KILLED, PENDING, RUNNING

    if not summary["total"]:
        return [f"{name}: no runs planned yet in {ledger}; `harness run` plans and trains them"]
    order = [PENDING, RUNNING, DONE, FAILED, KILLED]
    counts = summary["counts"]
    ordered = [s for s in order if s in counts] + sorted(s for s in counts if s not in order)
    shown = ", ".join(f"{counts[s]} {s}" for s in ordered)
    lines = [f"{name}: {summary['total']} runs: {shown}  (ledger {ledger})"]
    if summary["running"]:
        lines.append("running:")
    for run in summary["running"]:
        epochs = f"epoch {run['epoch'] if run['epoch'] is not None else '?'}/{run['max_epochs'] or '?'} done"
        stale = "  [worker gone: the next `harness run` or worker takes it over]" if run["stale"] else ""
        lines.append(f"  {run['run']}: {epochs}, running {format_duration(run['elapsed_s'])}, "
                     f"attempt {run['attempt']}, worker {run['worker']}{stale}")
    if summary["failed"]:
        lines.append("failed or killed (the next `harness run` retries them):")
    for run in summary["failed"]:
        lines.append(f"  {run['run']}: {run['status']}: {run['reason'] or '(no reason recorded)'}")
    return lines
