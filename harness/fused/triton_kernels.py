"""The built-in fused kernels with their per-step element-wise work in one Triton kernel.

On the GPU the ATen kernels of :mod:`harness.fused.kernels` are launch-bound: every small
operation of a step is a kernel launch. These subclasses keep the ATen kernels' layouts,
matrix products and bulk work (the weight gradients after the loop) and replace each
step's element-wise operations by one launch of :mod:`harness.fused.triton_steps` (two
for ``gru`` with reset before, whose step has a product between them). A step is then one
product and one element-wise kernel each way. The backward steps compute the gate
derivatives from the saved activations themselves, so ``prepare_backward`` only
allocates.

:meth:`FusedKernel.for_device` of the built-in kernels returns these on CUDA when Triton
imports (:func:`harness.fused.triton_enabled`); ``HARNESS_FUSED_TRITON=0`` keeps the ATen kernels.
"""

from __future__ import annotations

import torch
import triton.language as tl
from torch import Tensor

from harness.cells import RecurrentCell, State
from harness.fused import reorder_rows, triton_steps
from harness.fused.kernels import (GRUKernel, LSTMKernel, PeepholeLSTMKernel, SimpleGRUKernel, _transposed,
                                   _weight_gradient)

__all__ = ["TritonGRUKernel", "TritonLSTMKernel", "TritonPeepholeLSTMKernel", "TritonSimpleGRUKernel"]

#: The dtype a step computes in, per tensor dtype.
_COMPUTE = {torch.float16: tl.float32, torch.bfloat16: tl.float32, torch.float32: tl.float32, torch.float64: tl.float64}


