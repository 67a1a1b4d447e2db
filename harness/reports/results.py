"""An experiment's runs as a table: ``load("EXPERIMENT.yaml")`` gives a pandas DataFrame, one row per run.

Every tag (without the ``harness.`` prefix), every parameter (``param.<key>``) and every final
metric; only the latest attempt of each run key, as in the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness.core.errors import BadInputError
from harness.runs.tracking import (
    TAG_PREFIX,
    RunRecord,
    Tracker,
    default_tracking_uri,
    latest_per_key,
)

if TYPE_CHECKING:
    import pandas as pd

    from harness.experiment import LoadedExperiment

__all__ = ["load", "open_tracker", "grid_runs", "frame"]


def open_tracker(loaded: LoadedExperiment) -> Tracker:
    """The experiment's MLflow store; BadInputError when nothing has been recorded yet."""
    uri = loaded.experiment.tracking_uri
    if uri is None:
        if not (loaded.output_dir / "mlflow.db").exists():
            raise BadInputError(f"{loaded.path}: no runs recorded in {loaded.output_dir}; "
                                f"run `harness run {loaded.path}` first")
        uri = default_tracking_uri(loaded.output_dir)
    return Tracker(uri, loaded.name, loaded.output_dir / "artifacts")


def grid_runs(tracker: Tracker) -> list[RunRecord]:
    """The latest attempt of every run key, without the report's comparison run."""
    return latest_per_key(r for r in tracker.runs() if not r.tag("comparison"))


def frame(records: list[RunRecord], experiment: str) -> pd.DataFrame:
    import pandas as pd

    rows = []
    for record in records:
        row: dict[str, object] = {"experiment": experiment, "run_id": record.run_id,
                                  "mlflow_status": record.status}
        row.update({k[len(TAG_PREFIX):]: v for k, v in record.tags.items() if k.startswith(TAG_PREFIX)})
        row.update({f"param.{k}": v for k, v in record.params.items()})
        row.update(record.metrics)
        primary = "test_" + record.tag("primary_metric")
        row["primary_value"] = record.metrics.get(primary)
        rows.append(row)
    table = pd.DataFrame(rows)
    if "seed" in table and table["seed"].str.fullmatch(r"-?\d+").all():
        table["seed"] = table["seed"].astype(int)
    sort = [c for c in ("task", "cell", "seed") if c in table]
    return table.sort_values(sort, kind="stable").reset_index(drop=True) if sort else table


def load(experiment_file: str | Path, overrides: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per run of EXPERIMENT_FILE (latest attempt per run key): tags, ``param.*`` and metrics."""
    from harness.experiment import load_experiment

    loaded = load_experiment(experiment_file, overrides)
    return frame(grid_runs(open_tracker(loaded)), loaded.name)
