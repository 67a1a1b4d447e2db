"""The compiled-C backend of :mod:`harness.fused.step_kernels`, and whole loops in C.

On the CPU the ATen kernels of :mod:`harness.fused.kernels` spend most of a small step
dispatching its 5-10 element-wise operations from Python. The variants here do a step's
element-wise work in one function of the extension module ``harness.fused._native_steps``
(two for ``gru`` with reset before): plain C loops over the step's B*H elements, compiled
when the package is installed (``harness/fused/_native_steps.c``; no compile step at run
time), vectorised by the compiler, single-threaded, with the GIL released.

Where :func:`whole_loops` (torch's BLAS product found), each layer direction's forward
and backward loops are one C call each, the recurrent products included
(:meth:`FusedKernel.forward_loop`); otherwise the generic Python loop calls a product and
a C step function per step.

:func:`harness.fused.variants.on_device` of the built-in kernels returns these on the CPU for
float32 and float64 parameters where :func:`harness.fused.native_enabled`;
``HARNESS_FUSED_NATIVE=0`` keeps the ATen kernels, as does an install whose extension was
not built (no C compiler: the build skips it and says so).
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import os
from pathlib import Path

import torch
from torch import Tensor

from harness.core.cells import State
from harness.fused.kernel import NATIVE_MODULE, Padding
from harness.fused.kernels import GRUKernel, LSTMKernel, PeepholeLSTMKernel, SimpleGRUKernel
from harness.fused.step_kernels import (StepGRUKernel, StepLSTMKernel, StepPeepholeLSTMKernel, StepSimpleGRUKernel,
                                        _OneCallSteps)

_native_steps = importlib.import_module(NATIVE_MODULE)

__all__ = ["NativeGRUKernel", "NativeLSTMKernel", "NativePeepholeLSTMKernel", "NativeSimpleGRUKernel", "VARIANTS"]

#: The dtypes the C functions compute in (each in its own).
DTYPES = (torch.float32, torch.float64)


class _NativeSteps(_OneCallSteps):
    """Calls a C step function with the tensors' data pointers."""

    path_name = "fused-native"
    steps = _native_steps

    def _setup_launch(self, reference: Tensor) -> None:
        """``reference``: a (B, H) state; every call covers its B*H elements."""
        if reference.dtype not in DTYPES or reference.device.type != "cpu":
            raise TypeError(f"the native step kernels compute float32/float64 CPU tensors, not {reference.dtype} "
                            f"on {reference.device}")
        if not self.gates.is_contiguous():  # the C code reads step t's rows at t*B*G*H + b*G*H
            raise ValueError("the native step kernels need contiguous (T, B, G*H) gates")
        self.float64 = reference.dtype == torch.float64
        self.count = reference.shape[0] * self.hidden_size

    def _run(self, step_function, *tensors: Tensor, **constants) -> None:
        """Call ``step_function`` on ``tensors``: each a contiguous step view that
        :mod:`harness.fused.step_kernels` made, in the layout the C code reads."""
        step_function(self.float64, *[t.data_ptr() for t in tensors], self.count, self.hidden_size,
                      *constants.values())


class _WholeLoops(_NativeSteps):
    """Forward and backward loops as one C call each, where :func:`whole_loops`: each step's
    recurrent products (torch's BLAS gemm, called from C) and step functions, with no Python
    between the steps, holding ended sequences' states as the generic loop does."""

    @property
    def stepwise(self) -> bool:
        return not whole_loops()

    def forward_loop(self, states: State, padding: Padding) -> bool:
        if self.stepwise:
            return False
        keep, keep_stride = _keep(padding)  # held until the C loop has returned
        self._forward_loop(states, (_address(keep), keep_stride, padding.shortest, *self._sizes()))
        return True

    def backward_loop(self, grads: State, padding: Padding) -> bool:
        if self.stepwise:
            return False
        keep, keep_stride = _keep(padding)
        self._backward_loop(grads, (_address(keep), keep_stride, padding.shortest, *self._sizes()))
        return True

    def _sizes(self) -> tuple[int, int, int]:
        steps, batch, _ = self.gates.shape
        return steps, batch, self.hidden_size

    def _forward_loop(self, states: State, sizes: tuple[int, ...]) -> None:
        """Call the C forward loop; ``sizes``: its last arguments (keep, keep_stride, shortest, steps, batch, hidden)."""
        raise NotImplementedError

    def _backward_loop(self, grads: State, sizes: tuple[int, ...]) -> None:
        """Call the C backward loop, as :meth:`_forward_loop`."""
        raise NotImplementedError


