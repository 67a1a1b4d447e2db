"""A task's data, read and checked once per task name and options, before anything is created.

``harness run`` (:class:`harness.runs.runner.Runner`) and ``harness tune`` read every task of the
file this way first, so a bad or empty data file stops the command with exit 2 naming its file and
line, not run after run; the runs then share what was loaded.
"""

from __future__ import annotations

from harness.core.tasks import Task, TaskData
from harness.experiment import ResolvedChoice, content_hash


def load_task(choice: ResolvedChoice, loaded: dict[str, tuple[Task, TaskData]]) -> tuple[Task, TaskData]:
    """``choice``'s task and its checked data, from ``loaded`` or read now and kept there.

    Raises the task's ``BadInputError`` or ``EmptySplitError`` (exit 2) for a bad or empty data file."""
    key = content_hash({"name": choice.name, "options": choice.options()})
    if key not in loaded:
        task = choice.plugin_class(choice.config)
        data = task.load()
        data.check(choice.name)
        data.check_declared_input_size(choice.plugin_class)
        loaded[key] = (task, data)
    return loaded[key]