class _TritonSteps:
    """What every Triton kernel class needs: the launch grid and the arithmetic dtype of a step."""

    path_name = "fused-triton"

    def _setup_launch(self, reference: Tensor) -> None:
        """``reference``: a (B, H) state; every launch covers its B*H elements."""
        if reference.dtype not in _COMPUTE:
            raise TypeError(f"the Triton kernels compute in float16/bfloat16/float32/float64, not {reference.dtype}")
        self.count = reference.shape[0] * self.hidden_size
        self.grid = (-(-self.count // triton_steps.BLOCK),)
        self.launch = dict(COMPUTE=_COMPUTE[reference.dtype], **triton_steps.LAUNCH)

    def _run(self, step_kernel, *tensors: Tensor, **constants) -> None:
        """Launch ``step_kernel`` on ``tensors`` over the B*H elements of a step."""
        step_kernel[self.grid](*tensors, self.count, self.hidden_size, **constants, **self.launch)

    def _begin_backward(self, cell_states: Tensor) -> None:
        """A fresh d pre buffer like the gates (which stay intact for a second backward), and
        per-step views of it and of ``cell_states``, the (T+1, B, H) states the gates read."""
        self.d_pre = torch.empty_like(self.gates)
        self.d_pre_steps = self.d_pre.unbind(0)
        self.c_prev_steps = cell_states.unbind(0)


class TritonLSTMKernel(_TritonSteps, LSTMKernel):
    """:class:`LSTMKernel` with one Triton launch per step each way."""

    peephole_mode = triton_steps.PEEPHOLE_NONE

    def begin(self, projected: Tensor, steps: int) -> None:
        self.weight = reorder_rows(self.params[0], self.order, self.scales)  # (4H, H), rows [Γo ; Γu ; Γf ; 2 c~]
        self.weight_t = _transposed(self.weight)
        self.gates = projected[:steps]  # (T, B, 4H): P, then P + W a<t-1>, then the activations
        self.gate_steps = self.gates.unbind(0)
        self.tanh_c = projected.new_empty(steps, projected.shape[1], self.hidden_size)
        self.tanh_c_steps = self.tanh_c.unbind(0)
        self.peephole = self._peephole()
        self._setup_launch(self.tanh_c[0])

    def _peephole(self) -> Tensor:
        return self.weight  # any tensor: the kernel does not read it without peepholes

    def forward_step(self, t: int, prev: State, out: State) -> None:
        (a_prev, c_prev), (a, c) = prev, out
        gates = self.gate_steps[t].addmm_(a_prev, self.weight_t)
        self._run(triton_steps.lstm_forward, gates, c_prev, c, a, self.tanh_c_steps[t], self.peephole,
                  PEEPHOLE=self.peephole_mode)

    def prepare_backward(self, states: State) -> None:
        self._begin_backward(states[1])

    def backward_step(self, t: int, grad: State, out: State) -> None:
        (d_a, d_c), d_pre = grad, self.d_pre_steps[t]
        self._run(triton_steps.lstm_backward, self.gate_steps[t], self.c_prev_steps[t], self.tanh_c_steps[t],
                  d_a, d_c, out[1], d_pre, self.peephole, PEEPHOLE=self.peephole_mode)
        out[0].addmm_(d_pre, self.weight)


class TritonPeepholeLSTMKernel(TritonLSTMKernel, PeepholeLSTMKernel):
    """:class:`PeepholeLSTMKernel` (its parameters and weight gradients) with the Triton steps,
    which add every peephole term themselves."""

    def __init__(self, cell: RecurrentCell) -> None:
        super().__init__(cell)
        self.peephole_mode = triton_steps.PEEPHOLE_GERS if self.gers else triton_steps.PEEPHOLE_NOTES

    def _peephole(self) -> Tensor:
        return self.params[1].contiguous()  # (3, H): [p_u ; p_f ; p_o]


class TritonSimpleGRUKernel(_TritonSteps, SimpleGRUKernel):
    """:class:`SimpleGRUKernel` with one Triton launch per step each way."""

    def begin(self, projected: Tensor, steps: int) -> None:
        self.weight_t = _transposed(self.params[0])
        self.gates = projected[:steps]  # (T, B, 2H) [c~ ; Γu]
        self.gate_steps = self.gates.unbind(0)
        self._setup_launch(projected[0, :, : self.hidden_size])

    def forward_step(self, t: int, prev: State, out: State) -> None:
        gates = self.gate_steps[t].addmm_(prev[0], self.weight_t)
        self._run(triton_steps.simple_gru_forward, gates, prev[0], out[0])

    def prepare_backward(self, states: State) -> None:
        self._begin_backward(states[0])

    def backward_step(self, t: int, grad: State, out: State) -> None:
        d_pre = self.d_pre_steps[t]
        self._run(triton_steps.simple_gru_backward, self.gate_steps[t], self.c_prev_steps[t], grad[0], out[0], d_pre)
        out[0].addmm_(d_pre, self.params[0])


class TritonGRUKernel(_TritonSteps, GRUKernel):
    """:class:`GRUKernel` (reset before or after the product) with Triton steps."""

    def begin(self, projected: Tensor, steps: int) -> None:
        super().begin(projected, steps)  # the buffers and transposed weights of the ATen kernel
        self.gate_steps = self.gates.unbind(0)
        self._setup_launch(projected[0, :, : self.hidden_size])

    def forward_step(self, t: int, prev: State, out: State) -> None:
        (c_prev,), gates = prev, self.gate_steps[t]
        if self.after:
            recurrent = torch.addmm(self.recurrent_bias, c_prev, self.weight_t, out=self.recurrent_steps[t])
            self._run(triton_steps.gru_after_forward, gates, recurrent, c_prev, out[0])
            return
        self.relevance_update_steps[t].addmm_(c_prev, self.weight_t)
        reset_state = self.reset_state_steps[t]
        self._run(triton_steps.gru_before_gates, gates, c_prev, reset_state)
        self.candidate_steps[t].addmm_(reset_state, self.weight_candidate_t)
        self._run(triton_steps.gru_before_cell, gates, c_prev, out[0])

    def prepare_backward(self, states: State) -> None:
        hidden = self.hidden_size
        self._begin_backward(states[0])  # d pre (T, B, 3H), rows [Γr ; Γu ; c~]
        if self.after:  # d pre(c~) itself, for the projected c~ rows (d_pre's hold Γr times it)
            self.d_candidate = torch.empty_like(states[0][1:])
            self.d_candidate_steps = self.d_candidate.unbind(0)
        else:
            self.weight_candidate = self.params[0][2 * hidden :]
            self.weight_relevance_update = self.params[0][: 2 * hidden]
            self.d_reset_state = torch.empty_like(states[0][0])  # d (Γr c<t-1>) of the current step, (B, H)
            self.d_candidate_rows = self.d_pre[..., 2 * hidden :].unbind(0)
            self.d_relevance_update = self.d_pre[..., : 2 * hidden].unbind(0)

    def backward_step(self, t: int, grad: State, out: State) -> None:
        (g,), gates, d_pre, c_prev = grad, self.gate_steps[t], self.d_pre_steps[t], self.c_prev_steps[t]
        if self.after:
            self._run(triton_steps.gru_after_backward, gates, self.recurrent_steps[t], c_prev, g, out[0], d_pre,
                      self.d_candidate_steps[t])
            out[0].addmm_(d_pre, self.params[0])
            return
        self._run(triton_steps.gru_before_backward_cell, gates, c_prev, g, d_pre)
        torch.mm(self.d_candidate_rows[t], self.weight_candidate, out=self.d_reset_state)
        self._run(triton_steps.gru_before_backward_gates, gates, c_prev, g, self.d_reset_state, out[0], d_pre)
        out[0].addmm_(self.d_relevance_update[t], self.weight_relevance_update)

    def finish_backward(self, states: State, grads: State) -> tuple[Tensor, tuple[Tensor, ...]]:
        if not self.after:
            return super().finish_backward(states, grads)
        hidden, d_pre = self.hidden_size, self.d_pre
        d_weight = _weight_gradient(d_pre, states[0][:-1])
        d_bias = d_pre[..., 2 * hidden :].sum(dim=(0, 1))
        d_pre[..., 2 * hidden :] = self.d_candidate  # the projected c~ rows get d pre(c~) itself
        return d_pre, (d_weight, d_bias)


#: The Triton variant of each built-in kernel (exact types: a subclass may compute something else).
VARIANTS = {
    LSTMKernel: TritonLSTMKernel,
    PeepholeLSTMKernel: TritonPeepholeLSTMKernel,
    SimpleGRUKernel: TritonSimpleGRUKernel,
    GRUKernel: TritonGRUKernel,
}
