"""Difficulty sweeps: the MLflow tags that place a run in its task's sweep, and reading them back.

The variants themselves are made while the experiment file is resolved (``harness.experiment.resolve``):
``{name: agreement, sweep: {max_distance: [10, 50]}}`` becomes ``agreement[max_distance=10]`` and
``agreement[max_distance=50]``, each a task of the grid with its own runs and run keys.
"""

from __future__ import annotations

import json
from harness.experiment import SweepPoint
from harness.runs.tracking import RunRecord

#: MLflow tags of a swept run (absent on runs of tasks that are not swept).
SWEEP_TASK_TAG, SWEEP_OPTION_TAG, SWEEP_VALUE_TAG, SWEEP_POSITION_TAG = (
    "sweep_task", "sweep_option", "sweep_value", "sweep_position")


def sweep_tags(point: SweepPoint | None) -> dict[str, str]:
    """The tags of a run of a swept task variant; the value as JSON, so 50 and "50" stay apart."""
    if point is None:
        return {}
    return {SWEEP_TASK_TAG: point.task, SWEEP_OPTION_TAG: point.option, SWEEP_VALUE_TAG: json.dumps(point.value),
            SWEEP_POSITION_TAG: str(point.position)}


def sweep_point(record: RunRecord) -> SweepPoint | None:
    """The SweepPoint a run's tags record, or None for a run of an unswept task."""
    task = record.tag(SWEEP_TASK_TAG)
    if not task:
        return None
    return SweepPoint(task, record.tag(SWEEP_OPTION_TAG), json.loads(record.tag(SWEEP_VALUE_TAG)),
                      int(record.tag(SWEEP_POSITION_TAG, "0")))
