"""The cell conformance kit as pytest tests: subclass :class:`CellContract` in your own test suite.

The promises themselves are plain checks in :mod:`harness.conformance.contract` (shared state
interface, parameter counting, input hoisting, gradients, padding, seeding, state_dict round
trips, state carry and the two fast paths). This module gives them pytest fixtures and
parameters; ``harness conformance CELL`` runs the same checks with or without pytest
(:mod:`harness.conformance.runner`). It does not check a cell's equations: that is each
cell's own test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any, ClassVar

try:
    import pytest
except ModuleNotFoundError as missing:  # `harness conformance CELL` needs no pytest; this class does
    raise ModuleNotFoundError(
        "harness.conformance.pytest_contract.CellContract runs under pytest, which is not installed: "
        'pip install "rnn-harness[conformance]" (or run `harness conformance CELL`, which needs no pytest)',
        name="pytest",
    ) from missing
import torch

from harness.conformance.contract import CellSpec, ContractChecks
from harness.conformance.runner import ENV_CELLS, ENV_OPTIONS, run_conformance
from harness.core.registry import Registry

__all__ = ["CellContract", "CellSpec", "run_conformance", "ENV_CELLS", "ENV_OPTIONS"]

# The checks record their parameters (bidirectional, implementation); pytest reads marks.
for _check in vars(ContractChecks).values():
    for _parameter in getattr(_check, "contract_parameters", ()):
        pytest.mark.parametrize(_parameter.name, list(_parameter.values), ids=list(_parameter.ids))(_check)


class CellContract(ContractChecks):
    """Subclass in a test module to run the contract on a cell.

    Set ``cell_name`` (and optionally ``cell_options``), or override the
    ``cell_under_test`` fixture with a parametrized one returning ``(name, options)``
    to cover several cells or configurations from one class. Override
    ``cell_registry`` to test cells that are not installed as plugins.

    The promises, one test each, are those of :class:`harness.conformance.contract.ContractChecks`.

    Example::

        class TestMyCell(CellContract):
            cell_name = "my_cell"
            cell_options = {"activation": "relu"}
    """

    cell_name: ClassVar[str | None] = None
    cell_options: ClassVar[dict[str, Any]] = {}

    @pytest.fixture(autouse=True)
    def _seeded(self) -> Iterator[None]:
        # Every test starts from the same global seed and leaves the caller's RNG alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            yield

    @pytest.fixture
    def cell_under_test(self) -> tuple[str, dict[str, Any]]:
        if self.cell_name is None:
            raise TypeError(f"{type(self).__name__} must set cell_name or override the cell_under_test fixture")
        return self.cell_name, dict(self.cell_options)

    @pytest.fixture
    def cell_registry(self) -> Registry[type]:
        from harness.core.loading import load_plugins

        return load_plugins().cells

    @pytest.fixture
    def cell_spec(self, cell_under_test: tuple[str, dict[str, Any]], cell_registry: Registry[type]) -> CellSpec:
        name, options = cell_under_test
        return CellSpec(name, cell_registry.get(name), dict(options))


class TestConformance(CellContract):
    """The contract on the cells named in ``$HARNESS_CONFORMANCE_CELLS``; skipped without it."""

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "cell_under_test" not in metafunc.fixturenames:
            return
        names = [n.strip() for n in os.environ.get(ENV_CELLS, "").split(",") if n.strip()]
        options = json.loads(os.environ.get(ENV_OPTIONS) or "{}")
        if not names:
            reason = f"set {ENV_CELLS} (or run `harness conformance CELL`) to choose the cells"
            metafunc.parametrize("cell_under_test", [pytest.param(None, marks=pytest.mark.skip(reason=reason))])
            return
        suffix = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
        ids = [f"{name}-{suffix}" if suffix else name for name in names]
        metafunc.parametrize("cell_under_test", [(name, options) for name in names], ids=ids)
