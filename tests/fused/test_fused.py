"""The fused path (harness.fused) computes the reference loop's function: outputs, final
states and every gradient, for every built-in cell and option variant, uni- and
bidirectional, multi-layer, padded, with given or learned initial states; plus path
selection, the opt-in rules for subclasses and third-party cells, and CUDA when present.

Every test runs twice on the CPU: with the compiled step kernels (harness.fused.native_kernels,
the default where they were built; ``HARNESS_FUSED_NATIVE=1`` makes a missing build an
error here, not a skip) and with the ATen kernels (``HARNESS_FUSED_NATIVE=0``)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.func import functional_call

from harness.core.cells import CellConfig, RecurrentCell, State
from harness.conformance.pytest_contract import CellContract, CellSpec
from harness.fused import FusedKernel, kernel_for
from harness.core.registry import Registry
from harness.networks.stack import RecurrentStack
from harness.plugins.cells.gru_simple import SimpleGRUCell
from recurrence_pairs import (CELL_CASES, LAYOUTS, TOLERANCE, assert_as_close_as_the_reference_in_float32, assert_same,
                              cell_class, forward_backward, make_pair, run_both)



@pytest.fixture(autouse=True, params=["1", "0"], ids=["native-steps", "aten-steps"])
def _cpu_step_kernels(request, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_FUSED_NATIVE", request.param)


# -- the same function --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("layers, bidirectional, lengths, initial", LAYOUTS)
@pytest.mark.parametrize("name, options", CELL_CASES)
def test_fused_equals_reference(name, options, layers, bidirectional, lengths, initial, dtype) -> None:
    expected, actual = run_both(name, options, layers, bidirectional, lengths, initial, dtype)
    assert_same(expected, actual, dtype)
    if lengths is not None:  # padding stays exactly zero
        for b, length in enumerate(lengths):
            assert torch.equal(actual["outputs"][b, length:], torch.zeros_like(actual["outputs"][b, length:]))


@pytest.mark.parametrize("name, options", CELL_CASES)
def test_fused_equals_reference_at_a_realistic_size_in_float32(name, options) -> None:
    assert_as_close_as_the_reference_in_float32(name, options)


@pytest.mark.parametrize("name, options", CELL_CASES)
def test_gradcheck_of_the_fused_path(name, options) -> None:
    cls = cell_class(name)
    stack = RecurrentStack(cls, 2, 3, bidirectional=True, config=cls.Config(**options), implementation="fused")
    stack = stack.double()
    x = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2, 3])
    h0 = [torch.randn(2, 3, 3, dtype=torch.float64).mul(0.5).requires_grad_() for _ in cls.state_names]
    names = [n for n, _ in stack.named_parameters()]

    def run(x: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:  # w.r.t. inputs, h0 and every parameter
        initial, weights = tensors[: len(h0)], tensors[len(h0) :]
        outputs, final = functional_call(stack, dict(zip(names, weights)), (x, lengths, tuple(initial)))
        return (outputs, *final)

    weights = [p.detach().clone().requires_grad_() for p in stack.parameters()]
    assert torch.autograd.gradcheck(run, (x, *h0, *weights), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_fused_forward_without_grad_equals_reference() -> None:
    reference, fused = make_pair("peephole_lstm", {}, 4, 5, num_layers=2, bidirectional=True)
    x, lengths = torch.randn(3, 6, 4), torch.tensor([6, 2, 4])
    with torch.no_grad():
        expected, actual = reference(x, lengths), fused(x, lengths)
    torch.testing.assert_close(actual, expected, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("name, options", CELL_CASES)
def test_backward_can_run_again(name, options) -> None:
    # retain_graph (and gradcheck) run the backward of one graph several times.
    _, fused = make_pair(name, options, 4, 5)
    outputs, final = fused(torch.randn(2, 3, 4), torch.tensor([3, 2]))
    loss = outputs.square().sum() + final[-1].sum()
    first = torch.autograd.grad(loss, list(fused.parameters()), retain_graph=True)
    again = torch.autograd.grad(loss, list(fused.parameters()))
    for a, b in zip(first, again):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name, options", CELL_CASES)
def test_frozen_input_weights_and_constant_inputs(name, options) -> None:
    # The fused path differentiates the input projection itself: it must give the gradients
    # asked for (W_aa, b) and no others (frozen W_ax, inputs that need none).
    reference, fused = make_pair(name, options, 4, 5)
    x, lengths = torch.randn(3, 6, 4), torch.tensor([6, 2, 4])
    gradients = []
    for stack in (reference, fused):
        for cell in stack.layers[0]:
            cell.weight_x.requires_grad_(False)
        outputs, final = stack(x, lengths)
        (outputs.square().sum() + final[0].sum()).backward()
        assert all(cell.weight_x.grad is None for cell in stack.layers[0])
        gradients.append({n: p.grad for n, p in stack.named_parameters() if p.requires_grad})
    assert gradients[0].keys() == gradients[1].keys()
    for key in gradients[0]:
        torch.testing.assert_close(gradients[1][key], gradients[0][key], **TOLERANCE[torch.float32])


# -- which path runs ------------------------------------------------------------------------------


@pytest.mark.parametrize("name, options", CELL_CASES)
def test_auto_prefers_onednn_lstm_then_fused_on_the_cpu(name, options) -> None:
    cls = cell_class(name)
    config = cls.Config(**options)

    def path(implementation: str) -> str:
        return RecurrentStack(cls, 3, 4, config=config, implementation=implementation).execution_path("cpu")

    onednn = cls(3, 4, config).torch_equivalent() is not None and name == "lstm"  # the others: see test_stack
    assert path("auto") == ("aten" if onednn else "fused")
    assert path("fused") == "fused"
    assert path("reference") == "reference"


class _TweakedStep(SimpleGRUCell):
    """Overrides the step but not the kernel: the inherited kernel would compute something else."""

    name = "tweaked_gru_simple"

    def step(self, projected: Tensor, state: State) -> State:
        return (0.5 * super().step(projected, state)[0],)


def test_a_subclass_that_changes_the_step_loses_the_inherited_kernel() -> None:
    assert kernel_for(_TweakedStep(3, 4)) is None
    stack = RecurrentStack(_TweakedStep, 3, 4)
    assert stack.execution_path() == "reference"
    with pytest.raises(ValueError, match="no fused kernel"):
        RecurrentStack(_TweakedStep, 3, 4, implementation="fused")


def test_the_config_accepts_fused() -> None:
    from harness.experiment import ModelSettings

    assert ModelSettings(implementation="fused").implementation == "fused"


# -- a third-party cell opts in ---------------------------------------------------------------------


class LeakyConfig(CellConfig):
    leak: float = 0.25


class _LeakyKernel(FusedKernel):
    """a<t> = (1 - λ) a<t-1> + λ tanh(P + W a<t-1>), written against the FusedKernel API."""

    state_count = 1

    def __init__(self, cell: LeakyCell) -> None:
        super().__init__(cell)
        self.weight_a, self.leak = cell.weight_a, cell.config.leak

    def parameters(self) -> tuple[Tensor, ...]:
        return (self.weight_a,)

    def begin(self, projected: Tensor, steps: int) -> None:
        self.projected = projected
        self.activations = projected.new_empty(steps, projected.shape[1], self.hidden_size)

    def forward_step(self, t: int, prev: State, out: State) -> None:
        pre = torch.addmm(self.projected[t], prev[0], self.params[0].t(), out=self.activations[t]).tanh_()
        torch.add(prev[0].mul(1 - self.leak), pre, alpha=self.leak, out=out[0])

    def prepare_backward(self, states: State) -> None:
        self.d_pre = (1 - self.activations * self.activations) * self.leak

    def backward_step(self, t: int, grad: State, out: State) -> None:
        self.d_pre[t].mul_(grad[0])
        out[0].add_(grad[0], alpha=1 - self.leak).addmm_(self.d_pre[t], self.params[0])

    def finish_backward(self, states: State, grads: State) -> tuple[Tensor, tuple[Tensor, ...]]:
        d_weight = self.d_pre.flatten(0, 1).t() @ states[0][:-1].flatten(0, 1)
        return self.d_pre, (d_weight,)


class LeakyCell(RecurrentCell):
    name = "leaky"
    Config = LeakyConfig

    def step(self, projected: Tensor, state: State) -> State:
        (a_prev,) = state
        return ((1 - self.config.leak) * a_prev + self.config.leak * torch.tanh(projected + a_prev @ self.weight_a.T),)

    def fused_kernel(self) -> _LeakyKernel:
        return _LeakyKernel(self)


class _WrongKernel(_LeakyKernel):
    def finish_backward(self, states: State, grads: State) -> tuple[Tensor, tuple[Tensor, ...]]:
        d_projected, (d_weight,) = super().finish_backward(states, grads)
        return d_projected, (1.01 * d_weight,)  # a slightly wrong W_aa gradient


class WronglyFusedCell(LeakyCell):
    name = "wrongly_fused"

    def fused_kernel(self) -> _WrongKernel:
        return _WrongKernel(self)


class _InPlaceLeakyKernel(_LeakyKernel):
    """The leaky kernel, writing each step's pre-activation into the projected buffer it owns."""

    def forward_step(self, t: int, prev: State, out: State) -> None:
        pre = self.projected[t].addmm_(prev[0], self.params[0].t()).tanh_()
        self.activations[t].copy_(pre)
        torch.add(prev[0].mul(1 - self.leak), pre, alpha=self.leak, out=out[0])


