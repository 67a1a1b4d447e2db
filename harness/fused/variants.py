"""Which kernel runs on a device: a built-in kernel hands over to its one-call-per-step variant
(:mod:`harness.fused.step_kernels`) where one applies: on CUDA the Triton one where
:func:`~harness.fused.kernel.triton_enabled`, on the CPU the compiled one where
:func:`~harness.fused.kernel.native_enabled` and the parameters are float32 or float64.

Only the exact built-in classes do: a third-party subclass may compute something else, so it
keeps its own :meth:`FusedKernel.for_device` (by default, itself). Vanilla has no variant: its
step is one product and one activation already.
"""

from __future__ import annotations

import torch

from harness.fused.kernel import FusedKernel, native_enabled, triton_enabled
from harness.fused.kernels import GRUKernel, LSTMKernel, PeepholeLSTMKernel, SimpleGRUKernel

_WITH_STEP_VARIANTS = (SimpleGRUKernel, GRUKernel, LSTMKernel, PeepholeLSTMKernel)


def on_device(kernel: FusedKernel, device: torch.device) -> FusedKernel:
    """The kernel to run on ``device``: a built-in kernel's step variant, else ``kernel.for_device(device)``."""
    if type(kernel) not in _WITH_STEP_VARIANTS:
        return kernel.for_device(device)
    if triton_enabled(device):
        from harness.fused.triton_kernels import VARIANTS  # imports triton
    elif native_enabled(device) and kernel.cell.weight_a.dtype in (torch.float32, torch.float64):
        from harness.fused.native_kernels import VARIANTS
    else:
        return kernel
    return VARIANTS[type(kernel)](kernel.cell)
