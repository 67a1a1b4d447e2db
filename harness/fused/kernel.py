"""The kernel interface of the fused recurrence (:class:`FusedKernel`), padding, the gate-block reordering
kernels may ask for, and where the compiled (C) and Triton step variants can run."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from harness.core.cells import RecurrentCell

if TYPE_CHECKING:
    from harness.core.cells import State


class FusedKernel:
    """The step math of one cell for the fused path; one instance per forward call.

    The generic loop calls, in order:

    * :meth:`begin` once, then :meth:`forward_step` for t = 0 .. T-1 (no autograd);
    * in the backward pass :meth:`prepare_backward` once, :meth:`backward_step` for
      t = T-1 .. 0, then :meth:`finish_backward` once.

    ``self.params`` holds the tensors of :meth:`parameters` (set before ``begin`` and
    again before ``prepare_backward``). A kernel keeps what it needs between the passes
    as attributes; the generic loop keeps the states, (T+1, B, H) per state tensor,
    index t being the state before step t (so index 0 is the initial state).

    At small sizes a step's cost is mostly its number of operations: prefer in-place
    operations and ``out=`` into preallocated buffers, and make per-step views in bulk
    (``unbind(0)``) rather than by indexing in every step.

    Gradients of a step (``backward_step``) must be linear in the incoming state
    gradient: the loop zeroes it at padded positions to stop gate gradients there.
    """

    #: How many (B, H) tensors the state has (the cell's ``len(state_names)``).
    state_count: ClassVar[int] = 1
    #: The order of the G gate blocks (of H rows) the kernel works in: block k of its
    #: projected inputs is block ``order[k]`` of the cell's. None keeps the cell's order.
    order: ClassVar[tuple[int, ...] | None] = None
    #: How runs name the fused path when this kernel runs it (``RecurrentStack.paths_used``).
    path_name: ClassVar[str] = "fused"
    #: A constant factor per block (in :attr:`order`) of the projected inputs the kernel
    #: gets: W_ax and b of block k are scaled by ``scales[k]`` (a power of two keeps it exact).
    scales: ClassVar[tuple[float, ...] | None] = None

    def __init__(self, cell: RecurrentCell) -> None:
        self.cell = cell
        self.hidden_size = cell.hidden_size
        self.params: tuple[Tensor, ...] = ()

    def parameters(self) -> tuple[Tensor, ...]:
        """The cell tensors the recurrence reads besides the projected inputs (W_aa, ...).

        They are inputs of the autograd Function; :meth:`finish_backward` returns their
        gradients in this order. The default is W_aa alone, what most cells read.
        """
        return (self.cell.weight_a,)

    def project(self, inputs: Tensor) -> Tensor:
        """W_ax x<t> + b of every step, time-major (T, B, G*H), blocks in :attr:`order`, times :attr:`scales`."""
        return project_time_major(self.cell, inputs, self.order, self.scales)

    def for_device(self, device: torch.device) -> FusedKernel:
        """The kernel to run on ``device``: this one, or a variant of it made for that device.

        A hook for third-party kernels. The built-in ones get their Triton or compiled CPU
        variants from :func:`harness.fused.variants.on_device`, which calls this for any other kernel.
        """
        return self

    def begin(self, projected: Tensor, steps: int) -> None:
        """Allocate the per-step buffers; ``projected`` is :meth:`project`'s result, (T, B, G*H).

        The kernel owns ``projected``: it may overwrite it (e.g. add the recurrent
        product to a step's slice in place) and keep it as a forward buffer.

        Only steps < ``steps`` run (the rest is padding).
        """
        raise NotImplementedError

    def forward_step(self, t: int, prev: State, out: State) -> None:
        """Write the state after step t into ``out`` (each (B, H)), from ``prev``."""
        raise NotImplementedError

    def forward_loop(self, states: State, padding: Padding) -> bool:
        """Run every forward step at once and return True, or return False (the default) to
        have the generic loop call :meth:`forward_step` for each step.

        For kernels that own a compiled loop (:mod:`harness.fused.native_kernels`). Called
        after :meth:`begin`; ``states`` as the generic loop keeps them, index 0 filled; it
        must hold the state of sequences that have ended (``padding``) as that loop does.
        """
        return False

    def prepare_backward(self, states: State) -> None:
        """Precompute, over all steps at once, what the backward steps multiply by."""

    def backward_loop(self, grads: State, padding: Padding) -> bool:
        """As :meth:`forward_loop`, for the backward steps (after :meth:`prepare_backward`);
        ``grads`` as :meth:`finish_backward` gets them, before the steps have added to them."""
        return False

    def backward_step(self, t: int, grad: State, out: State) -> None:
        """Add ``(d state<t+1> / d state<t>)^T grad`` to ``out`` and keep step t's gate gradients.

        ``grad``: the gradient with respect to the state after step t (do not modify it);
        ``out``: the gradient with respect to the state before it, which already holds
        what reaches that state from elsewhere (its output's gradient).
        """
        raise NotImplementedError

    def finish_backward(self, states: State, grads: State) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The projected-input gradient (``steps``, B, G*H), as :meth:`project`'s, and those of :meth:`parameters`.

        ``grads[i][t + 1]`` is the gradient that entered step t for state tensor i
        (zero at padding), ``grads[i][0]`` that of the initial state. Buffers made in
        this backward pass may be returned; what the forward pass saved must stay intact
        (the backward may run again, e.g. with ``retain_graph`` or in gradcheck).
        """
        raise NotImplementedError


@dataclass(frozen=True)
class Padding:
    """Where the batch is padded: steps < ``shortest`` are real for every sequence.

    ``mask`` (B, T) is True at real tokens, or None when every sequence has all T steps;
    the loop runs ``longest`` steps and masks only steps ``shortest`` .. ``longest`` - 1.
    """

    mask: Tensor | None
    shortest: int
    longest: int

    @classmethod
    def of(cls, mask: Tensor | None, lengths: Tensor | None, steps: int) -> Padding:
        if lengths is None or mask is None:
            return cls(None, steps, steps)
        shortest, longest = (int(v) for v in torch.aminmax(lengths))
        return cls(None if shortest == steps else mask, shortest, longest)


def reorder_rows(
    weight: Tensor, order: tuple[int, ...] | None, scales: tuple[float, ...] | None = None, *, dim: int = 0
) -> Tensor:
    """``weight`` with its gate blocks along ``dim`` in ``order`` (block k is block ``order[k]``;
    None keeps them in place), times ``scales``; ``weight`` itself when both are None."""
    if order is None and scales is None:
        return weight
    order = order if order is not None else tuple(range(len(scales)))
    blocks = weight.unflatten(dim, (len(order), -1)).unbind(dim)
    scales = scales if scales is not None else (1,) * len(order)
    return torch.cat([blocks[block] * scale if scale != 1 else blocks[block]
                      for block, scale in zip(order, scales)], dim=dim)


def restore_rows(gradient: Tensor, order: tuple[int, ...] | None, scales: tuple[float, ...] | None) -> Tensor:
    """The gradient w.r.t. a weight (or bias) from that w.r.t. ``reorder_rows(weight, order, scales)``."""
    if order is None and scales is None:
        return gradient
    order = order if order is not None else tuple(range(len(scales)))
    inverse = tuple(order.index(k) for k in range(len(order)))
    # d W = scale * d (scale W): block k of W went to position order.index(k) with its scale
    return reorder_rows(gradient, inverse, None if scales is None else tuple(scales[k] for k in inverse))


def project_time_major(
    cell: RecurrentCell, inputs: Tensor, order: tuple[int, ...] | None = None, scales: tuple[float, ...] | None = None
) -> Tensor:
    """``cell.project_inputs`` of (B, T, I) inputs as a contiguous (T, B, G*H) tensor,
    gate blocks in ``order`` and times ``scales`` (see :class:`FusedKernel`).

    With the default projection this is one product on rearranged weights, written
    time-major directly; a cell's own ``project_inputs`` is called as it is and its
    result rearranged (one copy).
    """
    if type(cell).project_inputs is RecurrentCell.project_inputs:
        weight, bias = reorder_rows(cell.weight_x, order, scales), reorder_rows(cell.bias, order, scales)
        return nn.functional.linear(inputs.transpose(0, 1), weight, bias)
    return reorder_rows(cell.project_inputs(inputs).transpose(0, 1), order, scales, dim=2).contiguous()


def triton_enabled(device: torch.device) -> bool:
    """Whether the built-in kernels run their Triton variants on ``device``.

    ``HARNESS_FUSED_TRITON``: ``auto`` (the default) on CUDA, where Triton imports; ``0``
    never; ``1`` also on the CPU while Triton runs as its interpreter (``TRITON_INTERPRET=1``
    before Triton is imported: slow, for tests and debugging).
    """
    setting = os.environ.get("HARNESS_FUSED_TRITON", "auto")
    if setting not in ("auto", "0", "1"):
        raise ValueError(f"HARNESS_FUSED_TRITON must be auto, 0 or 1, not {setting!r}")
    if setting == "0":
        return False
    if device.type == "cuda":
        return _triton_imports()
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    return setting == "1" and device.type == "cpu" and interpreted and _triton_imports()


@functools.cache
def _triton_imports() -> bool:
    try:
        import triton  # noqa: F401
    except Exception as error:  # a broken install keeps the ATen kernels, and says so once
        if importlib.util.find_spec("triton") is not None:
            warnings.warn(f"Triton is installed but does not import ({error}); the fused path uses ATen kernels",
                          RuntimeWarning, stacklevel=2)
        return False
    return True


def native_enabled(device: torch.device) -> bool:
    """Whether the built-in kernels run their compiled C variants (:mod:`harness.fused.native_kernels`) on ``device``.

    ``HARNESS_FUSED_NATIVE``: ``auto`` (the default) on the CPU where the extension was
    built at install time; ``0`` never; ``1`` on the CPU, and an error where it was not built.
    """
    setting = os.environ.get("HARNESS_FUSED_NATIVE", "auto")
    if setting not in ("auto", "0", "1"):
        raise ValueError(f"HARNESS_FUSED_NATIVE must be auto, 0 or 1, not {setting!r}")
    if setting == "0" or device.type != "cpu":
        return False
    if setting == "1" and not _native_imports():
        raise RuntimeError("HARNESS_FUSED_NATIVE=1, but the compiled step kernels (harness.fused._native_steps) "
                           "are not built: reinstall the project with a C compiler (./setup.sh, or pip install -e .), "
                           "or set HARNESS_FUSED_NATIVE=auto to use the ATen kernels")
    return _native_imports()


#: The compiled extension (harness/fused/_native_steps.c), imported by name: it is optional, and as a
#: compiled module it imports nothing of ours, which the import graph cannot see from its name alone.
NATIVE_MODULE = "harness.fused._native_steps"


@functools.cache
def _native_imports() -> bool:
    try:
        importlib.import_module(NATIVE_MODULE)
    except ImportError:  # not built (no C compiler at install time): the ATen kernels run
        return False
    return True
