"""``harness compare`` (one report over several experiments) and ``harness export`` (runs as CSV or Parquet)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from harness.cli.common import storage_option
from harness.workflows.report import write_report
from harness.core.errors import BadInputError
from harness.runs.tracking import TAG_PREFIX, RunRecord, Tracker

__all__ = ["compare", "export", "CombinedTracker"]


class CombinedTracker:
    """Several experiments' stores read as one: tasks and cells matched by name.

    A cell that ran the same task in more than one experiment is shown once per experiment, as
    ``cell [experiment]``, so the report compares them; run keys are prefixed by the experiment.
    """

    def __init__(self, trackers: dict[str, Tracker]) -> None:
        from harness.reports.results import grid_runs

        self._owner: dict[str, Tracker] = {}
        self._records: list[RunRecord] = []
        found = {name: grid_runs(tracker) for name, tracker in trackers.items()}
        seen: dict[tuple[str, str], set[str]] = {}
        for name, records in found.items():
            for r in records:
                seen.setdefault((r.tag("cell"), r.tag("task")), set()).add(name)
        for name, records in found.items():
            for r in records:
                tags = dict(r.tags)
                tags[TAG_PREFIX + "run_key"] = f"{name}/{r.tag('run_key') or r.run_id}"
                if len(seen[r.tag("cell"), r.tag("task")]) > 1:
                    tags[TAG_PREFIX + "cell"] = f"{r.tag('cell')} [{name}]"
                self._records.append(dataclasses.replace(r, tags=tags))
                self._owner[r.run_id] = trackers[name]

    def runs(self) -> list[RunRecord]:
        return list(self._records)

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return self._owner[run_id].metric_history(run_id, key)

    def experiment_tag(self, name: str) -> str | None:
        return None  # published reference numbers belong to one experiment, not to a comparison


@click.command()
@click.argument("experiment_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="As for harness run.")
@storage_option
def report(experiment_file: Path, overrides: tuple[str, ...], storage_url: str | None) -> None:
    """Rebuild the report of EXPERIMENT_FILE from MLflow alone (while runs train, too).

    With --storage (or a `storage` in the file), also print how many runs of the ledger
    are in each state.

    Outputs: results.csv, report.md, index.html and plots/ under <reports_dir>/<name>/
    (default reports/<name>/), overwriting the previous report; reads runs/<name>/mlflow.db.
    """
    from harness.experiment import load_experiment
    from harness.reports.results import open_tracker

    loaded = load_experiment(experiment_file, overrides)
    if storage_url is not None or loaded.experiment.storage is not None:
        click.echo(ledger_counts(loaded, storage_url))
    tracker = open_tracker(loaded)
    if loaded.experiment.reference is not None:  # the file's published numbers, recorded with the runs
        tracker.set_experiment_tag("reference", loaded.experiment.reference.model_dump_json())
    paths = write_report(loaded, tracker, storage_url)
    click.echo(f"report: {paths.markdown}  {paths.html}")


def ledger_counts(loaded, storage_url):  # type: ignore[no-untyped-def]
    from harness.runs.ledger import open_ledger
    from harness.runs.storage import experiment_storage

    storage = experiment_storage(loaded, storage_url)
    ledger = open_ledger(storage)
    try:
        counts: dict[str, int] = {}
        for row in ledger.rows(loaded.name):
            counts[row.status] = counts.get(row.status, 0) + 1
    finally:
        ledger.close()
    shown = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no runs planned"
    return f"ledger ({storage.describe()}): {shown}"


@click.command()
@click.argument("experiment_files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The report folder.  [default: <reports_dir of the first file>/compare-<names>]")
def compare(experiment_files: tuple[Path, ...], output: Path | None) -> None:
    """One report over several experiments (e.g. the quickstart and a tuned run), cells and tasks matched by name.

    The statistics, correction and reference cell are those of the first file's `report` settings.
    """
    from harness.experiment import load_experiment
    from harness.reports.report import build_report
    from harness.reports.results import open_tracker

    if len(experiment_files) < 2:
        raise BadInputError("harness compare: give at least two experiment files")
    loaded = [load_experiment(f) for f in experiment_files]
    names = [x.name for x in loaded]
    if len(set(names)) != len(names):
        raise BadInputError(f"harness compare: experiment names repeat ({', '.join(names)}); give distinct experiments")
    combined = CombinedTracker({x.name: open_tracker(x) for x in loaded})
    title = " + ".join(names)
    folder = output or Path(loaded[0].experiment.reports_dir) / ("compare-" + "-".join(names))
    settings = loaded[0].experiment.report
    paths = build_report(title, combined, folder, experiment_file=", ".join(str(f) for f in experiment_files),
                         correction=settings.correction, reference_cell=settings.reference_cell)  # type: ignore[arg-type]
    click.echo(f"report: {paths.markdown}  {paths.html}")


@click.command()
@click.argument("experiment_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The file to write.  [default: <report folder>/runs.<format>]")
def export(experiment_file: Path, fmt: str, output: Path | None) -> None:
    """Write one row per run of EXPERIMENT_FILE with every tag, parameter and metric."""
    from harness.experiment import load_experiment
    from harness.reports.results import frame, grid_runs, open_tracker

    loaded = load_experiment(experiment_file)
    table = frame(grid_runs(open_tracker(loaded)), loaded.name)
    target = output or loaded.report_dir / f"runs.{fmt}"
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        table.to_csv(target, index=False)
    else:
        table.to_parquet(target, index=False)
    click.echo(f"{len(table)} runs: {target}")
