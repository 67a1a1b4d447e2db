"""Replaying the fused loops from CUDA graphs.

On the GPU a fused step is a few small kernels, and at small sizes launching them from
Python takes longer than running them. A CUDA graph records a loop's launches once and
replays them all with one call. This module keeps, per cell, graphs of the fused
forward and backward loops (:func:`harness.fused.forward_pass`, ``backward_pass``) for
the call signatures that repeat, as training's do, and replays them:

* A graph reads its inputs from static buffers and writes its results to static
  buffers: a call copies its inputs in and its results out (clones), so what it
  returns is its own.
* A graph's buffers hold one call's forward state until that call's backward has run.
  The call holds a *lease* on them until autograd frees its graph node; a second call
  with the same signature meanwhile gets a second set (at most :data:`COPIES`), or runs
  eagerly.
* A signature is captured the second time it is seen (one-off shapes, such as a last
  partial batch, run eagerly), after one eager run on a side stream (Triton compiles,
  cuBLAS sets up its workspace). Capturing costs about one eager call. A capture that
  fails (a kernel that synchronises with the host, say) is not retried: that signature
  runs eagerly, with one warning.
* At most :data:`SIGNATURES` signatures per cell are kept, least recently used out first.
  Each set of buffers holds about what one eager call allocates for its forward and
  backward passes, for as long as it is kept (eager calls free theirs after the backward).
* A cell whose shapes keep changing (padded batches of many different lengths) would
  capture again and again: once :data:`SIGNATURES` graphs have been pushed out, the cell
  captures no new signature, with one warning, and replays the ones it keeps.

The graphs bake in the addresses of the parameters: a parameter that is replaced
(``.to()``, a new tensor) gives a new signature; one updated in place (optimizers,
``load_state_dict``) is read at the next replay. Replays are on by default on CUDA (on
an H100 they made the gated cells' fused path about 5x faster at small sizes, README);
``HARNESS_CUDA_GRAPHS=0`` turns them off.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import Tensor

from harness.core.cells import State
from harness.fused.kernel import FusedKernel, Padding
from harness.fused.passes import Recurrence, backward_pass, forward_pass

__all__ = ["COPIES", "GRAPH_TYPES", "SIGNATURES", "CudaGraph", "active", "enabled", "replay_for"]

#: Signatures kept per cell.
SIGNATURES = 8
#: Sets of buffers per signature: calls whose backward has not run yet hold one each.
COPIES = 2


def enabled() -> bool:
    """Whether the fused loops replay from CUDA graphs: ``HARNESS_CUDA_GRAPHS`` is 1 (the default)."""
    setting = os.environ.get("HARNESS_CUDA_GRAPHS", "1")
    if setting not in ("0", "1"):
        raise ValueError(f"HARNESS_CUDA_GRAPHS must be 0 or 1, not {setting!r}")
    return setting == "1"


def active(device: torch.device) -> bool:
    """Whether calls on ``device`` replay: replays are on, and the device has graphs."""
    return device.type in GRAPH_TYPES and enabled()


class CudaGraph:
    """One captured CUDA graph, and the results its capture returned (static buffers)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.graph = torch.cuda.CUDAGraph()
        self.result: tuple[Any, ...] = ()

    def warm_up(self, run: Callable[[], Any]) -> None:
        """Run once eagerly on a side stream, as capturing requires."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            run()
        torch.cuda.current_stream(self.device).wait_stream(stream)

    def capture(self, run: Callable[[], tuple[Any, ...]]) -> tuple[Any, ...]:
        # thread_local: another thread's CUDA calls (a data loader's, say) do not break the capture
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.result = run()
        return self.result

    def replay(self) -> tuple[Any, ...]:
        """Run the captured work again; its results are in the same tensors as the capture's."""
        self.graph.replay()
        return self.result


#: The graph type per device type: where there is none, the loops run eagerly.
GRAPH_TYPES: dict[str, type[CudaGraph]] = {"cuda": CudaGraph}


def graph_for(device: torch.device) -> CudaGraph:
    return GRAPH_TYPES[device.type](device)


