"""The built-in fused kernels with each step's element-wise work in one call of a step function.

The ATen kernels of :mod:`harness.fused.kernels` spend a step on 5-10 small operations:
on the GPU each is a kernel launch, on the CPU each is dispatched from Python. These
classes keep the ATen kernels' layouts, matrix products and bulk work (the weight
gradients after the loop) and replace each step's element-wise operations by one call of
a step function (two for ``gru`` with reset before, whose step has a product between
them). A step is then one product and one element-wise call each way. The backward steps
compute the gate derivatives from the saved activations themselves, so
``prepare_backward`` only allocates.

The step functions come from a backend, a subclass of :class:`_OneCallSteps`:
:mod:`harness.fused.triton_kernels` on CUDA (Triton, :mod:`harness.fused.triton_steps`),
:mod:`harness.fused.native_kernels` on the CPU (compiled C, ``harness/fused/_native_steps.c``).
Both implement the same functions with the same arguments and layouts (see
:mod:`harness.fused.triton_steps`). :func:`harness.fused.variants.on_device` of the built-in kernels
picks the variant.
"""

from __future__ import annotations

from types import ModuleType
from typing import ClassVar

import torch
from torch import Tensor

from harness.core.cells import RecurrentCell, State
from harness.fused.kernel import reorder_rows
from harness.fused.kernels import (GRUKernel, LSTMKernel, PeepholeLSTMKernel, SimpleGRUKernel, _transposed,
                                   _weight_gradient)

__all__ = ["StepGRUKernel", "StepLSTMKernel", "StepPeepholeLSTMKernel", "StepSimpleGRUKernel"]


class _OneCallSteps:
    """What a backend provides: its step functions, and how to call one over a step's B*H elements."""

    #: The module of step functions (``lstm_forward``, ... and the ``PEEPHOLE_*`` modes).
    steps: ClassVar[ModuleType]
    hidden_size: int
    gates: Tensor

    def _setup_launch(self, reference: Tensor) -> None:
        """``reference``: a (B, H) state; every call covers its B*H elements."""
        raise NotImplementedError

    def _run(self, step_function, *tensors: Tensor, **constants) -> None:
        """Call ``step_function`` on ``tensors`` over the B*H elements of a step."""
        raise NotImplementedError

    @property
    def stepwise(self) -> bool:
        """Whether the generic loop calls the steps one by one (and needs per-step views);
        False where the backend runs whole loops itself."""
        return True

    def _begin_backward(self, cell_states: Tensor) -> None:
        """A fresh d pre buffer like the gates (which stay intact for a second backward), and
        per-step views of it and of ``cell_states``, the (T+1, B, H) states the gates read."""
        self.d_pre = torch.empty_like(self.gates)
        self.cell_states = cell_states
        if self.stepwise:
            self.d_pre_steps = self.d_pre.unbind(0)
            self.c_prev_steps = cell_states.unbind(0)


class StepLSTMKernel(_OneCallSteps, LSTMKernel):
    """:class:`LSTMKernel` with one step-function call per step each way."""

    peephole_mode = 0  # PEEPHOLE_NONE of every backend

    def begin(self, projected: Tensor, steps: int) -> None:
        self.weight = reorder_rows(self.params[0], self.order, self.scales)  # (4H, H), rows [Γo ; Γu ; Γf ; 2 c~]
        self.weight_t = _transposed(self.weight)
        self.gates = projected[:steps]  # (T, B, 4H): P, then P + W a<t-1>, then the activations
        self.tanh_c = projected.new_empty(steps, projected.shape[1], self.hidden_size)
        if self.stepwise:
            self.gate_steps, self.tanh_c_steps = self.gates.unbind(0), self.tanh_c.unbind(0)
        self.peephole = self._peephole()
        self._setup_launch(self.tanh_c[0])

    def _peephole(self) -> Tensor:
        return self.weight  # any tensor: the kernel does not read it without peepholes

    def forward_step(self, t: int, prev: State, out: State) -> None:
        (a_prev, c_prev), (a, c) = prev, out
        gates = self.gate_steps[t].addmm_(a_prev, self.weight_t)
        self._run(self.steps.lstm_forward, gates, c_prev, c, a, self.tanh_c_steps[t], self.peephole,
                  PEEPHOLE=self.peephole_mode)

    def prepare_backward(self, states: State) -> None:
        self._begin_backward(states[1])

    def backward_step(self, t: int, grad: State, out: State) -> None:
        (d_a, d_c), d_pre = grad, self.d_pre_steps[t]
        self._run(self.steps.lstm_backward, self.gate_steps[t], self.c_prev_steps[t], self.tanh_c_steps[t],
                  d_a, d_c, out[1], d_pre, self.peephole, PEEPHOLE=self.peephole_mode)
        out[0].addmm_(d_pre, self.weight)


