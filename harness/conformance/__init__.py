"""The cell conformance kit: the contract every cell keeps, runnable with or without pytest.

``from harness.conformance import CellContract`` gives the pytest base class for a plugin's own
test suite (it needs the ``conformance`` extra, i.e. pytest); ``harness conformance CELL`` runs
the same checks from the command line without it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CellContract"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `harness conformance` (harness.conformance.runner) works where pytest is absent.
    if name == "CellContract":
        from harness.conformance.pytest_contract import CellContract

        return CellContract
    raise AttributeError(f"module 'harness.conformance' has no attribute {name!r}")
