"""What the commands do, as functions a script or notebook can call: :func:`run_experiment` trains a
grid and writes its report (``harness run``), :func:`write_report` rebuilds a report."""

from harness.workflows.experiment import ExperimentOutcome, run_experiment
from harness.workflows.report import write_report

__all__ = ["ExperimentOutcome", "run_experiment", "write_report"]