class SquashedLeakyCell(LeakyCell):
    """Its own input projection, tanh(W_ax x + b): autograd keeps the projection's output for
    its backward, so the fused path must hand the kernel a copy it may overwrite."""

    name = "squashed_leaky"

    def project_inputs(self, inputs: Tensor) -> Tensor:
        return torch.tanh(super().project_inputs(inputs))

    def fused_kernel(self) -> _InPlaceLeakyKernel:
        return _InPlaceLeakyKernel(self)


def _registry() -> Registry[type]:
    registry = Registry("cell", RecurrentCell)
    registry.add(LeakyCell, plugin="tests")
    registry.add(WronglyFusedCell, plugin="tests")
    registry.add(SquashedLeakyCell, plugin="tests")
    return registry


class TestThirdPartyFusedCell(CellContract):
    """The whole contract, fused fast path included, on a cell from outside the harness."""

    cell_name = "leaky"

    @pytest.fixture
    def cell_registry(self) -> Registry[type]:
        return _registry()


class TestOwnProjectionFusedCell(CellContract):
    """A cell with its own ``project_inputs`` and a kernel that overwrites the projected buffer."""

    cell_name = "squashed_leaky"

    @pytest.fixture
    def cell_registry(self) -> Registry[type]:
        return _registry()


def test_a_kernel_may_overwrite_a_projection_that_autograd_keeps() -> None:
    # With one sequence, (B, T, G*H) -> (T, B, G*H) needs no copy: the kernel's buffer would be
    # the very tensor tanh's backward reads, unless the fused path copies it first.
    spec = CellSpec("squashed_leaky", SquashedLeakyCell)
    reference = spec.stack(3, 4, implementation="reference")
    fused = spec.stack(3, 4, implementation="fused")
    fused.load_state_dict(reference.state_dict())
    x = torch.randn(1, 5, 3)
    runs = [forward_backward(stack, x, None, None) for stack in (reference, fused)]
    assert_same(*runs, torch.float32)


