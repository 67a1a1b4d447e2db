"""The Triton backend of :mod:`harness.fused.step_kernels`: each step's element-wise work in one launch.

On the GPU the ATen kernels of :mod:`harness.fused.kernels` are launch-bound: every small
operation of a step is a kernel launch. The variants here launch one kernel of
:mod:`harness.fused.triton_steps` per step each way instead (two for ``gru`` with reset
before).

:func:`harness.fused.variants.on_device` of the built-in kernels returns these on CUDA when Triton
imports (:func:`harness.fused.triton_enabled`); ``HARNESS_FUSED_TRITON=0`` keeps the ATen kernels.
"""

from __future__ import annotations

import torch
import triton.language as tl
from torch import Tensor

from harness.fused import triton_steps
from harness.fused.kernels import GRUKernel, LSTMKernel, PeepholeLSTMKernel, SimpleGRUKernel
from harness.fused.step_kernels import (StepGRUKernel, StepLSTMKernel, StepPeepholeLSTMKernel, StepSimpleGRUKernel,
                                        _OneCallSteps)

__all__ = ["TritonGRUKernel", "TritonLSTMKernel", "TritonPeepholeLSTMKernel", "TritonSimpleGRUKernel"]

#: The dtype a step computes in, per tensor dtype.
_COMPUTE = {torch.float16: tl.float32, torch.bfloat16: tl.float32, torch.float32: tl.float32, torch.float64: tl.float64}


class _TritonSteps(_OneCallSteps):
    """What every Triton kernel class needs: the launch grid and the arithmetic dtype of a step."""

    path_name = "fused-triton"
    steps = triton_steps

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


class TritonLSTMKernel(_TritonSteps, StepLSTMKernel):
    """:class:`LSTMKernel` with one Triton launch per step each way."""


class TritonPeepholeLSTMKernel(_TritonSteps, StepPeepholeLSTMKernel):
    """:class:`PeepholeLSTMKernel` with one Triton launch per step each way."""


class TritonSimpleGRUKernel(_TritonSteps, StepSimpleGRUKernel):
    """:class:`SimpleGRUKernel` with one Triton launch per step each way."""


class TritonGRUKernel(_TritonSteps, StepGRUKernel):
    """:class:`GRUKernel` with Triton launches (two per step each way with reset before)."""


#: The Triton variant of each built-in kernel (exact types: a subclass may compute something else).
VARIANTS = {
    LSTMKernel: TritonLSTMKernel,
    PeepholeLSTMKernel: TritonPeepholeLSTMKernel,
    SimpleGRUKernel: TritonSimpleGRUKernel,
    GRUKernel: TritonGRUKernel,
}
