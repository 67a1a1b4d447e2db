"""Fused kernels of the built-in cells: each cell's step forward, and its backward by hand.

Notation (as in the cells' docstrings): P = the step's slice of the projected inputs
(W_ax x<t> + b), W = ``weight_a`` (W_aa of every gate, stacked), σ' = σ(1 - σ) and
tanh' = 1 - tanh², both computed from the saved activations.

The forward step adds the recurrent product to the step's slice of P in place (one
``addmm_``: the kernel owns the projected buffer) and activates it there. The backward
needs, per step, the gate activations' derivatives times the incoming state gradient:
``prepare_backward`` computes the factors for all steps at once, into a buffer that each
backward step then scales in place by its state gradient (it becomes the pre-activation
gradient, which is also the projected inputs' gradient), followed by one ``addmm_`` for
the recurrent gradient (two products for ``gru`` with reset before: Γr's gradient goes
through W_cc). The weight gradients are one product over all steps in
``finish_backward``. Bulk work is done in place as far as possible: on CPU, fresh memory
costs page faults.

The LSTMs work with their gate blocks reordered to [Γo ; Γu ; Γf ; c~] and the c~ block
scaled by 2 (exact), so that one sigmoid covers all four blocks, c~ = tanh(x) being
2 σ(2x) - 1 (ATen's tanh costs several sigmoids on CPU; the difference to tanh is below
2e-7 absolute in float32, the rounding error of the pre-activation itself), and the rows
that scale with d c<t> (Γu, Γf, c~) are adjacent.
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.core.cells import RecurrentCell, State
from harness.fused.kernel import FusedKernel, reorder_rows, restore_rows

__all__ = ["VanillaKernel", "SimpleGRUKernel", "GRUKernel", "LSTMKernel", "PeepholeLSTMKernel"]


def _sigmoid_derivative_(s: Tensor, out: Tensor) -> Tensor:
    """σ(1 - σ) = σ - σ² of the sigmoid outputs ``s``, into ``out``."""
    return torch.addcmul(s, s, s, value=-1, out=out)


def _tanh_derivative_(y: Tensor, out: Tensor) -> Tensor:
    """1 - y² of the tanh outputs ``y``, into ``out``."""
    return torch.addcmul(_one(y), y, y, value=-1, out=out)


def _one(like: Tensor) -> Tensor:
    return torch.ones((), dtype=like.dtype, device=like.device)


def _transposed(weight: Tensor) -> Tensor:
    """W^T, contiguous: the per-step products read it T times."""
    return weight.t().contiguous()


def _weight_gradient(d_rows: Tensor, operand: Tensor) -> Tensor:
    """The sum over t and b of d_rows[t, b]^T operand[t, b]: one product over all steps."""
    return d_rows.reshape(-1, d_rows.shape[-1]).t().mm(operand.reshape(-1, operand.shape[-1]))


class VanillaKernel(FusedKernel):
    """a<t> = g(P + W a<t-1>), g = tanh or ReLU."""

    state_count = 1

    def __init__(self, cell: RecurrentCell) -> None:
        super().__init__(cell)
        self.relu = cell.config.activation == "relu"

    def begin(self, projected: Tensor, steps: int) -> None:
        self.projected, self.weight_t = projected.unbind(0), _transposed(self.params[0])

    def forward_step(self, t: int, prev: State, out: State) -> None:
        a = torch.addmm(self.projected[t], prev[0], self.weight_t, out=out[0])
        a.relu_() if self.relu else a.tanh_()

    def prepare_backward(self, states: State) -> None:
        a = states[0][1:]
        if self.relu:
            self.d_pre = (a > 0).to(a.dtype)
        else:
            self.d_pre = _tanh_derivative_(a, torch.empty_like(a))
        self.d_pre_steps = self.d_pre.unbind(0)  # g'(pre), scaled in place into d pre

    def backward_step(self, t: int, grad: State, out: State) -> None:
        d_pre = self.d_pre_steps[t].mul_(grad[0])
        out[0].addmm_(d_pre, self.params[0])

    def finish_backward(self, states: State, grads: State) -> tuple[Tensor, tuple[Tensor, ...]]:
        return self.d_pre, (_weight_gradient(self.d_pre, states[0][:-1]),)


class SimpleGRUKernel(FusedKernel):
    """Rows [c~ ; Γu]: [c~ ; Γu] = [tanh ; σ](P + W c<t-1>), c<t> = c<t-1> + Γu (c~ - c<t-1>)."""

    state_count = 1

    def begin(self, projected: Tensor, steps: int) -> None:
        hidden = self.hidden_size
        self.weight_t = _transposed(self.params[0])
        self.gates = projected[:steps]  # [c~ ; Γu]: P, then P + W c<t-1>, activated in place
        self.gate_steps = self.gates.unbind(0)
        self.candidate_steps = self.gates[..., :hidden].unbind(0)
        self.update_steps = self.gates[..., hidden:].unbind(0)

    def forward_step(self, t: int, prev: State, out: State) -> None:
        (c_prev,) = prev
        self.gate_steps[t].addmm_(c_prev, self.weight_t)
        candidate, update = self.candidate_steps[t].tanh_(), self.update_steps[t].sigmoid_()
        torch.addcmul(c_prev, update, candidate - c_prev, out=out[0])

    def prepare_backward(self, states: State) -> None:
        candidate, update = self.gates.unflatten(2, (2, self.hidden_size)).unbind(2)
        c_prev = states[0][:-1]
        # d pre = grad * factor, rows [c~ ; Γu]; d c<t-1> = grad * (1 - Γu) + d pre W
        keep = torch.sub(1, update)
        factors = torch.empty_like(self.gates).unflatten(2, (2, self.hidden_size))
        _tanh_derivative_(candidate, factors[:, :, 0]).mul_(update)
        torch.sub(candidate, c_prev, out=factors[:, :, 1]).mul_(update).mul_(keep)
        self.d_pre = factors.flatten(2)
        self.factor_steps, self.d_pre_steps, self.keep_steps = factors.unbind(0), self.d_pre.unbind(0), keep.unbind(0)

    def backward_step(self, t: int, grad: State, out: State) -> None:
        (g,) = grad
        self.factor_steps[t].mul_(g.unsqueeze(1))
        out[0].addcmul_(g, self.keep_steps[t]).addmm_(self.d_pre_steps[t], self.params[0])

    def finish_backward(self, states: State, grads: State) -> tuple[Tensor, tuple[Tensor, ...]]:
        return self.d_pre, (_weight_gradient(self.d_pre, states[0][:-1]),)


class GRUKernel(FusedKernel):
    """Rows [Γr ; Γu ; c~]; reset ``before``: c~ = tanh(P_c + W_cc (Γr c<t-1>)),
    ``after``: c~ = tanh(P_c + Γr (W_cc c<t-1> + b_cc)); c<t> = c<t-1> + Γu (c~ - c<t-1>)."""

    state_count = 1

    def __init__(self, cell: RecurrentCell) -> None:
        super().__init__(cell)
        self.after = cell.config.reset == "after"
        self.tensors = (cell.weight_a, cell.bias_candidate_a) if self.after else (cell.weight_a,)

    def parameters(self) -> tuple[Tensor, ...]:
        return self.tensors

    def begin(self, projected: Tensor, steps: int) -> None:
        hidden, weight = self.hidden_size, self.params[0]
        # [Γr ; Γu ; c~]: the projected buffer P, turned into the gates in place
        self.gates = projected[:steps]
        blocks = self.gates.unflatten(2, (3, hidden))
        self.relevance_steps, self.update_steps, self.candidate_steps = (blocks[:, :, k].unbind(0) for k in range(3))
        self.relevance_update_steps = self.gates[..., : 2 * hidden].unbind(0)
        if self.after:  # W c<t-1> + [0 ; 0 ; b_cc] of every step (the c~ rows are needed backward)
            self.recurrent = torch.empty_like(self.gates)
            self.recurrent_steps = self.recurrent.unbind(0)
            self.recurrent_relevance_update = self.recurrent[..., : 2 * hidden].unbind(0)
            self.recurrent_candidate = self.recurrent[..., 2 * hidden :].unbind(0)
            self.recurrent_bias = torch.cat([self.params[1].new_zeros(2 * hidden), self.params[1]])
            self.weight_t = _transposed(weight)
        else:  # Γr c<t-1>, the operand of W_cc
            self.reset_state = projected.new_empty(steps, projected.shape[1], hidden)
            self.reset_state_steps = self.reset_state.unbind(0)
            self.weight_t = _transposed(weight[: 2 * hidden])
            self.weight_candidate_t = _transposed(weight[2 * hidden :])

    def forward_step(self, t: int, prev: State, out: State) -> None:
        (c_prev,) = prev
        relevance_update = self.relevance_update_steps[t]
        if self.after:
            torch.addmm(self.recurrent_bias, c_prev, self.weight_t, out=self.recurrent_steps[t])
            relevance_update.add_(self.recurrent_relevance_update[t]).sigmoid_()
            candidate = self.candidate_steps[t].addcmul_(self.relevance_steps[t], self.recurrent_candidate[t]).tanh_()
        else:
            relevance_update.addmm_(c_prev, self.weight_t).sigmoid_()
            reset_state = torch.mul(self.relevance_steps[t], c_prev, out=self.reset_state_steps[t])
            candidate = self.candidate_steps[t].addmm_(reset_state, self.weight_candidate_t).tanh_()
        torch.addcmul(c_prev, self.update_steps[t], candidate - c_prev, out=out[0])

    def prepare_backward(self, states: State) -> None:
        hidden = self.hidden_size
        relevance, update, candidate = self.gates.unflatten(2, (3, hidden)).unbind(2)
        c_prev = states[0][:-1]
        keep = torch.sub(1, update)  # d c<t> / d c<t-1> directly
        # factors, rows [Γr ; Γu ; c~], become the pre-activation gradients in place
        factors = torch.empty_like(self.gates).unflatten(2, (3, hidden))
        d_candidate = _tanh_derivative_(candidate, factors[:, :, 2]).mul_(update)  # d pre(c~) / d c<t>
        torch.sub(candidate, c_prev, out=factors[:, :, 1]).mul_(update).mul_(keep)
        sigmoid_derivative = _sigmoid_derivative_(relevance, factors[:, :, 0])
        if self.after:
            # The gradient of the recurrent product W c<t-1> + [0; 0; b_cc]: rows Γr and c~
            # go through c~ = tanh(P_c + Γr (recurrent c~ row)).
            sigmoid_derivative.mul_(d_candidate).mul_(self.recurrent[..., 2 * hidden :])
            self.d_candidate = d_candidate.clone()  # for the projected c~ rows, in finish_backward
            d_candidate.mul_(relevance)
        else:
            sigmoid_derivative.mul_(c_prev)  # Γr's factor multiplies d (Γr c<t-1>), not the state gradient
            self.weight_candidate = self.params[0][2 * hidden :]
            self.weight_relevance_update = self.params[0][: 2 * hidden]
        self.d_pre = factors.flatten(2)
        self.d_pre_steps = self.d_pre.unbind(0)
        self.factor_steps = factors.unbind(0) if self.after else factors[:, :, 1:].unbind(0)
        self.relevance_factor_steps = factors[:, :, 0].unbind(0)
        self.d_reset_operand = self.d_pre[..., 2 * hidden :].unbind(0)
        self.d_relevance_update = self.d_pre[..., : 2 * hidden].unbind(0)
        self.keep_steps = keep.unbind(0)

    def backward_step(self, t: int, grad: State, out: State) -> None:
        (g,) = grad
        self.factor_steps[t].mul_(g.unsqueeze(1))
        if self.after:
            out[0].addcmul_(g, self.keep_steps[t]).addmm_(self.d_pre_steps[t], self.params[0])
            return
        d_reset_state = self.d_reset_operand[t].mm(self.weight_candidate)  # d (Γr c<t-1>)
        self.relevance_factor_steps[t].mul_(d_reset_state)
        out[0].addcmul_(g, self.keep_steps[t]).addcmul_(d_reset_state, self.relevance_steps[t])
        out[0].addmm_(self.d_relevance_update[t], self.weight_relevance_update)

    def finish_backward(self, states: State, grads: State) -> tuple[Tensor, tuple[Tensor, ...]]:
        hidden, c_prev, d_pre = self.hidden_size, states[0][:-1], self.d_pre
        if not self.after:
            d_weight = torch.cat([_weight_gradient(d_pre[..., : 2 * hidden], c_prev),
                                  _weight_gradient(d_pre[..., 2 * hidden :], self.reset_state)])
            return d_pre, (d_weight,)
        d_weight = _weight_gradient(d_pre, c_prev)
        d_bias = d_pre[..., 2 * hidden :].sum(dim=(0, 1))
        # The projected input's c~ rows get d pre(c~) itself, not Γr times it.
        torch.mul(grads[0][1:], self.d_candidate, out=d_pre[..., 2 * hidden :])
        return d_pre, (d_weight, d_bias)


class LSTMKernel(FusedKernel):
    """[Γu ; Γf ; c~ ; Γo] = [σ ; σ ; tanh ; σ](P + W a<t-1>) (+ peepholes in the subclass);
    c<t> = Γu c~ + Γf c<t-1>, a<t> = Γo tanh(c<t>). Internally [Γo ; Γu ; Γf ; 2 c~]."""

    state_count = 2
    order = (3, 0, 1, 2)
    scales = (1, 1, 1, 2)

    def begin(self, projected: Tensor, steps: int) -> None:
        hidden = self.hidden_size
        self.weight = reorder_rows(self.params[0], self.order, self.scales)
        self.weight_t = _transposed(self.weight)
        self.minus_one = projected.new_full((), -1.0)
        self.gates = projected[:steps]  # [Γo ; Γu ; Γf ; c~]: P, then P + W a<t-1>, activated in place
        self.tanh_c = projected.new_empty(steps, projected.shape[1], hidden)
        blocks = self.gates.unflatten(2, (4, hidden)).unbind(2)
        # per step: the gates (B, 4H); Γo, Γu, Γf, c~ and tanh c<t>, each (B, H)
        self.step_views = tuple(zip(self.gates.unbind(0), *(b.unbind(0) for b in blocks), self.tanh_c.unbind(0)))

    def forward_step(self, t: int, prev: State, out: State) -> None:
        (a_prev, c_prev), (a, c) = prev, out
        gates, output, update, forget, candidate, tanh_c = self.step_views[t]
        gates.addmm_(a_prev, self.weight_t).sigmoid_()
        self._cell(update, forget, candidate, c_prev, c)
        self._output(output, c, tanh_c, a)

    def _cell(self, update: Tensor, forget: Tensor, candidate: Tensor, c_prev: Tensor, c: Tensor) -> None:
        """c<t> = Γu c~ + Γf c<t-1>; c~ = 2 σ(2x) - 1, made in place from the sigmoid of its (doubled) block."""
        torch.mul(update, torch.add(self.minus_one, candidate, alpha=2, out=candidate), out=c)
        c.addcmul_(forget, c_prev)

    def _output(self, output: Tensor, c: Tensor, tanh_c: Tensor, a: Tensor) -> None:
        """a<t> = Γo tanh c<t>; tanh c<t> = 2 σ(2 c<t>) - 1 is kept for the backward pass."""
        torch.add(self.minus_one, torch.add(c, c, out=tanh_c).sigmoid_(), alpha=2, out=tanh_c)
        torch.mul(output, tanh_c, out=a)

    def prepare_backward(self, states: State) -> None:
        hidden = self.hidden_size
        output, update, forget, candidate = self.gates.unflatten(2, (4, hidden)).unbind(2)
        c_prev, tanh_c = states[1][:-1], self.tanh_c
        # d pre = da * factor (row Γo) or dc * factor (rows Γu, Γf, c~), where
        # dc = gradient of c<t> + da * d a<t> / d c<t>; d c<t-1> = dc * Γf.
        d_pre = _sigmoid_derivative_(self.gates, torch.empty_like(self.gates))  # c~'s block is replaced below
        factors = d_pre.unflatten(2, (4, hidden))
        factors[:, :, 0].mul_(tanh_c)
        factors[:, :, 1].mul_(candidate)
        factors[:, :, 2].mul_(c_prev)
        # d c~ / d (2 x) = (1 - c~²) / 2: the kernel's c~ pre-activation is doubled
        torch.addcmul(self.minus_one.new_full((), 0.5), candidate, candidate, value=-0.5,
                      out=factors[:, :, 3]).mul_(update)
        self.cell_factor = _tanh_derivative_(tanh_c, torch.empty_like(tanh_c)).mul_(output)  # d a<t> / d c<t>
        self.carry = forget  # d c<t-1> / d c<t>
        self.d_pre = d_pre
        self._add_peepholes(states)
        # per step: d pre (B, 4H); its Γo row and its rows Γu, Γf, c~ (B, 3, H); d a<t> / d c<t>; d c<t-1> / d c<t>
        self.backward_views = tuple(zip(d_pre.unbind(0), factors[:, :, 0].unbind(0), factors[:, :, 1:].unbind(0),
                                        self.cell_factor.unbind(0), self.carry.unbind(0)))
        self.d_cell_column = tanh_c.new_empty(tanh_c.shape[1], 1, hidden)  # dc of the current step, (B, 1, H)
        self.d_cell = self.d_cell_column.squeeze(1)

    def _add_peepholes(self, states: State) -> None:
        """The peephole kernel's changes to the factors (none here)."""

    def backward_step(self, t: int, grad: State, out: State) -> None:
        d_a, d_c = grad
        d_pre, d_output, d_cell_rows, cell_factor, carry = self.backward_views[t]
        d_cell = torch.addcmul(d_c, d_a, cell_factor, out=self.d_cell)
        d_cell_rows.mul_(self.d_cell_column)
        d_output.mul_(d_a)
        out[1].addcmul_(d_cell, carry)
        out[0].addmm_(d_pre, self.weight)

    def finish_backward(self, states: State, grads: State) -> tuple[Tensor, tuple[Tensor, ...]]:
        return self.d_pre, (restore_rows(_weight_gradient(self.d_pre, states[0][:-1]), self.order, self.scales),)


