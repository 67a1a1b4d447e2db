"""Hook specifications: the whole contract between the harness and its plugins.

A plugin is a module (or object) with functions decorated by ``harness.hookimpl``
whose names and argument names match the specs below. Built-in cells and tasks are
plugins of exactly this kind, found through the ``harness`` entry-point group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from harness.core.registry import CellRegister, TaskRegister

PROJECT_NAME = "harness"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# ---------------------------------------------------------------------------
# Contribution hooks: called once per plugin while plugins load.
# ---------------------------------------------------------------------------


@hookspec
def register_cells(register: CellRegister) -> None:
    """Register recurrent cell classes.

    Called once per plugin, right after the plugin is loaded and before any
    command runs. The host calls each plugin's implementation separately, so one
    plugin that raises here is reported as broken and the others still load. A
    broken plugin keeps nothing: whatever it registered before the error (cells
    and tasks) is withdrawn, so none of it can run.

    Args:
        register: call ``register(CellClass)`` once per cell. ``CellClass`` must
            subclass :class:`harness.core.cells.RecurrentCell` and set a unique
            ``name``. The host records which plugin supplied it; a name that an
            earlier plugin already registered is refused with an error naming
            both plugins.

    Returns None.
    """


@hookspec
def register_tasks(register: TaskRegister) -> None:
    """Register task classes (data, vocabulary and metrics of one benchmark).

    Called once per plugin, right after the plugin is loaded and before any
    command runs, in the same isolated way as :func:`register_cells`.

    Args:
        register: call ``register(TaskClass)`` once per task. ``TaskClass``
            must set a unique ``name`` and a ``Config`` class; duplicates are
            refused with an error naming both plugins.

    Returns None.
    """
