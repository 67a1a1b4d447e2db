"""Triton element-wise kernels for one time step of the built-in cells, forward and backward.

Each launch covers the B*H elements of one step (one program per ``BLOCK`` of them) and
does a step's whole element-wise work: what the ATen kernels of
:mod:`harness.fused.kernels` do in 5-10 small operations, each a kernel launch on the
GPU. The recurrent matrix products stay with cuBLAS (``addmm``) on the host side, in
:mod:`harness.fused.triton_kernels`. The layouts are those of the ATen kernels, so the
bulk work before and after the loops is shared with them:

* the gates of a step are one contiguous (B, G*H) row per sequence, blocks of H;
* states and their gradients are contiguous (B, H);
* the LSTMs' blocks are [Γo ; Γu ; Γf ; c~] with the c~ pre-activation doubled
  (c~ = tanh(x) = 2 σ(2x) - 1); their peepholes are (3, H) rows [p_u ; p_f ; p_o].

``COMPUTE`` is the dtype of the arithmetic: float32 for float16/bfloat16 tensors, the
tensors' own otherwise. Stores convert back to the pointer's dtype.

With ``TRITON_INTERPRET=1`` in the environment before this module is imported, Triton
runs these kernels on CPU tensors through its interpreter; the tests use that where no
GPU is present.
"""

from __future__ import annotations

import triton
import triton.language as tl