class StepPeepholeLSTMKernel(StepLSTMKernel, PeepholeLSTMKernel):
    """:class:`PeepholeLSTMKernel` (its parameters and weight gradients) with the one-call steps,
    which add every peephole term themselves."""

    def __init__(self, cell: RecurrentCell) -> None:
        super().__init__(cell)
        self.peephole_mode = self.steps.PEEPHOLE_GERS if self.gers else self.steps.PEEPHOLE_NOTES

    def _peephole(self) -> Tensor:
        return self.params[1].contiguous()  # (3, H): [p_u ; p_f ; p_o]


class StepSimpleGRUKernel(_OneCallSteps, SimpleGRUKernel):
    """:class:`SimpleGRUKernel` with one step-function call per step each way."""

    def begin(self, projected: Tensor, steps: int) -> None:
        self.weight_t = _transposed(self.params[0])
        self.gates = projected[:steps]  # (T, B, 2H) [c~ ; Γu]
        if self.stepwise:
            self.gate_steps = self.gates.unbind(0)
        self._setup_launch(projected[0, :, : self.hidden_size])

    def forward_step(self, t: int, prev: State, out: State) -> None:
        gates = self.gate_steps[t].addmm_(prev[0], self.weight_t)
        self._run(self.steps.simple_gru_forward, gates, prev[0], out[0])

    def prepare_backward(self, states: State) -> None:
        self._begin_backward(states[0])

    def backward_step(self, t: int, grad: State, out: State) -> None:
        d_pre = self.d_pre_steps[t]
        self._run(self.steps.simple_gru_backward, self.gate_steps[t], self.c_prev_steps[t], grad[0], out[0], d_pre)
        out[0].addmm_(d_pre, self.params[0])


class StepGRUKernel(_OneCallSteps, GRUKernel):
    """:class:`GRUKernel` (reset before or after the product) with one-call steps (two each way with reset before)."""

    def begin(self, projected: Tensor, steps: int) -> None:
        super().begin(projected, steps)  # the buffers and transposed weights of the ATen kernel
        if self.stepwise:
            self.gate_steps = self.gates.unbind(0)
        self._setup_launch(projected[0, :, : self.hidden_size])

    def forward_step(self, t: int, prev: State, out: State) -> None:
        (c_prev,), gates = prev, self.gate_steps[t]
        if self.after:
            recurrent = torch.addmm(self.recurrent_bias, c_prev, self.weight_t, out=self.recurrent_steps[t])
            self._run(self.steps.gru_after_forward, gates, recurrent, c_prev, out[0])
            return
        self.relevance_update_steps[t].addmm_(c_prev, self.weight_t)
        reset_state = self.reset_state_steps[t]
        self._run(self.steps.gru_before_gates, gates, c_prev, reset_state)
        self.candidate_steps[t].addmm_(reset_state, self.weight_candidate_t)
        self._run(self.steps.gru_before_cell, gates, c_prev, out[0])

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
            self._run(self.steps.gru_after_backward, gates, self.recurrent_steps[t], c_prev, g, out[0], d_pre,
                      self.d_candidate_steps[t])
            out[0].addmm_(d_pre, self.params[0])
            return
        self._run(self.steps.gru_before_backward_cell, gates, c_prev, g, d_pre)
        torch.mm(self.d_candidate_rows[t], self.weight_candidate, out=self.d_reset_state)
        self._run(self.steps.gru_before_backward_gates, gates, c_prev, g, self.d_reset_state, out[0], d_pre)
        out[0].addmm_(self.d_relevance_update[t], self.weight_relevance_update)

    def finish_backward(self, states: State, grads: State) -> tuple[Tensor, tuple[Tensor, ...]]:
        if not self.after:
            return super().finish_backward(states, grads)
        hidden, d_pre = self.hidden_size, self.d_pre
        d_weight = _weight_gradient(d_pre, states[0][:-1])
        d_bias = d_pre[..., 2 * hidden :].sum(dim=(0, 1))
        d_pre[..., 2 * hidden :] = self.d_candidate  # the projected c~ rows get d pre(c~) itself
        return d_pre, (d_weight, d_bias)
