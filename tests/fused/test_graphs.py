"""Replaying the fused loops from graphs (harness.fused.graphs): what a call returns and
the gradients it gets are those of the eager loops, whatever the order of calls.

CUDA graphs need a GPU. Without one these tests put a stand-in in place of
``CudaGraph`` for CPU tensors: a "replay" runs the captured code again and writes its
tensors into those of the capture, as a real replay writes the same memory. That
checks everything this module does around the graphs (signatures, static buffers,
copies in and out, leases, fallbacks); the capture itself is PyTorch's, and the CUDA
test at the end runs it where a GPU is present.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest
import torch
from graph_training import assert_same_training, train_adding
from recurrence_pairs import CELL_CASES, LAYOUTS, assert_same, assert_within_scale, forward_backward, make_pair
from torch import Tensor

from harness.fused import graphs


class RecordedGraph:
    """A CPU stand-in for :class:`harness.fused.graphs.CudaGraph`."""

    captures: list[RecordedGraph] = []

    def __init__(self, device: torch.device) -> None:
        self.replays = 0

    def warm_up(self, run) -> None:
        run()

    def capture(self, run) -> tuple[Any, ...]:
        RecordedGraph.captures.append(self)
        self.run, self.result = run, run()
        return self.result

    def replay(self) -> tuple[Any, ...]:
        self.replays += 1
        fresh = self.run()
        return tuple(old.copy_(new) if isinstance(old, Tensor) else new for old, new in zip(self.result, fresh))


class FailingGraph(RecordedGraph):
    def capture(self, run) -> tuple[Any, ...]:
        raise RuntimeError("operation not permitted when stream is capturing")


@pytest.fixture
def recorded(monkeypatch):
    monkeypatch.setitem(graphs.GRAPH_TYPES, "cpu", RecordedGraph)
    monkeypatch.setenv("HARNESS_CUDA_GRAPHS", "1")
    RecordedGraph.captures = []
    return RecordedGraph.captures


def replays(captures: list[RecordedGraph]) -> int:
    return sum(graph.replays for graph in captures)


def batches(count: int, size=(3, 7, 4), lengths=None) -> list[tuple[Tensor, Tensor | None]]:
    generator = torch.Generator().manual_seed(11)
    rolls = [lengths[i:] + lengths[:i] for i in range(len(lengths))] if lengths else [None]
    return [(torch.randn(*size, generator=generator),
             None if lengths is None else torch.tensor(rolls[n % len(rolls)])) for n in range(count)]


def train(stack, data, monkeypatch, graphs_on: bool) -> list[dict[str, Tensor]]:
    """For each batch: outputs, final state and gradients, then an SGD step in place."""
    monkeypatch.setenv("HARNESS_CUDA_GRAPHS", "1" if graphs_on else "0")
    results = []
    for x, lengths in data:
        x = x.clone().requires_grad_()
        outputs, final = stack(x, lengths)
        loss = (outputs * torch.linspace(-1, 1, outputs.shape[-1])).sum() + sum(f.square().sum() for f in final)
        stack.zero_grad()
        loss.backward()
        results.append({"outputs": outputs.detach(), **{f"final {i}": f.detach() for i, f in enumerate(final)},
                        "d inputs": x.grad, **{f"d {n}": p.grad.clone() for n, p in stack.named_parameters()}})
        with torch.no_grad():
            for p in stack.parameters():
                p.sub_(0.1 * p.grad)
    return results


@pytest.mark.parametrize("layers, bidirectional, lengths, initial", LAYOUTS)
@pytest.mark.parametrize("name, options", CELL_CASES)
def test_replays_compute_what_the_eager_loops_compute(name, options, layers, bidirectional, lengths, initial,
                                                      recorded, monkeypatch) -> None:
    _, fused = make_pair(name, options, 4, 5, num_layers=layers, bidirectional=bidirectional,
                         initial_state="learned" if initial == "learned" else "zeros")
    eager = copy.deepcopy(fused)
    data = batches(4, lengths=lengths)  # padded: the same shortest and longest, other masks
    expected = train(eager, data, monkeypatch, graphs_on=False)
    assert not recorded
    actual = train(fused, data, monkeypatch, graphs_on=True)
    for want, got in zip(expected, actual):
        assert want.keys() == got.keys()
        for key in want:
            assert torch.equal(got[key], want[key]), key
    # Each signature (one per layer and direction) is captured at its second call, then
    # replayed. The loop still holds call 2's outputs, and with them its lease, while call 3
    # runs: call 3 gets the second copy, and call 4 the first again.
    directions = layers * (2 if bidirectional else 1)
    assert len(recorded) == graphs.COPIES * 2 * directions  # a forward and a backward graph each
    assert replays(recorded) == 2 * directions * 3  # calls 2-4


@pytest.mark.parametrize("name, options", [("peephole_lstm", {"variant": "gers"}), ("gru", {"reset": "before"})])
def test_replays_of_the_triton_step_kernels(name, options, recorded, monkeypatch) -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs Triton's interpreter without a GPU (set by tests/conftest.py)")
    pytest.importorskip("triton")
    monkeypatch.setenv("HARNESS_FUSED_TRITON", "1")
    _, fused = make_pair(name, options, 4, 5, num_layers=2, bidirectional=True)
    eager = copy.deepcopy(fused)
    data = batches(3, lengths=[7, 3, 5])
    expected = train(eager, data, monkeypatch, graphs_on=False)
    actual = train(fused, data, monkeypatch, graphs_on=True)
    assert replays(recorded) > 0
    for want, got in zip(expected, actual):
        for key in want:
            assert torch.equal(got[key], want[key]), key


def test_a_replay_returns_tensors_of_its_own(recorded, monkeypatch) -> None:
    _, stack = make_pair("lstm", {}, 4, 5)
    eager = copy.deepcopy(stack)
    data = batches(4)
    with torch.no_grad():
        results = [stack(x)[0] for x, _ in data]  # calls 3 and 4 replay into the buffers call 2 returned from
        monkeypatch.setenv("HARNESS_CUDA_GRAPHS", "0")
        for (x, _), got in zip(data, results):
            assert torch.equal(got, eager(x)[0])
    assert replays(recorded) == 3


def test_calls_in_flight_get_buffers_of_their_own_or_run_eagerly(recorded, monkeypatch) -> None:
    _, stack = make_pair("peephole_lstm", {}, 4, 5)
    data = batches(5)
    monkeypatch.setenv("HARNESS_CUDA_GRAPHS", "0")
    expected = []
    for x, _ in data:
        x = x.clone().requires_grad_()
        stack(x)[0].square().sum().backward()
        expected.append(x.grad)
    monkeypatch.setenv("HARNESS_CUDA_GRAPHS", "1")
    inputs = [x.clone().requires_grad_() for x, _ in data]
    losses = [stack(x)[0].square().sum() for x in inputs]  # all five forwards before any backward
    assert len(recorded) == 2 * graphs.COPIES  # calls 2 and 3 took the two copies; 4 and 5 ran eagerly
    for loss in reversed(losses):
        loss.backward()
    for x, want in zip(inputs, expected):
        assert torch.equal(x.grad, want)


def test_a_lease_ends_when_autograd_frees_the_call(recorded) -> None:
    _, stack = make_pair("gru", {"reset": "before"}, 4, 5)
    for x, _ in batches(6):
        outputs, _ = stack(x.requires_grad_())
        outputs.sum().backward()
        del outputs  # the graph node, and with it the lease, goes
    assert len(recorded) == 2  # one copy, captured once and replayed by calls 3-6
    assert replays(recorded) == 2 * 5


def test_backward_can_run_again_on_a_replay(recorded) -> None:
    _, stack = make_pair("gru", {"reset": "after"}, 4, 5)
    x = batches(1)[0][0]
    stack(x)  # first sight
    outputs, final = stack(x)
    loss = outputs.square().sum() + final[0].sum()
    first = torch.autograd.grad(loss, list(stack.parameters()), retain_graph=True)
    again = torch.autograd.grad(loss, list(stack.parameters()))
    assert replays(recorded) == 1 + 2  # the forward once, the backward twice
    for a, b in zip(first, again):
        assert torch.equal(a, b)


def test_a_failed_capture_warns_once_and_runs_eagerly(recorded, monkeypatch) -> None:
    monkeypatch.setitem(graphs.GRAPH_TYPES, "cpu", FailingGraph)
    _, stack = make_pair("gru_simple", {}, 4, 5)
    eager = copy.deepcopy(stack)
    data = batches(4)
    with pytest.warns(RuntimeWarning, match=r"could not capture the fused loops of \w*SimpleGRUKernel") as caught:
        actual = train(stack, data, monkeypatch, graphs_on=True)
    assert len([w for w in caught if "could not capture" in str(w.message)]) == 1
    expected = train(eager, data, monkeypatch, graphs_on=False)
    for want, got in zip(expected, actual):
        assert_same(want, got, torch.float32)


def test_calls_without_gradients_capture_the_forward_loop_only(recorded) -> None:
    _, stack = make_pair("lstm", {}, 4, 5)
    x = batches(1)[0][0]
    with torch.no_grad():
        for _ in range(3):
            stack(x)
    assert len(recorded) == 1 and recorded[0].replays == 2
    stack(x.requires_grad_())  # another signature: seen once, eager
    assert len(recorded) == 1


def test_signatures_per_cell_are_bounded(recorded) -> None:
    _, stack = make_pair("gru_simple", {}, 4, 5)
    with torch.no_grad():
        for batch in range(1, graphs.SIGNATURES + 3):
            for _ in range(2):
                stack(torch.randn(batch, 3, 4))
    cell_graphs = graphs._CELLS[stack.layers[0][0]]
    assert len(cell_graphs.loops) == graphs.SIGNATURES
    assert len(recorded) == graphs.SIGNATURES + 2  # every signature was captured at its second call


def test_a_cell_whose_shapes_keep_changing_stops_capturing_new_ones(recorded, monkeypatch) -> None:
    _, stack = make_pair("gru_simple", {}, 4, 5)
    data = [torch.randn(batch, 3, 4) for batch in range(1, 3 * graphs.SIGNATURES + 1)]
    monkeypatch.setenv("HARNESS_CUDA_GRAPHS", "0")
    with torch.no_grad():
        expected = [stack(x)[0] for x in data]
    monkeypatch.setenv("HARNESS_CUDA_GRAPHS", "1")
    warning = "captured for 16 shapes; new shapes run eagerly"
    with torch.no_grad(), pytest.warns(RuntimeWarning, match=warning) as caught:
        for x, want in zip(data, expected):
            for _ in range(2):
                torch.testing.assert_close(stack(x)[0], want, rtol=0, atol=0)
    assert len([w for w in caught if "new shapes run eagerly" in str(w.message)]) == 1
    assert len(recorded) == 2 * graphs.SIGNATURES  # then no more captures
    kept = recorded[-1]
    with torch.no_grad():
        stack(torch.randn(2 * graphs.SIGNATURES, 3, 4))  # the last one captured still replays
    assert kept.replays == 2 and len(recorded) == 2 * graphs.SIGNATURES


def test_inference_mode_calls_get_graphs_of_their_own(recorded) -> None:
    """Buffers made under inference mode cannot be written outside it (Lightning tests under
    inference mode and validates under no_grad)."""
    _, stack = make_pair("lstm", {}, 4, 5)
    x = batches(1)[0][0]
    with torch.inference_mode():
        stack(x), stack(x), stack(x)
    with torch.no_grad():
        stack(x), stack(x), stack(x)
    assert len(recorded) == 2 and [graph.replays for graph in recorded] == [2, 2]


@pytest.mark.parametrize("cell", ["gru_simple", "peephole_lstm"])
def test_training_through_lightning_with_replays_equals_eager_training(cell, recorded, monkeypatch) -> None:
    replayed = train_adding(cell, "1", monkeypatch, device="cpu")
    assert len(recorded) == 4  # training (forward and backward), evaluation under no_grad and under inference mode
    assert replays(recorded) > 40
    eager = train_adding(cell, "0", monkeypatch, device="cpu")
    # the CPU's compiled step kernels (test_native.py) run inside the stand-in's replays
    assert replayed.execution_path == "fused-native-graphs" and eager.execution_path == "fused-native"
    assert_same_training(eager, replayed, rel=0)


def test_a_replaced_parameter_is_a_new_signature(recorded, monkeypatch) -> None:
    reference, stack = make_pair("vanilla", {"activation": "tanh"}, 4, 5)
    x = batches(1)[0][0]
    with torch.no_grad():
        stack(x), stack(x)
        stack.double()  # new tensors at new addresses
        reference.double()
        torch.testing.assert_close(stack(x.double())[0], reference(x.double())[0])
    assert len(recorded) == 1  # the float64 call was a first sight


def test_runs_record_that_replays_were_on(recorded, monkeypatch) -> None:
    _, stack = make_pair("gru_simple", {}, 4, 5)
    x = batches(1)[0][0]
    stack(x)
    monkeypatch.setenv("HARNESS_CUDA_GRAPHS", "0")
    stack(x)
    assert stack.paths_used == {"fused-native-graphs", "fused-native"}


def test_the_setting_is_checked(monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_CUDA_GRAPHS", "yes")
    with pytest.raises(ValueError, match="HARNESS_CUDA_GRAPHS must be 0 or 1, not 'yes'"):
        graphs.enabled()
    monkeypatch.delenv("HARNESS_CUDA_GRAPHS")
    assert graphs.enabled()  # on by default
    monkeypatch.setenv("HARNESS_CUDA_GRAPHS", "0")
    assert not graphs.enabled()


def test_the_cpu_has_no_graphs_of_its_own(monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_CUDA_GRAPHS", "1")
    _, stack = make_pair("lstm", {}, 4, 5)
    x = batches(1)[0][0]
    for _ in range(3):
        stack(x)
    assert not graphs._CELLS.get(stack.layers[0][0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("layers, bidirectional, lengths, initial", LAYOUTS)
@pytest.mark.parametrize("name, options", CELL_CASES)
def test_cuda_graph_replays_equal_the_reference(name, options, layers, bidirectional, lengths, initial,
                                                monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_CUDA_GRAPHS", "1")
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for dtype in (torch.float64, torch.float32):
            reference, fused = make_pair(name, options, 4, 5, dtype=dtype, device="cuda", num_layers=layers,
                                         bidirectional=bidirectional,
                                         initial_state="learned" if initial == "learned" else "zeros")
            for x, lengths_ in batches(3, lengths=lengths):  # first sight, capture, replay
                x, lengths_ = x.to("cuda", dtype), None if lengths_ is None else lengths_.cuda()
                expected, actual = forward_backward(reference, x, lengths_, None), forward_backward(fused, x, lengths_,
                                                                                                    None)
                if dtype == torch.float64:  # the same function
                    assert_same(expected, actual, dtype)
                else:  # a captured cuBLAS product may sum in another order (seen on an H100: 1.5e-6 on 0.027)
                    assert_within_scale(expected, actual)
            assert graphs._CELLS[fused.layers[0][0]].loops  # it did capture
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