#: Elements of a step per program.
BLOCK = 256
#: What every launch passes besides its tensors and COMPUTE. Fused multiply-adds, as ATen's
#: CUDA kernels and Triton's default have them, said explicitly (Triton 3.9 warns otherwise).
LAUNCH = dict(BLOCK=BLOCK, enable_fp_fusion=True)
PEEPHOLE_NONE, PEEPHOLE_NOTES, PEEPHOLE_GERS = 0, 1, 2


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _step_elements(count, hidden, GATES: tl.constexpr, BLOCK: tl.constexpr):
    """This program's elements of a step: their offsets b*H + j in the (B, H) states, which of
    them exist, and where column j of gate block 0 of row b is in the (B, GATES*H) gates."""
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    return offsets, offsets < count, (offsets // hidden) * (GATES * hidden) + offsets % hidden


@triton.jit
def _load(pointer, mask, COMPUTE: tl.constexpr):
    return tl.load(pointer, mask=mask, other=0.0).to(COMPUTE)


@triton.jit
def lstm_forward(gates, c_prev, c, a, tanh_c, peephole, count, hidden,
                 PEEPHOLE: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    """Activate the step's gates in place (pre-activations P + W a<t-1> in, Γo, Γu, Γf, c~ out)
    and write c<t>, a<t> and tanh c<t>."""
    offsets, mask, row = _step_elements(count, hidden, 4, BLOCK)
    cell_prev = _load(c_prev + offsets, mask, COMPUTE)
    pre_output = _load(gates + row, mask, COMPUTE)
    pre_update = _load(gates + row + hidden, mask, COMPUTE)
    pre_forget = _load(gates + row + 2 * hidden, mask, COMPUTE)
    pre_candidate = _load(gates + row + 3 * hidden, mask, COMPUTE)  # doubled
    if PEEPHOLE != 0:
        column = offsets % hidden
        peep_update = _load(peephole + column, mask, COMPUTE)
        peep_forget = _load(peephole + hidden + column, mask, COMPUTE)
        peep_output = _load(peephole + 2 * hidden + column, mask, COMPUTE)
        pre_update += peep_update * cell_prev
        pre_forget += peep_forget * cell_prev
        if PEEPHOLE == 1:  # notes: Γo sees c<t-1>
            pre_output += peep_output * cell_prev
    update = tl.sigmoid(pre_update)
    forget = tl.sigmoid(pre_forget)
    candidate = 2.0 * tl.sigmoid(pre_candidate) - 1.0
    cell = update * candidate + forget * cell_prev
    if PEEPHOLE == 2:  # gers: Γo sees c<t>
        pre_output += peep_output * cell
    output = tl.sigmoid(pre_output)
    tanh_cell = _tanh(cell)
    tl.store(gates + row, output, mask=mask)
    tl.store(gates + row + hidden, update, mask=mask)
    tl.store(gates + row + 2 * hidden, forget, mask=mask)
    tl.store(gates + row + 3 * hidden, candidate, mask=mask)
    tl.store(c + offsets, cell, mask=mask)
    tl.store(tanh_c + offsets, tanh_cell, mask=mask)
    tl.store(a + offsets, output * tanh_cell, mask=mask)


@triton.jit
def lstm_backward(gates, c_prev, tanh_c, d_a, d_c, d_c_prev, d_pre, peephole, count, hidden,
                  PEEPHOLE: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    """Step t's pre-activation gradients into ``d_pre`` (B, 4H), from the gradients ``d_a``,
    ``d_c`` of its state; adds the direct part of d c<t-1> to ``d_c_prev`` (the product
    with W for d a<t-1> is the caller's)."""
    offsets, mask, row = _step_elements(count, hidden, 4, BLOCK)
    output = _load(gates + row, mask, COMPUTE)
    update = _load(gates + row + hidden, mask, COMPUTE)
    forget = _load(gates + row + 2 * hidden, mask, COMPUTE)
    candidate = _load(gates + row + 3 * hidden, mask, COMPUTE)
    tanh_cell = _load(tanh_c + offsets, mask, COMPUTE)
    cell_prev = _load(c_prev + offsets, mask, COMPUTE)
    grad_a = _load(d_a + offsets, mask, COMPUTE)
    d_pre_output = grad_a * tanh_cell * output * (1.0 - output)
    d_cell = _load(d_c + offsets, mask, COMPUTE) + grad_a * output * (1.0 - tanh_cell * tanh_cell)
    if PEEPHOLE != 0:
        column = offsets % hidden
        peep_update = _load(peephole + column, mask, COMPUTE)
        peep_forget = _load(peephole + hidden + column, mask, COMPUTE)
        peep_output = _load(peephole + 2 * hidden + column, mask, COMPUTE)
        if PEEPHOLE == 2:  # gers: c<t> reaches a<t> through Γo too
            d_cell += d_pre_output * peep_output
    d_pre_update = d_cell * candidate * update * (1.0 - update)
    d_pre_forget = d_cell * cell_prev * forget * (1.0 - forget)
    d_pre_candidate = d_cell * update * (1.0 - candidate * candidate) * 0.5  # w.r.t. the doubled pre-activation
    carry = d_cell * forget
    if PEEPHOLE != 0:  # c<t-1> reaches the gates that peep at it
        carry += d_pre_update * peep_update + d_pre_forget * peep_forget
        if PEEPHOLE == 1:
            carry += d_pre_output * peep_output
    tl.store(d_pre + row, d_pre_output, mask=mask)
    tl.store(d_pre + row + hidden, d_pre_update, mask=mask)
    tl.store(d_pre + row + 2 * hidden, d_pre_forget, mask=mask)
    tl.store(d_pre + row + 3 * hidden, d_pre_candidate, mask=mask)
    tl.store(d_c_prev + offsets, _load(d_c_prev + offsets, mask, COMPUTE) + carry, mask=mask)


@triton.jit
def simple_gru_forward(gates, c_prev, c, count, hidden, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    """Gates [c~ ; Γu] (B, 2H) activated in place; c<t> = c<t-1> + Γu (c~ - c<t-1>)."""
    offsets, mask, row = _step_elements(count, hidden, 2, BLOCK)
    cell_prev = _load(c_prev + offsets, mask, COMPUTE)
    candidate = _tanh(_load(gates + row, mask, COMPUTE))
    update = tl.sigmoid(_load(gates + row + hidden, mask, COMPUTE))
    tl.store(gates + row, candidate, mask=mask)
    tl.store(gates + row + hidden, update, mask=mask)
    tl.store(c + offsets, cell_prev + update * (candidate - cell_prev), mask=mask)


@triton.jit
def simple_gru_backward(gates, c_prev, d_c, d_c_prev, d_pre, count, hidden,
                        COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    """d pre [c~ ; Γu] of the step, and d c<t-1> += d c<t> (1 - Γu)."""
    offsets, mask, row = _step_elements(count, hidden, 2, BLOCK)
    cell_prev = _load(c_prev + offsets, mask, COMPUTE)
    candidate = _load(gates + row, mask, COMPUTE)
    update = _load(gates + row + hidden, mask, COMPUTE)
    grad = _load(d_c + offsets, mask, COMPUTE)
    tl.store(d_pre + row, grad * update * (1.0 - candidate * candidate), mask=mask)
    tl.store(d_pre + row + hidden, grad * (candidate - cell_prev) * update * (1.0 - update), mask=mask)
    tl.store(d_c_prev + offsets, _load(d_c_prev + offsets, mask, COMPUTE) + grad * (1.0 - update), mask=mask)


@triton.jit
def gru_after_forward(gates, recurrent, c_prev, c, count, hidden, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    """Reset after the product: gates [Γr ; Γu ; c~] (B, 3H) = P in, activations out, with
    ``recurrent`` = W c<t-1> + [0 ; 0 ; b_cc] (B, 3H):
    Γr, Γu = σ(P + recurrent), c~ = tanh(P_c + Γr recurrent_c)."""
    offsets, mask, row = _step_elements(count, hidden, 3, BLOCK)
    cell_prev = _load(c_prev + offsets, mask, COMPUTE)
    relevance = tl.sigmoid(_load(gates + row, mask, COMPUTE) + _load(recurrent + row, mask, COMPUTE))
    update = tl.sigmoid(_load(gates + row + hidden, mask, COMPUTE)
                        + _load(recurrent + row + hidden, mask, COMPUTE))
    candidate = _tanh(_load(gates + row + 2 * hidden, mask, COMPUTE)
                      + relevance * _load(recurrent + row + 2 * hidden, mask, COMPUTE))
    tl.store(gates + row, relevance, mask=mask)
    tl.store(gates + row + hidden, update, mask=mask)
    tl.store(gates + row + 2 * hidden, candidate, mask=mask)
    tl.store(c + offsets, cell_prev + update * (candidate - cell_prev), mask=mask)


@triton.jit
def gru_after_backward(gates, recurrent, c_prev, d_c, d_c_prev, d_recurrent, d_candidate, count, hidden,
                       COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    """The gradient of the step's recurrent product [Γr ; Γu ; c~ rows] into ``d_recurrent``
    (B, 3H), that of the projected c~ rows (d pre(c~), not Γr times it) into
    ``d_candidate`` (B, H); d c<t-1> += d c<t> (1 - Γu)."""
    offsets, mask, row = _step_elements(count, hidden, 3, BLOCK)
    cell_prev = _load(c_prev + offsets, mask, COMPUTE)
    relevance = _load(gates + row, mask, COMPUTE)
    update = _load(gates + row + hidden, mask, COMPUTE)
    candidate = _load(gates + row + 2 * hidden, mask, COMPUTE)
    grad = _load(d_c + offsets, mask, COMPUTE)
    d_pre_candidate = grad * update * (1.0 - candidate * candidate)
    recurrent_candidate = _load(recurrent + row + 2 * hidden, mask, COMPUTE)
    tl.store(d_recurrent + row, d_pre_candidate * recurrent_candidate * relevance * (1.0 - relevance), mask=mask)
    tl.store(d_recurrent + row + hidden, grad * (candidate - cell_prev) * update * (1.0 - update), mask=mask)
    tl.store(d_recurrent + row + 2 * hidden, d_pre_candidate * relevance, mask=mask)
    tl.store(d_candidate + offsets, d_pre_candidate, mask=mask)
    tl.store(d_c_prev + offsets, _load(d_c_prev + offsets, mask, COMPUTE) + grad * (1.0 - update), mask=mask)


@triton.jit
def gru_before_gates(gates, c_prev, reset_state, count, hidden, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    """Reset before the product, first half: Γr, Γu = σ(P + W_ru c<t-1>) in place in gates
    [Γr ; Γu ; c~] (B, 3H), and the operand of W_cc, Γr c<t-1>, into ``reset_state``."""
    offsets, mask, row = _step_elements(count, hidden, 3, BLOCK)
    relevance = tl.sigmoid(_load(gates + row, mask, COMPUTE))
    tl.store(gates + row, relevance, mask=mask)
    tl.store(gates + row + hidden, tl.sigmoid(_load(gates + row + hidden, mask, COMPUTE)), mask=mask)
    tl.store(reset_state + offsets, relevance * _load(c_prev + offsets, mask, COMPUTE), mask=mask)


@triton.jit
def gru_before_cell(gates, c_prev, c, count, hidden, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    """Second half: c~ = tanh(P_c + W_cc (Γr c<t-1>)) in place, c<t> = c<t-1> + Γu (c~ - c<t-1>)."""
    offsets, mask, row = _step_elements(count, hidden, 3, BLOCK)
    cell_prev = _load(c_prev + offsets, mask, COMPUTE)
    update = _load(gates + row + hidden, mask, COMPUTE)
    candidate = _tanh(_load(gates + row + 2 * hidden, mask, COMPUTE))
    tl.store(gates + row + 2 * hidden, candidate, mask=mask)
    tl.store(c + offsets, cell_prev + update * (candidate - cell_prev), mask=mask)


@triton.jit
def gru_before_backward_cell(gates, c_prev, d_c, d_pre, count, hidden, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    """Backward, first half: d pre(Γu) and d pre(c~) into d_pre [Γr ; Γu ; c~] (B, 3H)."""
    offsets, mask, row = _step_elements(count, hidden, 3, BLOCK)
    cell_prev = _load(c_prev + offsets, mask, COMPUTE)
    update = _load(gates + row + hidden, mask, COMPUTE)
    candidate = _load(gates + row + 2 * hidden, mask, COMPUTE)
    grad = _load(d_c + offsets, mask, COMPUTE)
    tl.store(d_pre + row + hidden, grad * (candidate - cell_prev) * update * (1.0 - update), mask=mask)
    tl.store(d_pre + row + 2 * hidden, grad * update * (1.0 - candidate * candidate), mask=mask)


@triton.jit
def gru_before_backward_gates(gates, c_prev, d_c, d_reset_state, d_c_prev, d_pre, count, hidden,
                              COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    """Second half, given d (Γr c<t-1>) = d pre(c~) W_cc: d pre(Γr) into d_pre, and
    d c<t-1> += d c<t> (1 - Γu) + Γr d (Γr c<t-1>)."""
    offsets, mask, row = _step_elements(count, hidden, 3, BLOCK)
    cell_prev = _load(c_prev + offsets, mask, COMPUTE)
    relevance = _load(gates + row, mask, COMPUTE)
    update = _load(gates + row + hidden, mask, COMPUTE)
    grad = _load(d_c + offsets, mask, COMPUTE)
    d_reset = _load(d_reset_state + offsets, mask, COMPUTE)
    tl.store(d_pre + row, d_reset * cell_prev * relevance * (1.0 - relevance), mask=mask)
    carry = grad * (1.0 - update) + d_reset * relevance
    tl.store(d_c_prev + offsets, _load(d_c_prev + offsets, mask, COMPUTE) + carry, mask=mask)