class _SlightlyWrongKernel(_LeakyKernel):
    def finish_backward(self, states: State, grads: State) -> tuple[Tensor, tuple[Tensor, ...]]:
        d_projected, (d_weight,) = super().finish_backward(states, grads)
        return d_projected, ((1 + WRONG_BY) * d_weight,)  # within float32's 1e-5, far outside float64's truth


class SlightlyWronglyFusedCell(LeakyCell):
    name = "slightly_wrongly_fused"

    def fused_kernel(self) -> _SlightlyWrongKernel:
        return _SlightlyWrongKernel(self)


#: How wrong the slightly wrong kernel's W_aa gradient is, relatively: less than the 1e-5 of
#: scale allowed between two float32 paths, more than float32 rounding makes on the reference.
WRONG_BY = 5e-6


def test_the_float64_comparison_catches_a_kernel_only_slightly_wrong() -> None:
    assert_as_close_as_the_reference_in_float32(LeakyCell, {})
    with pytest.raises(AssertionError, match="weight_a"):
        assert_as_close_as_the_reference_in_float32(SlightlyWronglyFusedCell, {})


def test_the_contract_catches_a_wrong_kernel() -> None:
    contract = CellContract()
    spec = CellSpec("wrongly_fused", WronglyFusedCell)
    with pytest.raises(AssertionError, match="weight_a"):
        contract.test_fused_path_matches_reference(spec)
    contract.test_fused_path_matches_reference(CellSpec("leaky", LeakyCell))


# -- CUDA ------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("triton", ["auto", "0"], ids=["triton-steps", "aten-steps"])
@pytest.mark.parametrize("layers, bidirectional, lengths, initial", LAYOUTS)
@pytest.mark.parametrize("name, options", CELL_CASES)
def test_fused_equals_reference_on_cuda(name, options, layers, bidirectional, lengths, initial, triton,
                                        monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_FUSED_TRITON", triton)
    matmul_tf32, cudnn_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        for dtype in (torch.float32, torch.float64):
            expected, actual = run_both(name, options, layers, bidirectional, lengths, initial, dtype, device="cuda")
            assert_same(expected, actual, dtype)
            assert actual["outputs"].device.type == "cuda"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul_tf32, cudnn_tf32
