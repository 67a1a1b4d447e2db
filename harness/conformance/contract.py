"""The cell contract as plain checks: the promises every recurrent cell keeps, runnable without pytest.

:class:`ContractChecks` holds one method per promise, each taking a :class:`CellSpec`; a failed
promise raises AssertionError, one that does not apply raises :class:`unittest.SkipTest`.
:mod:`harness.conformance.pytest_contract` runs them as pytest tests (``CellContract``), and
:mod:`harness.conformance.runner` runs them without pytest for ``harness conformance``.
"""

from __future__ import annotations

import os
import re
import sys
import unittest
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from harness.core.cells import CellConfig, RecurrentCell
from harness.fused import kernel_for
from harness.core.registry import Registry
from harness.networks.stack import RecurrentStack

_FLOAT64_TOLERANCE = dict(rtol=1e-10, atol=1e-12)  # float64: only summation order may differ
_FAST_PATH_TOLERANCE = dict(rtol=1e-5, atol=1e-6)  # float32: torch.nn kernels vs the time loop

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Parameter:
    """One argument a check runs over, e.g. ``bidirectional`` in (False, True) with ids uni, bi."""

    name: str
    values: tuple[Any, ...]
    ids: tuple[str, ...]


def parametrize(name: str, values: list[Any], ids: list[str]) -> Callable[[F], F]:
    """Run a check once per value (pytest's ``parametrize``, recorded for both runners)."""

    def mark(check: F) -> F:
        check.contract_parameters = (*getattr(check, "contract_parameters", ()),  # type: ignore[attr-defined]
                                     Parameter(name, tuple(values), tuple(ids)))
        return check

    return mark


def skip(reason: str) -> None:
    """This check does not apply: a pytest skip under pytest (shown at the check), else unittest.SkipTest."""
    pytest = sys.modules.get("pytest")
    if pytest is not None and "PYTEST_CURRENT_TEST" in os.environ:
        pytest.skip(reason)
    raise unittest.SkipTest(reason)


@contextmanager
def raises(kind: type[BaseException], match: str) -> Iterator[None]:
    """Assert that the block raises ``kind`` with a message matching ``match`` (like pytest.raises)."""
    try:
        yield
    except kind as error:
        assert re.search(match, str(error)), f"{kind.__name__} raised, but {str(error)!r} does not match {match!r}"
    else:
        raise AssertionError(f"DID NOT RAISE {kind.__name__}")


@dataclass(frozen=True)
class CellSpec:
    """The cell under test: its class and options, with builders for cells and stacks."""

    name: str
    cell_class: type[RecurrentCell]
    options: dict[str, Any] = field(default_factory=dict)

    def config(self, **overrides: Any) -> CellConfig:
        return self.cell_class.Config(**{**self.options, **overrides})

    def cell(self, input_size: int, hidden_size: int, **overrides: Any) -> RecurrentCell:
        return self.cell_class(input_size, hidden_size, self.config(**overrides))

    def stack(
        self, input_size: int, hidden_size: int, *, initial_state: str = "zeros", **options: Any
    ) -> RecurrentStack:
        config = self.config(initial_state=initial_state)
        return RecurrentStack(self.cell_class, input_size, hidden_size, config=config, **options)


