"""The conformance contract on every built-in cell and option variant, and checks that the
contract itself catches broken cells (so a green run means something)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from harness.conformance.pytest_contract import ENV_CELLS, ENV_OPTIONS, CellContract, run_conformance
from harness.core.loading import load_plugins

CELL_CASES = [
    pytest.param(("vanilla", {"activation": "tanh"}), id="vanilla-tanh"),
    pytest.param(("vanilla", {"activation": "relu"}), id="vanilla-relu"),
    pytest.param(("gru_simple", {}), id="gru_simple"),
    pytest.param(("gru", {"reset": "before"}), id="gru-reset_before"),
    pytest.param(("gru", {"reset": "after"}), id="gru-reset_after"),
    pytest.param(("lstm", {"forget_bias": 0.0}), id="lstm-forget_bias_0"),
    pytest.param(("lstm", {"forget_bias": 1.0}), id="lstm-forget_bias_1"),
    pytest.param(("peephole_lstm", {"variant": "notes"}), id="peephole_lstm-notes"),
    pytest.param(("peephole_lstm", {"variant": "gers"}), id="peephole_lstm-gers"),
]


class TestBuiltinCells(CellContract):
    @pytest.fixture(params=CELL_CASES)
    def cell_under_test(self, request: pytest.FixtureRequest) -> tuple[str, dict]:
        return request.param


def test_every_builtin_cell_is_covered() -> None:
    covered = {case.values[0][0] for case in CELL_CASES}
    assert covered == set(load_plugins(autoload=False).cells.names())


# -- the contract can fail -------------------------------------------------------------------

# Each cell breaks exactly one promise; the nested run must fail exactly those tests.
BROKEN_CELLS = '''
import dataclasses

import torch
from torch import nn
from harness.core.cells import CellConfig, RecurrentCell
from harness.conformance import CellContract
from harness.core.registry import Registry
from harness.plugins.cells.vanilla import VanillaCell, VanillaConfig


class Miscounted(VanillaCell):
    name = "miscounted"

    @classmethod
    def param_count(cls, input_size, hidden_size, config=None):
        return super().param_count(input_size, hidden_size, config) + 1


class BatchMixing(VanillaCell):
    name = "batch_mixing"

    def torch_equivalent(self):
        return None

    def step(self, projected, state):
        (a,) = super().step(projected, state)
        return (a + 0.1 * state[0].mean(dim=0),)  # sequences leak into each other


class Unsaved(VanillaCell):
    name = "unsaved"

    def __init__(self, input_size, hidden_size, config=None):
        super().__init__(input_size, hidden_size, config)
        self.register_buffer("scale", torch.rand(hidden_size) + 0.5, persistent=False)

    def torch_equivalent(self):
        return None

    def step(self, projected, state):
        return (torch.tanh(self.scale * (projected + state[0] @ self.weight_a.T)),)


class TimeMixing(VanillaCell):
    name = "time_mixing"

    def torch_equivalent(self):
        return None

    def project_inputs(self, inputs):
        return super().project_inputs(inputs).cumsum(dim=1)


class _WrongTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.tanh(x)

    @staticmethod
    def backward(ctx, grad):
        return grad  # forgot the 1 - tanh^2 factor


class WrongBackward(VanillaCell):
    name = "wrong_backward"

    def torch_equivalent(self):
        return None

    def step(self, projected, state):
        return (_WrongTanh.apply(projected + state[0] @ self.weight_a.T),)


class WrongEquivalent(VanillaCell):
    name = "wrong_equivalent"

    def torch_equivalent(self):
        return dataclasses.replace(super().torch_equivalent(), mode="RNN_RELU")  # the step uses tanh


class LooseConfig(CellConfig):
    model_config = dict(extra="allow", frozen=True)
    activation: str = "tanh"


class AcceptsAnything(VanillaCell):
    name = "accepts_anything"
    Config = LooseConfig


class TestBroken(CellContract):
    @pytest.fixture(params=["miscounted", "batch_mixing", "unsaved", "time_mixing", "wrong_backward",
                            "wrong_equivalent", "accepts_anything"])
    def cell_under_test(self, request):
        return request.param, {}

    @pytest.fixture
    def cell_registry(self):
        registry = Registry("cell", RecurrentCell)
        for cell in (Miscounted, BatchMixing, Unsaved, TimeMixing, WrongBackward, WrongEquivalent,
                     AcceptsAnything):
            registry.add(cell, plugin="broken")
        return registry
'''

EXPECTED_FAILURES = {
    ("miscounted", "test_param_count_matches_instance"),
    ("batch_mixing", "test_padding_invariance[uni]"),
    ("batch_mixing", "test_padding_invariance[bi]"),
    ("unsaved", "test_state_dict_round_trip"),
    ("time_mixing", "test_input_projection_can_be_hoisted"),
    ("time_mixing", "test_state_carry_equals_whole_sequence[reference]"),
    ("time_mixing", "test_state_carry_equals_whole_sequence[auto]"),
    ("wrong_backward", "test_gradcheck[uni]"),
    ("wrong_backward", "test_gradcheck[bi]"),
    ("wrong_equivalent", "test_torch_fast_path_matches_reference"),
    ("accepts_anything", "test_registered_with_strict_config"),
}


class _Outcomes:
    """A pytest plugin recording (cell, test) for every failed test of a nested run."""

    def __init__(self) -> None:
        self.failed: set[tuple[str, str]] = set()
        self.passed = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        test = report.nodeid.rsplit("::", 1)[1]  # e.g. test_gradcheck[wrong_backward-uni]
        name, _, params = test.partition("[")
        cell, _, rest = params.rstrip("]").partition("-")
        key = (cell, f"{name}[{rest}]" if rest else name)
        if report.failed:
            self.failed.add(key)
        elif report.passed and report.when == "call":
            self.passed += 1


def test_contract_fails_exactly_the_broken_promises(tmp_path: Path) -> None:
    module = tmp_path / "test_broken_cells_contract.py"
    module.write_text("import pytest\n" + textwrap.dedent(BROKEN_CELLS))
    outcomes = _Outcomes()
    code = pytest.main(
        [str(module), "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir", str(tmp_path), "-q", "-s"],
        plugins=[outcomes],
    )
    assert code == pytest.ExitCode.TESTS_FAILED
    assert outcomes.failed == EXPECTED_FAILURES
    assert outcomes.passed > 50  # the rest of the contract still passes on these cells


def test_run_conformance_passes_a_builtin_and_restores_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ENV_CELLS, raising=False)
    monkeypatch.delenv(ENV_OPTIONS, raising=False)
    assert run_conformance(["vanilla"], {"activation": "relu"}) == 0
    assert ENV_CELLS not in os.environ and ENV_OPTIONS not in os.environ
    report = capsys.readouterr().out
    assert "test_padding_invariance[vanilla-activation=relu-bi]" in report  # the contract really ran
    assert " 17 passed" in report and "skipped" not in report


def test_run_conformance_fails_on_options_the_cell_rejects() -> None:
    assert run_conformance(["gru"], {"reset": "sideways"}) == pytest.ExitCode.TESTS_FAILED


def test_run_conformance_needs_a_cell() -> None:
    with pytest.raises(ValueError, match="at least one cell"):
        run_conformance([], {})


def test_the_contract_runs_without_pytest_with_the_same_checks(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.conformance.runner import run_conformance as run_directly

    assert run_directly(["vanilla"], {"activation": "relu"}, use_pytest=False) == 0
    report = capsys.readouterr().out
    assert "::test_padding_invariance[vanilla-activation=relu-bi] PASSED" in report
    assert report.strip().splitlines()[-1].startswith("======== 17 passed in ")  # as many as under pytest
    assert run_directly(["gru"], {"reset": "sideways"}, use_pytest=False) == 1  # options the cell rejects
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 17 and all("reset" in line or "ValidationError" in line for line in failed)

