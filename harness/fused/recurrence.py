"""Running a cell fused: the autograd Function around the passes, and :func:`run_fused`, the fused
counterpart of the reference loop."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from harness.core.cells import RecurrentCell

if TYPE_CHECKING:
    from harness.core.cells import State
from harness.fused import graphs
from harness.fused.kernel import FusedKernel, Padding
from harness.fused.passes import backward_pass, default_projection, forward_pass
from harness.fused.variants import on_device


def kernel_for(cell: RecurrentCell) -> FusedKernel | None:
    """The cell's fused kernel, or None when it has none.

    A kernel is written for one ``step``: a subclass that overrides ``step`` but not
    ``fused_kernel`` computes something else, so it gets none (it runs on the loop).
    """
    mro = type(cell).__mro__
    kernel_owner = next(c for c in mro if "fused_kernel" in c.__dict__)
    step_owner = next(c for c in mro if "step" in c.__dict__)
    if not issubclass(kernel_owner, step_owner):
        return None
    return cell.fused_kernel()


def run_fused(
    cell: RecurrentCell, inputs: Tensor, state: State, padding: Padding, kernel: FusedKernel | None = None,
    *, paths: set[str] | None = None,
) -> tuple[Tensor, State]:
    """The fused counterpart of the reference loop ``_run_cell``, same arguments and results.

    Args:
        inputs: (B, T, I); state: each (B, H); padding: see :class:`Padding`.
        paths: where to record how the call ran: the kernel's ``path_name``, with "-graphs"
            where CUDA-graph replays are on (``RecurrentStack.paths_used``).
    Returns:
        outputs (B, T, H), zero at padding, and the state after each sequence's last real token.
    """
    kernel = kernel if kernel is not None else kernel_for(cell)
    if kernel is None:
        raise ValueError(f"cell {type(cell).__name__} has no fused kernel")
    kernel = on_device(kernel, inputs.device)
    if paths is not None:
        paths.add(kernel.path_name + ("-graphs" if graphs.active(inputs.device) else ""))
    if torch.is_autocast_enabled(inputs.device.type):  # the kernels compute in the parameters' dtype
        dtype = cell.weight_a.dtype
        with torch.autocast(inputs.device.type, enabled=False):
            return run_fused(cell, inputs.to(dtype), tuple(s.to(dtype) for s in state), padding, kernel)
    if default_projection(cell, kernel):  # the Function projects, and differentiates the projection
        source, weight_x, bias = inputs, cell.weight_x, cell.bias
    else:
        source, weight_x, bias = kernel.project(inputs), None, None  # (T, B, G*H), differentiated by autograd
    state = tuple(s.expand(inputs.shape[0], cell.hidden_size) for s in state)
    recording = torch.is_grad_enabled()  # the Function's forward runs without grad mode, so ask here
    outputs, *final = _FusedRecurrence.apply(kernel, padding, recording, source, weight_x, bias, *state,
                                             *kernel.parameters())
    return outputs, tuple(final)


class _FusedRecurrence(torch.autograd.Function):
    """(recording, source, W_ax, b, *state<0>, *kernel params) -> (outputs, *final state) over all T steps.

    ``recording``: whether autograd records the call (grad mode was on). ``source`` is the
    (B, T, I) inputs, projected here with ``weight_x`` and ``bias``; or, when those are None,
    the projected inputs themselves, (T, B, G*H). On CUDA the loops may replay from CUDA
    graphs (:mod:`harness.fused.graphs`).
    """

    @staticmethod
    def forward(ctx, kernel: FusedKernel, padding: Padding, recording: bool, source: Tensor, weight_x: Tensor | None,
                bias: Tensor | None, *tensors: Tensor):
        count = kernel.state_count
        state0, params = tensors[:count], tensors[count:]
        # without grad mode no backward will run, whatever requires grad
        needs_input_grad = tuple(recording and needed for needed in ctx.needs_input_grad[3:])
        ctx.replay = graphs.replay_for(kernel, padding, source, weight_x, bias, state0, params, needs_input_grad)
        if ctx.replay is not None:
            outputs, final = ctx.replay.forward(source, state0, padding)
            return (outputs, *final)
        outputs, final, ctx.recurrence, saved = forward_pass(kernel, padding, source, weight_x, bias, state0, params,
                                                             needs_input_grad)
        ctx.save_for_backward(*saved)
        return (outputs, *final)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_outputs: Tensor, *grad_final: Tensor):
        if ctx.replay is not None:
            return (None, None, None, *ctx.replay.backward(grad_outputs, grad_final))
        return (None, None, None, *backward_pass(ctx.recurrence, ctx.saved_tensors, grad_outputs, grad_final))
