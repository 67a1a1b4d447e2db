"""The fused recurrence: one autograd Function per layer direction, with backward through time by hand.

The reference loop (``harness.networks.stack._run_cell``) calls ``cell.step`` once per time step and
lets autograd record every small operation, forward and backward. This path runs the
same function with far fewer operations: the forward loop writes each step into
preallocated buffers with in-place ATen operations and records nothing; the backward
loop computes the gate gradients of a step with a few element-wise operations and the
state gradient with one matrix product (``addmm``); everything that does not depend on
the recurrent gradient (activation derivatives, the weight gradients) is computed in
bulk, over all time steps at once, before or after the loop. It needs no compile step
and uses only device-agnostic ATen operations, so it runs on CPU and CUDA alike. The
built-in kernels hand over to variants whose element-wise step work is one call
(:func:`on_device`, :mod:`harness.fused.step_kernels`): of compiled C on the
CPU (:mod:`harness.fused.native_kernels`, built at install time), of a Triton kernel on
CUDA (:mod:`harness.fused.triton_kernels`). On CUDA the loops of a repeating call shape
also replay from CUDA graphs (:mod:`harness.fused.graphs`; ``HARNESS_CUDA_GRAPHS=0`` turns
that off).

Hand-written on purpose: ``torch.nn.RNN/GRU/LSTM`` (cuDNN, oneDNN) run only their own
equations, so the notes' cells (``gru_simple``, the GRU with the reset gate before the
product, the peephole LSTM) and third-party cells would otherwise run the reference loop,
which the benchmarks in ``benchmarks/results/`` (docs/speed.md) measure as several times slower.

A cell opts in by returning a :class:`FusedKernel` from ``RecurrentCell.fused_kernel``:
the step's math in batched form, forward and backward (the built-in ones are in
:mod:`harness.fused.kernels`). The machinery here owns everything else: the time loop,
the state buffers, padding (the state is held where the mask is False, as in the
reference loop), the output gradients and the autograd plumbing.

The input projection W_ax x<t> + b of all steps is one product, computed time-major,
(T, B, G*H), so that a step's slice and the whole-sequence weight products need no
copies; a kernel may ask for its gate blocks in another order and scaled by constants
(``FusedKernel.order`` and ``scales``, e.g. to evaluate tanh(x) as 2 σ(2x) - 1 with
the sigmoid gates in one operation). With the default projection (``weight_x``,
``bias``) the Function computes it, and its gradients by hand from the projected-input
gradient the kernel returns; the kernel owns the projected buffer and may turn it into
its gate buffer in place, saving a copy of it per call. A cell with its
own ``project_inputs`` (or a kernel with its own ``project``) is projected outside,
differentiated by autograd, and the kernel gets a copy.
"""

from harness.fused.kernel import (FusedKernel, Padding, native_enabled, project_time_major, reorder_rows, restore_rows,
                                  triton_enabled)
from harness.fused.passes import Recurrence, backward_pass, forward_pass
from harness.fused.recurrence import kernel_for, run_fused
from harness.fused.variants import on_device

__all__ = ["FusedKernel", "Padding", "Recurrence", "backward_pass", "forward_pass", "kernel_for", "on_device",
           "project_time_major", "native_enabled", "reorder_rows", "restore_rows", "run_fused", "triton_enabled"]