class GraphedLoops:
    """The forward and backward loops of one signature, captured on one set of static buffers."""

    def __init__(self, kernel: FusedKernel, padding: Padding, source: Tensor, weight_x: Tensor | None,
                 bias: Tensor | None, state0: State, params: tuple[Tensor, ...],
                 needs_input_grad: tuple[bool, ...]) -> None:
        self.kernel, self.weight_x, self.bias, self.params = kernel, weight_x, bias, params
        self.needs_input_grad = needs_input_grad
        self.source = source.detach().clone()
        self.state0 = tuple(s.detach().clone() for s in state0)
        self.padding = Padding(None if padding.mask is None else padding.mask.clone(), padding.shortest,
                               padding.longest)
        self.forward_graph = graph_for(source.device)
        self.backward_graph = graph_for(source.device) if any(needs_input_grad) else None
        self.recurrence: Recurrence | None = None
        self.saved: tuple[Tensor, ...] = ()
        self.leased = False

    def _forward(self) -> tuple[Any, ...]:
        outputs, final, recurrence, saved = forward_pass(self.kernel, self.padding, self.source, self.weight_x,
                                                         self.bias, self.state0, self.params, self.needs_input_grad)
        return (outputs, *final, (recurrence, saved))

    def _backward(self) -> tuple[Tensor | None, ...]:
        return backward_pass(self.recurrence, self.saved, self.grad_outputs, self.grad_final)

    def capture(self) -> None:
        """Warm up and capture both loops on the buffers, which hold the first call's inputs."""

        def eager_round() -> None:
            *tensors, (self.recurrence, self.saved) = self._forward()
            if self.backward_graph is not None:
                # the backward graph's inputs, made here, outside the graphs' memory pools
                self.grad_outputs = torch.zeros_like(tensors[0])
                self.grad_final = tuple(torch.zeros_like(t) for t in tensors[1:])
                self._backward()

        self.forward_graph.warm_up(eager_round)
        *_, (self.recurrence, self.saved) = self.forward_graph.capture(self._forward)
        if self.backward_graph is not None:
            self.backward_graph.capture(self._backward)

    def forward(self, source: Tensor, state0: State, padding: Padding) -> tuple[Tensor, State]:
        self.source.copy_(source)
        for buffer, value in zip(self.state0, state0):
            buffer.copy_(value)
        if padding.mask is not None:
            self.padding.mask.copy_(padding.mask)
        *tensors, (self.recurrence, self.saved) = self.forward_graph.replay()
        return tensors[0].clone(), tuple(t.clone() for t in tensors[1:])

    def backward(self, grad_outputs: Tensor, grad_final: State) -> tuple[Tensor | None, ...]:
        self.grad_outputs.copy_(grad_outputs)
        for buffer, value in zip(self.grad_final, grad_final):
            buffer.copy_(value)
        return tuple(None if g is None else g.clone() for g in self.backward_graph.replay())


class Lease:
    """A call's hold on a :class:`GraphedLoops`' buffers, from its forward until autograd frees it."""

    def __init__(self, loops: GraphedLoops) -> None:
        self.loops = loops
        loops.leased = True

    def __del__(self) -> None:
        self.loops.leased = False

    def forward(self, source: Tensor, state0: State, padding: Padding) -> tuple[Tensor, State]:
        return self.loops.forward(source, state0, padding)

    def backward(self, grad_outputs: Tensor, grad_final: State) -> tuple[Tensor | None, ...]:
        return self.loops.backward(grad_outputs, grad_final)


class _CellGraphs:
    """The graphs of one cell, by signature (least recently used first)."""

    def __init__(self) -> None:
        self.loops: OrderedDict[Hashable, list[GraphedLoops]] = OrderedDict()
        self.seen: OrderedDict[Hashable, None] = OrderedDict()
        self.failed: set[Hashable] = set()
        self.pushed_out = 0  # signatures whose graphs were dropped for newer ones

    def lease(self, signature: Hashable, make: Callable[[], GraphedLoops]) -> Lease | None:
        if signature in self.failed:
            return None
        copies = self.loops.get(signature)
        if copies is None:
            if signature not in self.seen:  # first sight: eager
                self.seen[signature] = None
                while len(self.seen) > 4 * SIGNATURES:
                    self.seen.popitem(last=False)
                return None
            if self.pushed_out >= SIGNATURES:  # the shapes keep changing: capturing would not pay
                return None
            copies = self.loops[signature] = []
            while len(self.loops) > SIGNATURES:  # a leased set lives on in its lease
                self.loops.popitem(last=False)
                self.pushed_out += 1
                if self.pushed_out == SIGNATURES:
                    warnings.warn(f"the fused loops of {signature[0].__name__} were captured for {2 * SIGNATURES} "
                                  "shapes; new shapes run eagerly from now on (fewer distinct "
                                  "sequence lengths per batch, e.g. bucketing by length, would let them replay)",
                                  RuntimeWarning, stacklevel=5)
        self.loops.move_to_end(signature)
        free = next((loops for loops in copies if not loops.leased), None)
        if free is None:
            if len(copies) >= COPIES:
                return None
            try:
                free = make()
                free.capture()
            except Exception as error:  # whatever breaks a capture, the eager loop still runs
                self.failed.add(signature)
                warnings.warn(f"could not capture the fused loops of {signature[0].__name__} in a CUDA graph "
                              f"({type(error).__name__}: {error}); calls of this shape run eagerly",
                              RuntimeWarning, stacklevel=5)
                return None
            copies.append(free)
        return Lease(free)


_CELLS: weakref.WeakKeyDictionary[Any, _CellGraphs] = weakref.WeakKeyDictionary()


def replay_for(kernel: FusedKernel, padding: Padding, source: Tensor, weight_x: Tensor | None, bias: Tensor | None,
               state0: State, params: tuple[Tensor, ...],
               needs_input_grad: tuple[bool, ...]) -> Lease | None:
    """A lease on graphed loops for this call, or None: run eagerly."""
    if not active(source.device):
        return None
    tensors = (*params, *(t for t in (weight_x, bias) if t is not None))
    # Buffers made under inference mode cannot be written outside it, so it is part of the signature.
    signature = (type(kernel), torch.is_inference_mode_enabled(), source.shape, source.dtype, source.device,
                 weight_x is None, tuple(s.shape for s in state0), padding.shortest, padding.longest,
                 padding.mask is None, needs_input_grad, tuple(t.data_ptr() for t in tensors))
    cell_graphs = _CELLS.setdefault(kernel.cell, _CellGraphs())
    return cell_graphs.lease(signature, lambda: GraphedLoops(kernel, padding, source, weight_x, bias, state0, params,
                                                             needs_input_grad))
