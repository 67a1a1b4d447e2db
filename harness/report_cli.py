"""``harness compare`` (one report over several experiments) and ``harness export`` (runs as CSV or Parquet)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from harness.errors import BadInputError
from harness.tracking import TAG_PREFIX, RunRecord, Tracker

__all__ = ["compare", "export", "CombinedTracker"]


class CombinedTracker:
    """Several experiments' stores read as one: tasks and cells matched by name.

    A cell that ran the same task in more than one experiment is shown once per experiment, as
    ``cell [experiment]``, so the report compares them; run keys are prefixed by the experiment.
    """

    def __init__(self, trackers: dict[str, Tracker]) -> None:
        from harness.results import grid_runs

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
@click.argument("experiment_files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The report folder.  [default: <reports_dir of the first file>/compare-<names>]")
def compare(experiment_files: tuple[Path, ...], output: Path | None) -> None:
    """One report over several experiments (e.g. the quickstart and a tuned run), cells and tasks matched by name.

    The statistics, correction and reference cell are those of the first file's `report` settings.
    """
    from harness.config import load_experiment
    from harness.reporting import build_report
    from harness.results import open_tracker

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
    from harness.config import load_experiment
    from harness.results import frame, grid_runs, open_tracker

    loaded = load_experiment(experiment_file)
    table = frame(grid_runs(open_tracker(loaded)), loaded.name)
    target = output or loaded.report_dir / f"runs.{fmt}"
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        table.to_csv(target, index=False)
    else:
        table.to_parquet(target, index=False)
    click.echo(f"{len(table)} runs: {target}")
