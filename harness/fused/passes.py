"""The forward and backward passes through time of one layer direction, written by hand: the forward
loop records nothing, the backward loop computes each step's gate gradients and one ``addmm``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from harness.core.cells import RecurrentCell

if TYPE_CHECKING:
    from harness.core.cells import State
from harness.fused.kernel import FusedKernel, Padding, reorder_rows, restore_rows


def default_projection(cell: RecurrentCell, kernel: FusedKernel) -> bool:
    return (type(cell).project_inputs is RecurrentCell.project_inputs
            and type(kernel).project is FusedKernel.project)


@dataclass
class Recurrence:
    """What one forward pass of the fused loop leaves for its backward pass."""

    kernel: FusedKernel
    padding: Padding
    #: The state tensors over time, each (steps + 1, B, H); index t is the state before step t.
    states: State
    #: (T, B, G*H) of the projected inputs.
    shape: torch.Size
    #: Whether the Function projected the inputs itself (``weight_x`` given).
    projects: bool
    #: Of (source, weight_x, bias, *state<0>, *params): which need a gradient.
    needs_input_grad: tuple[bool, ...]


def forward_pass(kernel: FusedKernel, padding: Padding, source: Tensor, weight_x: Tensor | None, bias: Tensor | None,
                 state0: State, params: tuple[Tensor, ...],
                 needs_input_grad: tuple[bool, ...]) -> tuple[Tensor, State, Recurrence, tuple[Tensor, ...]]:
    """The fused forward loop: outputs (B, T, H), the final state, what the backward pass
    needs, and the tensors it reads (the params; the time-major inputs and W_ax when it projects)."""
    count = kernel.state_count
    if weight_x is None:
        # the kernel may overwrite it (autograd's stays intact) and reads it as laid out contiguously
        projected, inputs = source.clone(memory_format=torch.contiguous_format), None
    else:
        inputs = source.transpose(0, 1).contiguous()  # (T, B, I), also the weight gradient's operand
        weight_x, bias = (reorder_rows(w, kernel.order, kernel.scales) for w in (weight_x, bias))
        # mm, then the bias: addmm would first broadcast the bias into its output, a slow copy on CPU
        projected = inputs.flatten(0, 1).mm(weight_x.t()).add_(bias).unflatten(0, inputs.shape[:2])
    total, batch, _ = projected.shape
    steps, hidden = padding.longest, kernel.hidden_size
    kernel.params = params
    states = tuple(projected.new_empty(steps + 1, batch, hidden) for _ in range(count))
    for buffer, initial in zip(states, state0):
        buffer[0].copy_(initial)
    keep = None if padding.mask is None else padding.mask.unsqueeze(2)  # (B, T, 1)
    kernel.begin(projected, steps)
    if not kernel.forward_loop(states, padding):
        per_step = tuple(zip(*(s.unbind(0) for s in states)))  # per_step[t]: the state before step t
        for t in range(steps):
            prev, new = per_step[t], per_step[t + 1]
            kernel.forward_step(t, prev, new)
            if t >= padding.shortest:  # hold the state of sequences that have ended
                for n, p in zip(new, prev):
                    torch.where(keep[:, t], n, p, out=n)
    outputs = (projected.new_zeros if steps < total else projected.new_empty)(batch, total, hidden)
    outputs[:, :steps] = states[0][1:].transpose(0, 1)
    if keep is not None:
        outputs.masked_fill_(~keep, 0.0)
    final = tuple(s[steps].clone() for s in states)
    recurrence = Recurrence(kernel, padding, states, projected.shape, inputs is not None, needs_input_grad)
    return outputs, final, recurrence, (*params, *(() if inputs is None else (inputs, weight_x)))


def backward_pass(recurrence: Recurrence, saved: tuple[Tensor, ...], grad_outputs: Tensor,
                  grad_final: State) -> tuple[Tensor | None, ...]:
    """The fused backward loop: the gradients of (source, weight_x, bias, *state<0>, *params)."""
    kernel, padding, states = recurrence.kernel, recurrence.padding, recurrence.states
    param_count = len(saved) - (2 if recurrence.projects else 0)
    kernel.params = saved[:param_count]
    total = recurrence.shape[0]
    steps = padding.longest
    keep = None if padding.mask is None else padding.mask[:, :steps].transpose(0, 1).unsqueeze(2)  # (T, B, 1)
    # grads[i][t]: gradient w.r.t. state tensor i before step t. It starts as what reaches
    # that state directly (output t - 1 for the output state, the final state at t = T)
    # and the loop, from t = T - 1 down, adds what flows back through step t.
    grads = (torch.empty_like(states[0]), *(torch.zeros_like(s) for s in states[1:]))
    grads[0][0].zero_()
    grads[0][1:].copy_(grad_outputs[:, :steps].transpose(0, 1))
    if keep is not None:
        keep, drop = keep.to(grad_outputs.dtype), (~keep).to(grad_outputs.dtype)
        grads[0][1:].mul_(keep)  # outputs are constant zero at padding
    for buffer, final in zip(grads, grad_final):
        buffer[steps].add_(final)
    kernel.prepare_backward(states)
    if not kernel.backward_loop(grads, padding):
        per_step = tuple(zip(*(g.unbind(0) for g in grads)))
        for t in range(steps - 1, -1, -1):
            grad, out = per_step[t + 1], per_step[t]
            if t >= padding.shortest:  # held state: the gradient passes straight through
                for g, o in zip(grad, out):
                    o.addcmul_(g, drop[t])
                    g.mul_(keep[t])
            kernel.backward_step(t, grad, out)
    d_projected, d_params = kernel.finish_backward(states, grads)  # (steps, B, G*H)
    d_state0 = tuple(g[0] for g in grads)
    projection = _projection_gradients(recurrence, saved[param_count:], d_projected, total)
    return (*projection, *d_state0, *d_params)


def _projection_gradients(recurrence: Recurrence, saved: tuple[Tensor, ...], d_projected: Tensor,
                          total: int) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The gradients of the Function's source, W_ax and b from the projected-input gradient
    (``steps``, B, G*H), zero for the ``total - steps`` steps after the longest sequence;
    ``saved``: the time-major inputs and W_ax as the kernel's rows, when the Function projected."""
    steps, batch, width = d_projected.shape
    if not recurrence.projects:  # autograd differentiates the projection: it gets the (T, B, G*H) gradient
        if steps < total:
            d_projected = torch.cat([d_projected, d_projected.new_zeros(total - steps, batch, width)])
        return d_projected, None, None
    kernel, needs_input_grad = recurrence.kernel, recurrence.needs_input_grad
    inputs, weight_x = saved  # (T, B, I); (G*H, I)
    flat = d_projected.flatten(0, 1)  # (steps * B, G*H)
    d_inputs = d_weight = d_bias = None
    if needs_input_grad[0]:
        d_inputs = flat.mm(weight_x).unflatten(0, (steps, batch))
        if steps < total:
            d_inputs = torch.cat([d_inputs, d_inputs.new_zeros(total - steps, batch, inputs.shape[2])])
        d_inputs = d_inputs.transpose(0, 1)  # (B, T, I), as the inputs
    if needs_input_grad[1]:
        d_weight = restore_rows(flat.t().mm(inputs[:steps].flatten(0, 1)), kernel.order, kernel.scales)
    if needs_input_grad[2]:
        d_bias = restore_rows(flat.sum(0), kernel.order, kernel.scales)
    return d_inputs, d_weight, d_bias
