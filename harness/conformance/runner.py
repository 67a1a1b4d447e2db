"""``harness conformance``: run the cell contract through pytest when it is installed, else directly.

A plain ``pip install rnn-harness`` has no pytest, so the checks of
:mod:`harness.conformance.contract` also run here without it: same checks, same test ids, one line
each and a summary; exit code 0 when every check passes (or does not apply), 1 otherwise.
"""

from __future__ import annotations

import inspect
import itertools
import json
import os
import tempfile
import time
import traceback
import unittest
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

#: Comma-separated cell names for ``TestConformance`` (set by :func:`run_conformance`).
ENV_CELLS = "HARNESS_CONFORMANCE_CELLS"
#: A JSON object of cell options applied to every cell in ``ENV_CELLS``.
ENV_OPTIONS = "HARNESS_CONFORMANCE_OPTIONS"
#: The extra that installs pytest for ``CellContract`` subclasses in a plugin's own tests.
CONFORMANCE_EXTRA = 'pip install "rnn-harness[conformance]"'


def run_conformance(cell_names: list[str], options: dict[str, Any], *, use_pytest: bool | None = None) -> int:
    """Run the contract on ``cell_names`` (each with ``options``); 0 when all pass, 1 when any fails.

    With pytest installed (or ``use_pytest=True``) the tests run in this process through
    ``pytest.main`` on :mod:`harness.conformance.pytest_contract`, isolated from any surrounding project's
    pytest configuration and conftest files; without it, :func:`run_checks` runs them.
    """
    if not cell_names:
        raise ValueError("run_conformance needs at least one cell name")
    if use_pytest is None:
        use_pytest = _pytest_importable()
    if not use_pytest:
        print(f"pytest is not installed: running the contract's checks directly ({CONFORMANCE_EXTRA} "
              "adds pytest's detailed assertion messages)")
        return run_checks(cell_names, options)
    import pytest

    module = Path(__file__).resolve().with_name("pytest_contract.py")
    args = [
        str(module), "-p", "no:cacheprovider", "-c", os.devnull,
        "--rootdir", str(module.parent.parent), "--confcutdir", str(module.parent), "-v", "-ra",
    ]  # fmt: skip
    with _environment({ENV_CELLS: ",".join(cell_names), ENV_OPTIONS: json.dumps(options)}):
        return int(pytest.main(args))


def _pytest_importable() -> bool:
    try:
        import pytest  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Outcome:
    """One check on one cell and parameter combination."""

    test_id: str
    status: str  # PASSED, FAILED or SKIPPED
    detail: str = ""


def run_checks(cell_names: list[str], options: dict[str, Any],
               say: Callable[[str], None] = print) -> int:
    """Every check of :class:`~harness.conformance.contract.ContractChecks` on each cell, without pytest."""
    from harness.conformance.contract import ContractChecks
    from harness.core.loading import load_plugins

    registry = load_plugins().cells
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    suffix = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    for name in cell_names:
        cell_id = f"{name}-{suffix}" if suffix else name
        for check_name, check in _checks(ContractChecks):
            for values, ids in _combinations(check):
                test_id = f"{_NODE}::{check_name}[{'-'.join([cell_id, *ids])}]"
                outcome = _run_one(ContractChecks(), check, test_id, name, options, registry, values)
                say(f"{outcome.test_id} {outcome.status}")
                if outcome.status == "FAILED":
                    say(outcome.detail.rstrip())
                outcomes.append(outcome)
    return _summarise(outcomes, time.perf_counter() - started, say)


_NODE = "harness/conformance/contract.py::ContractChecks"


def _checks(checks_class: type) -> Iterator[tuple[str, Callable[..., None]]]:
    """The ``test_*`` methods in the order they are written."""
    for name, member in vars(checks_class).items():
        if name.startswith("test_") and callable(member):
            yield name, member


def _combinations(check: Callable[..., None]) -> Iterator[tuple[dict[str, Any], list[str]]]:
    """``({argument: value}, [id, ...])`` for every combination of the check's parameters."""
    parameters = getattr(check, "contract_parameters", ())
    if not parameters:
        yield {}, []
        return
    for chosen in itertools.product(*(range(len(p.values)) for p in parameters)):
        values = {p.name: p.values[i] for p, i in zip(parameters, chosen)}
        yield values, [p.ids[i] for p, i in zip(parameters, chosen)]


def _run_one(checks: Any, check: Callable[..., None], test_id: str, name: str, options: dict[str, Any],
             registry: Any, values: dict[str, Any]) -> Outcome:
    from harness.conformance.contract import CellSpec

    wanted = inspect.signature(check).parameters
    with tempfile.TemporaryDirectory(prefix="harness-conformance-") as temporary, torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # every check starts from the same seed, as under pytest
        try:
            arguments: dict[str, Any] = dict(values)
            if "cell_under_test" in wanted:
                arguments["cell_under_test"] = (name, dict(options))
            if "cell_registry" in wanted:
                arguments["cell_registry"] = registry
            if "cell_spec" in wanted:
                arguments["cell_spec"] = CellSpec(name, registry.get(name), dict(options))
            if "tmp_path" in wanted:
                arguments["tmp_path"] = Path(temporary)
            check(checks, **arguments)
        except unittest.SkipTest as skipped:
            return Outcome(test_id, "SKIPPED", str(skipped))
        except Exception as error:  # noqa: BLE001 - a failing check is reported, the rest still run
            detail = "".join(traceback.format_exception(error))
            return Outcome(test_id, "FAILED", detail)
    return Outcome(test_id, "PASSED")


def _summarise(outcomes: list[Outcome], seconds: float, say: Callable[[str], None]) -> int:
    counts = {status: sum(o.status == status for o in outcomes) for status in ("FAILED", "PASSED", "SKIPPED")}
    for outcome in outcomes:
        if outcome.status == "SKIPPED":
            say(f"SKIPPED {outcome.test_id}: {outcome.detail}")
        elif outcome.status == "FAILED":
            last = outcome.detail.strip().splitlines()[-1]
            say(f"FAILED {outcome.test_id} - {last}")
    shown = ", ".join(f"{n} {status.lower()}" for status, n in counts.items() if n)
    say(f"======== {shown} in {seconds:.2f}s ========")
    return 1 if counts["FAILED"] else 0


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for a block, restoring the previous values after."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
