"""Writing an experiment's report: the comparison of its runs, a tuned experiment's studies, and the
verdict logged back to MLflow as the experiment's comparison run."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.experiment import LoadedExperiment
    from harness.reports.report import ReportPaths
    from harness.runs.tracking import Tracker


def write_report(loaded: LoadedExperiment, tracker: Tracker, storage_url: str | None = None) -> ReportPaths:
    """(Re)write the report of ``loaded`` from the runs in ``tracker``; ``storage_url`` finds a tuned
    experiment's Optuna studies when they are not in the file's own storage."""
    from harness.reports.report import build_report
    from harness.reports.to_mlflow import log_comparison

    extras = None
    if loaded.experiment.tuning is not None:  # a tuned experiment: its studies join each task's section
        from harness.tuning.report import tuning_section

        extras = tuning_section(loaded, storage_url)
    settings = loaded.experiment.report
    paths = build_report(loaded.name, tracker, loaded.report_dir, experiment_file=str(loaded.path),
                         task_extras=extras, correction=settings.correction, reference_cell=settings.reference_cell,
                         horizon_fraction=settings.memory_horizon_fraction)
    log_comparison(tracker, paths)  # the verdict in MLflow too, as the experiment's comparison run
    return paths
