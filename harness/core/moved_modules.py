"""The old flat layout's module names (``harness.cells``, ``harness.textdata``, …), kept importing for
one release: each resolves to the module's new home, with a DeprecationWarning that names it.

A meta-path finder rather than forwarding files: one table, nothing to keep in step, and the old
name gives the very same module object (so ``isinstance`` checks and monkeypatching still agree).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

#: Old module (under ``harness.``) → its new home. Names that are now packages themselves
#: (``harness.data``, ``harness.tuning``, ``harness.conformance``) are not in it: they import as
#: the packages, and ``harness.conformance.CellContract`` still works.
MOVED = {
    "cells": "harness.core.cells", "tasks": "harness.core.tasks", "hookspecs": "harness.core.hookspecs",
    "registry": "harness.core.registry", "errors": "harness.core.errors", "schema": "harness.core.schema",
    "vocab": "harness.core.vocab", "limits": "harness.core.limits", "plugin_options": "harness.core.plugin_options",
    "file_hash": "harness.core.file_hash", "safe_files": "harness.core.safe_files",
    "stack": "harness.networks.stack", "models": "harness.networks.models",
    "datasets": "harness.data.datasets", "textdata": "harness.data.reading", "midi": "harness.data.midi",
    "data_fetch": "harness.data.fetch",
    "streams": "harness.training.streams", "decoding": "harness.training.decoding",
    "sampling": "harness.training.sampling", "scoring": "harness.training.scoring",
    "families": "harness.training.families", "checkpoints": "harness.training.checkpoints",
    "config": "harness.experiment", "tracking": "harness.runs.tracking", "runner": "harness.runs.runner",
    "results": "harness.reports.results", "statistics": "harness.reports.statistics",
    "cell_contract": "harness.conformance.contract",
}


class _MovedModuleLoader(importlib.abc.Loader):
    def __init__(self, new_name: str) -> None:
        self.new_name = new_name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(f"{spec.name} has moved to {self.new_name}; import it from there "
                      "(the old name goes in the next release)", DeprecationWarning, stacklevel=2)
        return importlib.import_module(self.new_name)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the new module is already imported."""


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        prefix, _, old = fullname.partition(".")
        if prefix != "harness" or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedModuleLoader(MOVED[old]))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (after the normal finders: real modules win)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
