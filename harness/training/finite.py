"""The finite guard of training: a NaN or infinite loss or gradient ends the run FAILED(nonfinite).

The loss is checked in each family's training step (:mod:`harness.training.families`), the gradient
here, after backward and before clipping and the optimizer apply it: no weight, and so no checkpoint,
ever holds a non-finite step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from harness.core.errors import HarnessError


class NonFiniteLossError(HarnessError):
    """The training loss or its gradient became NaN or infinite; the run ends FAILED(nonfinite)."""


def gradient_norm(module: nn.Module) -> Tensor | None:
    """The global L2 norm of the parameters' gradients as they are now (0-d, on their device; None: no gradient)."""
    grads = [p.grad.detach() for p in module.parameters() if p.grad is not None]
    if not grads:
        return None
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def check_gradient(module: nn.Module, epoch: int, step: int) -> None:
    """Raise NonFiniteLossError if the gradient's norm is NaN or infinite (one host read)."""
    norm = gradient_norm(module)
    if norm is not None and not math.isfinite(float(norm)):
        raise NonFiniteLossError(f"gradient norm is {float(norm)} at epoch {epoch}, step {step} (the loss was finite); "
                                 "lower the learning rate")