class _WholeLSTMLoops(_WholeLoops):
    """The LSTMs' whole loops."""

    def _forward_loop(self, states: State, sizes: tuple[int, ...]) -> None:
        a, c = states
        _native_steps.lstm_forward_loop(self.float64, self.gates.data_ptr(), self.weight_t.data_ptr(), a.data_ptr(),
                                        c.data_ptr(), self.tanh_c.data_ptr(), self.peephole.data_ptr(), *sizes,
                                        self.peephole_mode)

    def _backward_loop(self, grads: State, sizes: tuple[int, ...]) -> None:
        d_a, d_c = grads
        # With peepholes, the loop also sums their gradient (3, H) step by step, while the step's
        # data is in cache (see NativePeepholeLSTMKernel.finish_backward).
        peepholes = self.peephole_mode != _native_steps.PEEPHOLE_NONE
        self.d_peephole = self.peephole.new_zeros(3, self.hidden_size) if peepholes else None
        _native_steps.lstm_backward_loop(
            self.float64, self.gates.data_ptr(), self.weight.data_ptr(), self.cell_states.data_ptr(),
            self.tanh_c.data_ptr(), d_a.data_ptr(), d_c.data_ptr(), self.d_pre.data_ptr(), self.peephole.data_ptr(),
            _address(self.d_peephole), *sizes, self.peephole_mode)


def _keep(padding: Padding) -> tuple[Tensor | None, int]:
    """The (B, T) mask of real steps as contiguous bytes, and its row stride; (None, 0) without padding."""
    if padding.mask is None:
        return None, 0
    keep = padding.mask.to(torch.bool).contiguous()
    return keep, keep.shape[1]


def _address(tensor: Tensor | None) -> int:
    return 0 if tensor is None else tensor.data_ptr()


@functools.cache
def whole_loops() -> bool:
    """Whether the C loops can call torch's own BLAS product: found by name (``sgemm_``,
    ``dgemm_``, the Fortran interface ATen's CPU BLAS calls) in torch's CPU library, where
    torch's Linux builds export it, and checked once on a small product. Elsewhere (or
    with ``HARNESS_FUSED_NATIVE_LOOPS=0``) the generic Python loop calls the C steps."""
    if os.environ.get("HARNESS_FUSED_NATIVE_LOOPS", "1") == "0":
        return False
    try:
        library = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"),
                              mode=getattr(os, "RTLD_NOLOAD", 0) | os.RTLD_LOCAL)  # torch has loaded it already
        sgemm, dgemm = (ctypes.cast(getattr(library, name), ctypes.c_void_p).value for name in ("sgemm_", "dgemm_"))
    except (OSError, AttributeError):
        return False
    _native_steps.set_gemm(sgemm, dgemm)
    return all(_product_is_right(dtype) for dtype in DTYPES)


def _product_is_right(dtype: torch.dtype) -> bool:
    """One small LSTM forward loop through the found gemm against torch's product."""
    generator = torch.Generator().manual_seed(0)
    batch, hidden = 3, 2
    weight_t = torch.randn(hidden, 4 * hidden, dtype=dtype, generator=generator)
    a = torch.randn(2, batch, hidden, dtype=dtype, generator=generator)
    c, tanh_c = torch.zeros_like(a), torch.empty(1, batch, hidden, dtype=dtype)
    gates = torch.zeros(1, batch, 4 * hidden, dtype=dtype)
    expected = a[0] @ weight_t
    _native_steps.lstm_forward_loop(dtype == torch.float64, gates.data_ptr(), weight_t.data_ptr(), a.data_ptr(),
                                    c.data_ptr(), tanh_c.data_ptr(), weight_t.data_ptr(), 0, 0, 1, 1, batch, hidden,
                                    _native_steps.PEEPHOLE_NONE)
    # the step function overwrote the products with the gates; recompute them from the pre-activations
    output = torch.sigmoid(expected[:, :hidden])
    return bool(torch.allclose(gates[0, :, :hidden], output, rtol=1e-5, atol=1e-6))


