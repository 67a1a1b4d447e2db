"""A plugin-based benchmarking harness for recurrent sequence models.

The public API, for plugin authors and notebooks; everything else is internal:

* writing plugins: :data:`hookimpl`, :class:`RecurrentCell`, :class:`CellConfig`, :class:`Task`,
  :class:`TaskConfig`, and what a task's ``load`` returns (:class:`TaskData` of :class:`Example`,
  with :class:`Vocabulary`); the cell contract for a plugin's tests is ``harness.conformance.CellContract``;
* using results: :func:`run_experiment` (``harness run`` as a function) and :func:`load`
  (an experiment's runs as a pandas DataFrame).

The package is layered (``harness.cli`` on top, ``harness.core`` at the bottom; see
docs/architecture.md). Modules of the old flat layout (``harness.cells``, ``harness.tasks``,
``harness.textdata``, …) still import for one release, with a DeprecationWarning naming the new path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.core.hookspecs import hookimpl
from harness.core.moved_modules import install as _install_moved_modules

if TYPE_CHECKING:
    from harness.core.cells import CellConfig, RecurrentCell
    from harness.core.tasks import Example, Task, TaskConfig, TaskData
    from harness.core.vocab import Vocabulary
    from harness.reports.results import load
    from harness.workflows.experiment import run_experiment

__version__ = "0.1.0"
__all__ = ["CellConfig", "Example", "RecurrentCell", "Task", "TaskConfig", "TaskData", "Vocabulary", "__version__",
           "hookimpl", "load", "run_experiment"]

# Imported on first use, so that `import harness` (and `harness status`) stays free of torch and MLflow.
_LAZY = {
    "CellConfig": "harness.core.cells",
    "RecurrentCell": "harness.core.cells",
    "Task": "harness.core.tasks",
    "TaskConfig": "harness.core.tasks",
    "Example": "harness.core.tasks",
    "TaskData": "harness.core.tasks",
    "Vocabulary": "harness.core.vocab",
    "load": "harness.reports.results",
    "run_experiment": "harness.workflows.experiment",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'harness' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


_install_moved_modules()