class PeepholeLSTMKernel(LSTMKernel):
    """The LSTM kernel plus peepholes p = [p_u ; p_f ; p_o]: Γu, Γf see c<t-1>; Γo sees
    c<t-1> (variant ``notes``) or c<t> (``gers``)."""

    def __init__(self, cell: RecurrentCell) -> None:
        super().__init__(cell)
        self.gers = cell.config.variant == "gers"

    def parameters(self) -> tuple[Tensor, ...]:
        return (self.cell.weight_a, self.cell.peephole)

    def begin(self, projected: Tensor, steps: int) -> None:
        super().begin(projected, steps)
        hidden, (p_update, p_forget, p_output) = self.hidden_size, self.params[1]
        # The rows that see c<t-1>, per step (B, k, H): Γu, Γf (gers; Γo sees c<t> later) or Γo, Γu, Γf.
        if self.gers:
            self.peep_before, self.peep_output = torch.stack([p_update, p_forget]), p_output
            self.peeped_steps = self.gates[..., hidden : 3 * hidden].unflatten(2, (2, hidden)).unbind(0)
            self.update_forget_candidate_steps = self.gates[..., hidden:].unbind(0)
        else:
            self.peep_before = torch.stack([p_output, p_update, p_forget])
            self.peeped_steps = self.gates[..., : 3 * hidden].unflatten(2, (3, hidden)).unbind(0)

    def forward_step(self, t: int, prev: State, out: State) -> None:
        (a_prev, c_prev), (a, c) = prev, out
        gates, output, update, forget, candidate, tanh_c = self.step_views[t]
        gates.addmm_(a_prev, self.weight_t)
        self.peeped_steps[t].addcmul_(self.peep_before, c_prev.unsqueeze(1))
        if self.gers:
            self.update_forget_candidate_steps[t].sigmoid_()
            self._cell(update, forget, candidate, c_prev, c)
            output.addcmul_(self.peep_output, c).sigmoid_()
        else:
            gates.sigmoid_()
            self._cell(update, forget, candidate, c_prev, c)
        self._output(output, c, tanh_c, a)

    def _add_peepholes(self, states: State) -> None:
        hidden, (p_update, p_forget, p_output) = self.hidden_size, self.params[1]
        d_output, d_update, d_forget, _ = self.d_pre.unflatten(2, (4, hidden)).unbind(2)
        # d c<t-1> = dc * (Γf + σ'u c~ p_u + σ'f c<t-1> p_f): the peepholes feed the gate gradients back.
        self.carry = torch.addcmul(self.carry, d_update, p_update).addcmul_(d_forget, p_forget)
        if self.gers:  # Γo sees c<t>: d a<t> / d c<t> gains a term through Γo
            self.cell_factor.addcmul_(d_output, p_output)
        # (notes: Γo sees c<t-1>, so d c<t-1> gains d pre(Γo) * p_o, added in each backward step)

    def backward_step(self, t: int, grad: State, out: State) -> None:
        super().backward_step(t, grad, out)
        if not self.gers:  # the step's d pre(Γo) is final now
            out[1].addcmul_(self.backward_views[t][1], self.params[1][2])

    def finish_backward(self, states: State, grads: State) -> tuple[Tensor, tuple[Tensor, ...]]:
        d_pre, (d_weight,) = super().finish_backward(states, grads)
        hidden, c_prev = self.hidden_size, states[1][:-1]
        if self.gers:
            d_update_forget = d_pre[..., hidden : 3 * hidden].unflatten(2, (2, hidden)) * c_prev.unsqueeze(2)
            d_output = (d_pre[..., :hidden] * states[1][1:]).sum(dim=(0, 1))
            d_update, d_forget = d_update_forget.sum(dim=(0, 1))
        else:
            seen = d_pre[..., : 3 * hidden].unflatten(2, (3, hidden)) * c_prev.unsqueeze(2)
            d_output, d_update, d_forget = seen.sum(dim=(0, 1))
        return d_pre, (d_weight, torch.stack([d_update, d_forget, d_output]))