class NativeLSTMKernel(_WholeLSTMLoops, StepLSTMKernel):
    """:class:`LSTMKernel` with its loops in C (or one C call per step each way)."""


class NativePeepholeLSTMKernel(_WholeLSTMLoops, StepPeepholeLSTMKernel):
    """:class:`PeepholeLSTMKernel` with its loops in C (or one C call per step each way)."""

    def finish_backward(self, states: State, grads: State) -> tuple[Tensor, tuple[Tensor, ...]]:
        if self.stepwise:
            return super().finish_backward(states, grads)
        # PeepholeLSTMKernel's would sum the peepholes' gradient over all steps again: the loop did
        d_pre, (d_weight,) = LSTMKernel.finish_backward(self, states, grads)
        return d_pre, (d_weight, self.d_peephole)


class NativeSimpleGRUKernel(_WholeLoops, StepSimpleGRUKernel):
    """:class:`SimpleGRUKernel` with its loops in C (or one C call per step each way)."""

    def _forward_loop(self, states: State, sizes: tuple[int, ...]) -> None:
        _native_steps.simple_gru_forward_loop(self.float64, self.gates.data_ptr(), self.weight_t.data_ptr(),
                                              states[0].data_ptr(), *sizes)

    def _backward_loop(self, grads: State, sizes: tuple[int, ...]) -> None:
        weight = self.params[0].contiguous()  # (2H, H)
        _native_steps.simple_gru_backward_loop(self.float64, self.gates.data_ptr(), weight.data_ptr(),
                                               self.cell_states.data_ptr(), grads[0].data_ptr(),
                                               self.d_pre.data_ptr(), *sizes)


class NativeGRUKernel(_WholeLoops, StepGRUKernel):
    """:class:`GRUKernel` with its loops in C (or C calls per step each way, two with reset before)."""

    def _forward_loop(self, states: State, sizes: tuple[int, ...]) -> None:
        if self.after:  # weight_t (H, 3H); recurrent (T, B, 3H)
            _native_steps.gru_after_forward_loop(self.float64, self.gates.data_ptr(), self.recurrent.data_ptr(),
                                                 self.weight_t.data_ptr(), self.recurrent_bias.data_ptr(),
                                                 states[0].data_ptr(), *sizes)
        else:  # weight_t (H, 2H) of the r, u rows; weight_candidate_t (H, H); reset_state (T, B, H)
            _native_steps.gru_before_forward_loop(self.float64, self.gates.data_ptr(), self.reset_state.data_ptr(),
                                                  self.weight_t.data_ptr(), self.weight_candidate_t.data_ptr(),
                                                  states[0].data_ptr(), *sizes)

    def _backward_loop(self, grads: State, sizes: tuple[int, ...]) -> None:
        weight = self.params[0].contiguous()  # (3H, H)
        if self.after:
            _native_steps.gru_after_backward_loop(self.float64, self.gates.data_ptr(), self.recurrent.data_ptr(),
                                                  weight.data_ptr(), self.cell_states.data_ptr(),
                                                  grads[0].data_ptr(), self.d_pre.data_ptr(),
                                                  self.d_candidate.data_ptr(), *sizes)
        else:
            _native_steps.gru_before_backward_loop(self.float64, self.gates.data_ptr(), weight.data_ptr(),
                                                   self.cell_states.data_ptr(), grads[0].data_ptr(),
                                                   self.d_pre.data_ptr(), self.d_reset_state.data_ptr(), *sizes)


#: The native variant of each built-in kernel (exact types: a subclass may compute something else).
VARIANTS = {
    LSTMKernel: NativeLSTMKernel,
    PeepholeLSTMKernel: NativePeepholeLSTMKernel,
    SimpleGRUKernel: NativeSimpleGRUKernel,
    GRUKernel: NativeGRUKernel,
}