class ContractChecks:
    """The promises, one check each (sizes are tiny; numerics run in float64).

    Registered with a strict Config; the state is a tuple of (B, H) tensors with the output
    first; zero or learned (trainable) initial state; ``param_count`` is exact;
    ``project_inputs`` can be hoisted out of the time loop; gradcheck passes; padding never
    leaks; seeds reproduce; state_dict round-trips; carrying the final state across segments
    equals one long run; the torch.nn fast path and the fused kernel, if any, match the
    reference loop. The methods are named ``test_*`` so that pytest collects them on
    :class:`harness.conformance.pytest_contract.CellContract`; the arguments are what pytest's fixtures give.
    """

    # -- registration and configuration ---------------------------------------------------

    def test_registered_with_strict_config(
        self, cell_under_test: tuple[str, dict[str, Any]], cell_registry: Registry[type]
    ) -> None:
        name, options = cell_under_test
        assert name in cell_registry, f"cell {name!r} is not registered by any loaded plugin"
        cell_class = cell_registry.get(name)
        assert issubclass(cell_class, RecurrentCell)
        assert cell_class.name == name
        assert issubclass(cell_class.Config, CellConfig)
        cell_class.Config(**options)
        with raises(ValueError, match="no_such_option"):
            cell_class.Config(**options, no_such_option=1)
        assert isinstance(cell_class.gate_count, int) and cell_class.gate_count >= 1
        assert len(cell_class.state_names) >= 1 and all(isinstance(s, str) for s in cell_class.state_names)

    # -- the single state interface --------------------------------------------------------

    def test_step_interface(self, cell_spec: CellSpec) -> None:
        batch, steps, inputs, hidden = 2, 4, 3, 5
        cell = cell_spec.cell(inputs, hidden).double()
        count = len(cell_spec.cell_class.state_names)
        x = torch.randn(batch, steps, inputs, dtype=torch.float64)
        projected = cell.project_inputs(x)
        assert projected.shape == (batch, steps, cell_spec.cell_class.gate_count * hidden)
        state = tuple(torch.randn(batch, hidden, dtype=torch.float64) for _ in range(count))
        before = tuple(s.clone() for s in state)
        new_state = cell.step(projected[:, 0], state)
        assert isinstance(new_state, tuple) and len(new_state) == count
        for tensor in new_state:
            assert tensor.shape == (batch, hidden) and tensor.dtype == torch.float64
            assert torch.isfinite(tensor).all()
        assert all(torch.equal(a, b) for a, b in zip(state, before)), "step modified its input state in place"
        for k in range(count):  # every state tensor feeds the next state
            nudged = tuple(s + 0.5 if i == k else s for i, s in enumerate(state))
            changed = cell.step(projected[:, 0], nudged)
            moved = any(not torch.allclose(a, b) for a, b in zip(changed, new_state))
            assert moved, f"state[{k}] does not affect the next state"

    def test_stack_outputs_are_state_zero(self, cell_spec: CellSpec) -> None:
        stack = cell_spec.stack(3, 4, implementation="reference").double()
        cell = stack.layers[0][0]
        x = torch.randn(2, 4, 3, dtype=torch.float64)
        outputs, final = stack(x)
        projected, state = cell.project_inputs(x), cell.initial_state(2)
        for t in range(x.shape[1]):
            state = cell.step(projected[:, t], state)
            torch.testing.assert_close(outputs[:, t], state[0], **_FLOAT64_TOLERANCE)
        assert len(final) == len(cell_spec.cell_class.state_names)
        for part, expected in zip(final, state):
            assert part.shape == (1, 2, 4)
            torch.testing.assert_close(part[0], expected, **_FLOAT64_TOLERANCE)

    def test_initial_state_defaults_to_zeros(self, cell_spec: CellSpec) -> None:
        cell = cell_spec.cell(3, 4)
        state = cell.initial_state(2)
        assert isinstance(state, tuple) and len(state) == len(cell_spec.cell_class.state_names)
        for tensor in state:
            assert tensor.shape == (2, 4)
            assert torch.equal(tensor, torch.zeros(2, 4))

    def test_learned_initial_state_is_a_parameter_with_gradient(self, cell_spec: CellSpec) -> None:
        plain = {n for n, _ in cell_spec.cell(3, 4).named_parameters()}
        stack = cell_spec.stack(3, 4, initial_state="learned", implementation="reference").double()
        learned = [(n, p) for n, p in stack.layers[0][0].named_parameters() if n not in plain]
        assert learned, "initial_state='learned' added no parameters"
        with torch.no_grad():
            for _, parameter in learned:
                parameter.normal_()
        x = torch.randn(2, 4, 3, dtype=torch.float64)
        outputs, _ = stack(x)
        zeros = tuple(torch.zeros_like(s) for s in stack.initial_state(2))
        assert not torch.allclose(outputs, stack(x, initial_state=zeros)[0]), "learned initial state is not used"
        for row in stack.initial_state(2):
            assert torch.equal(row[:, 0], row[:, 1]), "the learned initial state differs between sequences"
        (outputs * torch.randn_like(outputs)).sum().backward()
        for name, parameter in learned:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, f"{name} got no gradient"

    def test_param_count_matches_instance(self, cell_spec: CellSpec) -> None:
        for input_size, hidden_size in ((3, 4), (5, 2)):
            for initial_state in ("zeros", "learned"):
                config = cell_spec.config(initial_state=initial_state)
                cell = cell_spec.cell_class(input_size, hidden_size, config)
                real = sum(p.numel() for p in cell.parameters())
                claimed = cell_spec.cell_class.param_count(input_size, hidden_size, config)
                call = f"param_count({input_size}, {hidden_size}, initial_state={initial_state!r})"
                assert claimed == real, f"{call} = {claimed}, but an instance has {real} parameters"

    # -- numerics --------------------------------------------------------------------------

    def test_input_projection_can_be_hoisted(self, cell_spec: CellSpec) -> None:
        cell = cell_spec.cell(3, 4).double()
        x = torch.randn(2, 5, 3, dtype=torch.float64)
        whole = cell.project_inputs(x)
        per_step = torch.cat([cell.project_inputs(x[:, t : t + 1]) for t in range(x.shape[1])], dim=1)
        torch.testing.assert_close(whole, per_step, rtol=1e-12, atol=1e-14)
        changed = x.clone()
        changed[:, 2] += 1.0
        moved = cell.project_inputs(changed)
        torch.testing.assert_close(moved[:, [0, 1, 3, 4]], whole[:, [0, 1, 3, 4]], rtol=1e-12, atol=1e-14)
        assert not torch.allclose(moved[:, 2], whole[:, 2])

    @parametrize("bidirectional", [False, True], ids=["uni", "bi"])
    def test_gradcheck(self, cell_spec: CellSpec, bidirectional: bool) -> None:
        stack = cell_spec.stack(2, 3, bidirectional=bidirectional, implementation="reference").double()
        x = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
        lengths = torch.tensor([3, 2])
        shape = (stack.num_directions, 2, 3)
        states = len(cell_spec.cell_class.state_names)
        h0 = [torch.randn(shape, dtype=torch.float64).mul(0.5).requires_grad_() for _ in range(states)]

        def run(x: Tensor, *h0: Tensor) -> tuple[Tensor, ...]:
            outputs, final = stack(x, lengths, tuple(h0))
            return (outputs, *final)

        assert torch.autograd.gradcheck(run, (x, *h0), eps=1e-6, atol=1e-6, rtol=1e-4)

    @parametrize("bidirectional", [False, True], ids=["uni", "bi"])
    def test_padding_invariance(self, cell_spec: CellSpec, bidirectional: bool) -> None:
        stack = cell_spec.stack(3, 4, num_layers=2, bidirectional=bidirectional, implementation="reference").double()
        lengths = [5, 2, 4]
        x = torch.randn(3, 5, 3, dtype=torch.float64)
        for b, length in enumerate(lengths):
            x[b, length:] = 100.0 * torch.randn(5 - length, 3, dtype=torch.float64)  # garbage must not leak
        outputs, final = stack(x, torch.tensor(lengths))
        assert outputs.shape == (3, 5, stack.output_size)
        for b, length in enumerate(lengths):
            alone, alone_final = stack(x[b : b + 1, :length])
            torch.testing.assert_close(outputs[b, :length], alone[0], **_FLOAT64_TOLERANCE)
            assert torch.equal(outputs[b, length:], torch.zeros_like(outputs[b, length:])), "padding is not zero"
            for part, alone_part in zip(final, alone_final):
                torch.testing.assert_close(part[:, b], alone_part[:, 0], **_FLOAT64_TOLERANCE)

    def test_same_seed_same_model_other_seed_differs(self, cell_spec: CellSpec) -> None:
        def build(seed: int) -> RecurrentStack:
            torch.manual_seed(seed)
            return cell_spec.stack(3, 4, num_layers=2, bidirectional=True)

        first, again, other = build(7), build(7), build(8)
        x = torch.randn(2, 5, 3)
        same = first.state_dict()
        assert all(torch.equal(v, again.state_dict()[k]) for k, v in same.items())
        assert torch.equal(first(x)[0], again(x)[0])
        assert any(not torch.equal(v, other.state_dict()[k]) for k, v in same.items()), "seed is ignored"
        assert not torch.allclose(first(x)[0], other(x)[0])

    def test_state_dict_round_trip(self, cell_spec: CellSpec, tmp_path: Path) -> None:
        stack = cell_spec.stack(3, 4, num_layers=2, bidirectional=True, initial_state="learned")
        _perturb(stack)  # so a learned initial state (zeros at first) round-trips real values
        path = tmp_path / f"{cell_spec.name}.pt"
        torch.save(stack.state_dict(), path)
        torch.manual_seed(1234)
        restored = cell_spec.stack(3, 4, num_layers=2, bidirectional=True, initial_state="learned")
        restored.load_state_dict(torch.load(path, weights_only=True))
        x, lengths = torch.randn(3, 5, 3), torch.tensor([5, 3, 1])
        (outputs, final), (outputs2, final2) = stack(x, lengths), restored(x, lengths)
        assert torch.equal(outputs, outputs2)
        assert all(torch.equal(a, b) for a, b in zip(final, final2))

    @parametrize("implementation", ["reference", "auto"], ids=["reference", "auto"])
    def test_state_carry_equals_whole_sequence(self, cell_spec: CellSpec, implementation: str) -> None:
        # Truncated BPTT runs a sequence in segments, feeding each final state to the next.
        stack = cell_spec.stack(3, 4, num_layers=2, implementation=implementation).double()
        x = torch.randn(2, 6, 3, dtype=torch.float64)
        whole, whole_final = stack(x)
        first, first_final = stack(x[:, :3])
        second, second_final = stack(x[:, 3:], initial_state=first_final)
        torch.testing.assert_close(torch.cat([first, second], dim=1), whole, **_FLOAT64_TOLERANCE)
        for part, expected in zip(second_final, whole_final):
            torch.testing.assert_close(part, expected, **_FLOAT64_TOLERANCE)

    def test_torch_fast_path_matches_reference(self, cell_spec: CellSpec) -> None:
        if cell_spec.cell(3, 4).torch_equivalent() is None:
            reason = f"{cell_spec.name} {cell_spec.options} has no torch.nn equivalent: it runs fused or on the loop"
            skip(reason)
        options = dict(num_layers=2, bidirectional=True, initial_state="learned")
        reference = cell_spec.stack(3, 4, implementation="reference", **options)
        _perturb(reference)
        fast = cell_spec.stack(3, 4, implementation="torch", **options)
        fast.load_state_dict(reference.state_dict())
        assert fast.execution_path() != "reference"
        x, lengths = torch.randn(3, 5, 3), torch.tensor([5, 2, 4])
        runs = [_forward_backward(stack, x, lengths) for stack in (reference, fast)]
        for (name, expected), actual in zip(runs[0].items(), runs[1].values()):
            torch.testing.assert_close(actual, expected, **_FAST_PATH_TOLERANCE, msg=lambda m, n=name: f"{n}: {m}")

    def test_fused_path_matches_reference(self, cell_spec: CellSpec) -> None:
        if kernel_for(cell_spec.cell(3, 4)) is None:
            reason = f"{cell_spec.name} {cell_spec.options} has no fused kernel; the reference loop is its path"
            skip(reason)
        options = dict(num_layers=2, bidirectional=True, initial_state="learned")
        x, lengths = torch.randn(3, 5, 3), torch.tensor([4, 2, 3])  # padded, and shorter than T
        for dtype, tolerance in ((torch.float64, _FLOAT64_TOLERANCE), (torch.float32, _FAST_PATH_TOLERANCE)):
            reference = cell_spec.stack(3, 4, implementation="reference", **options).to(dtype)
            _perturb(reference)
            fused = cell_spec.stack(3, 4, implementation="fused", **options).to(dtype)
            fused.load_state_dict(reference.state_dict())
            assert fused.execution_path() == "fused"
            runs = [_forward_backward(stack, x.to(dtype), lengths) for stack in (reference, fused)]
            for (name, expected), actual in zip(runs[0].items(), runs[1].values()):
                torch.testing.assert_close(actual, expected, **tolerance,
                                           msg=lambda m, n=name, d=dtype: f"{n} ({d}): {m}")



def _perturb(module: nn.Module, scale: float = 0.3) -> None:
    """Move every parameter off its initial value (learned initial states start at zero)."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn_like(parameter))


def _forward_backward(stack: RecurrentStack, x: Tensor, lengths: Tensor) -> dict[str, Tensor]:
    """Outputs, final state and every gradient of a fixed random loss, keyed by name."""
    x = x.clone().requires_grad_()
    outputs, final = stack(x, lengths)
    generator = torch.Generator().manual_seed(99)
    weights = [torch.randn(t.shape, generator=generator) for t in (outputs, *final)]
    loss = sum((t * w).sum() for t, w in zip((outputs, *final), weights))
    stack.zero_grad()
    loss.backward()
    results = {"outputs": outputs.detach(), "input gradient": x.grad}
    results.update({f"final {i}": part.detach() for i, part in enumerate(final)})
    results.update({f"gradient of {n}": p.grad for n, p in stack.named_parameters()})
    return results
