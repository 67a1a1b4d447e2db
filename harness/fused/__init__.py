"""The fused recurrence: one autograd Function per layer direction, with backward through time by hand.

The reference loop (``harness.stack._run_cell``) calls ``cell.step`` once per time step and
lets autograd record every small operation, forward and backward. This path runs the
same function with far fewer operations: the forward loop writes each step into
preallocated buffers with in-place ATen operations and records nothing; the backward
loop computes the gate gradients of a step with a few element-wise operations and the
state gradient with one matrix product (``addmm``); everything that does not depend on
the recurrent gradient (activation derivatives, the weight gradients) is computed in
bulk, over all time steps at once, before or after the loop. It needs no compile step
and uses only device-agnostic ATen operations, so it runs on CPU and CUDA alike. The
built-in kernels hand over to variants whose element-wise step work is one call
(:meth:`FusedKernel.for_device`, :mod:`harness.fused.step_kernels`): of compiled C on the
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

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from harness.cells import RecurrentCell

if TYPE_CHECKING:
    from harness.cells import State

__all__ = ["FusedKernel", "Padding", "Recurrence", "backward_pass", "forward_pass", "kernel_for", "project_time_major",
           "native_enabled", "reorder_rows", "restore_rows", "run_fused", "triton_enabled"]


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

        The built-in kernels return their Triton variants (:mod:`harness.fused.triton_kernels`)
        where :func:`triton_enabled`, their compiled CPU variants (:mod:`harness.fused.native_kernels`)
        where :func:`native_enabled`.
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


def kernel_for(cell: RecurrentCell) -> FusedKernel | None:
    """The cell's fused kernel, or None when it has none.

    A kernel is written for one ``step``: a subclass that overrides ``step`` but not
    ``fused_kernel`` computes something else, so it gets none (it runs on the loop).
    """
    mro = type(cell).__mro__
    kernel_owner = next(c for c in mro if "fused_kernel" in c.__dict__)
    step_owner = next(c for c in mro if "step" in c.__dict__)
    if not issubclass(kernel_owner, step_owner):
        return None
    return cell.fused_kernel()


def run_fused(
    cell: RecurrentCell, inputs: Tensor, state: State, padding: Padding, kernel: FusedKernel | None = None,
    *, paths: set[str] | None = None,
) -> tuple[Tensor, State]:
    """The fused counterpart of the reference loop ``_run_cell``, same arguments and results.

    Args:
        inputs: (B, T, I); state: each (B, H); padding: see :class:`Padding`.
        paths: where to record how the call ran: the kernel's ``path_name``, with "-graphs"
            where CUDA-graph replays are on (``RecurrentStack.paths_used``).
    Returns:
        outputs (B, T, H), zero at padding, and the state after each sequence's last real token.
    """
    kernel = kernel if kernel is not None else kernel_for(cell)
    if kernel is None:
        raise ValueError(f"cell {type(cell).__name__} has no fused kernel")
    kernel = kernel.for_device(inputs.device)
    if paths is not None:
        paths.add(kernel.path_name + ("-graphs" if graphs.active(inputs.device) else ""))
    if torch.is_autocast_enabled(inputs.device.type):  # the kernels compute in the parameters' dtype
        dtype = cell.weight_a.dtype
        with torch.autocast(inputs.device.type, enabled=False):
            return run_fused(cell, inputs.to(dtype), tuple(s.to(dtype) for s in state), padding, kernel)
    if _default_projection(cell, kernel):  # the Function projects, and differentiates the projection
        source, weight_x, bias = inputs, cell.weight_x, cell.bias
    else:
        source, weight_x, bias = kernel.project(inputs), None, None  # (T, B, G*H), differentiated by autograd
    state = tuple(s.expand(inputs.shape[0], cell.hidden_size) for s in state)
    recording = torch.is_grad_enabled()  # the Function's forward runs without grad mode, so ask here
    outputs, *final = _FusedRecurrence.apply(kernel, padding, recording, source, weight_x, bias, *state,
                                             *kernel.parameters())
    return outputs, tuple(final)


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


@functools.cache
def _native_imports() -> bool:
    try:
        from harness.fused import _native_steps  # noqa: F401
    except ImportError:  # not built (no C compiler at install time): the ATen kernels run
        return False
    return True


def _default_projection(cell: RecurrentCell, kernel: FusedKernel) -> bool:
    return (type(cell).project_inputs is RecurrentCell.project_inputs
            and type(kernel).project is FusedKernel.project)


@dataclass
class Recurrence:
    """What one forward pass of the fused loop leaves for its backward pass."""

    kernel: FusedKernel
    padding: Padding
    #: The state tensors over time, each (steps + 1, B, H); index t is the state before step t.
    states: State
    #: (T, B, G*H) of the projected inputs.
    shape: torch.Size
    #: Whether the Function projected the inputs itself (``weight_x`` given).
    projects: bool
    #: Of (source, weight_x, bias, *state<0>, *params): which need a gradient.
    needs_input_grad: tuple[bool, ...]


def forward_pass(kernel: FusedKernel, padding: Padding, source: Tensor, weight_x: Tensor | None, bias: Tensor | None,
                 state0: State, params: tuple[Tensor, ...],
                 needs_input_grad: tuple[bool, ...]) -> tuple[Tensor, State, Recurrence, tuple[Tensor, ...]]:
    """The fused forward loop: outputs (B, T, H), the final state, what the backward pass
    needs, and the tensors it reads (the params; the time-major inputs and W_ax when it projects)."""
    count = kernel.state_count
    if weight_x is None:
        # the kernel may overwrite it (autograd's stays intact) and reads it as laid out contiguously
        projected, inputs = source.clone(memory_format=torch.contiguous_format), None
    else:
        inputs = source.transpose(0, 1).contiguous()  # (T, B, I), also the weight gradient's operand
        weight_x, bias = (reorder_rows(w, kernel.order, kernel.scales) for w in (weight_x, bias))
        # mm, then the bias: addmm would first broadcast the bias into its output, a slow copy on CPU
        projected = inputs.flatten(0, 1).mm(weight_x.t()).add_(bias).unflatten(0, inputs.shape[:2])
    total, batch, _ = projected.shape
    steps, hidden = padding.longest, kernel.hidden_size
    kernel.params = params
    states = tuple(projected.new_empty(steps + 1, batch, hidden) for _ in range(count))
    for buffer, initial in zip(states, state0):
        buffer[0].copy_(initial)
    keep = None if padding.mask is None else padding.mask.unsqueeze(2)  # (B, T, 1)
    kernel.begin(projected, steps)
    if not kernel.forward_loop(states, padding):
        per_step = tuple(zip(*(s.unbind(0) for s in states)))  # per_step[t]: the state before step t
        for t in range(steps):
            prev, new = per_step[t], per_step[t + 1]
            kernel.forward_step(t, prev, new)
            if t >= padding.shortest:  # hold the state of sequences that have ended
                for n, p in zip(new, prev):
                    torch.where(keep[:, t], n, p, out=n)
    outputs = (projected.new_zeros if steps < total else projected.new_empty)(batch, total, hidden)
    outputs[:, :steps] = states[0][1:].transpose(0, 1)
    if keep is not None:
        outputs.masked_fill_(~keep, 0.0)
    final = tuple(s[steps].clone() for s in states)
    recurrence = Recurrence(kernel, padding, states, projected.shape, inputs is not None, needs_input_grad)
    return outputs, final, recurrence, (*params, *(() if inputs is None else (inputs, weight_x)))


def backward_pass(recurrence: Recurrence, saved: tuple[Tensor, ...], grad_outputs: Tensor,
                  grad_final: State) -> tuple[Tensor | None, ...]:
    """The fused backward loop: the gradients of (source, weight_x, bias, *state<0>, *params)."""
    kernel, padding, states = recurrence.kernel, recurrence.padding, recurrence.states
    param_count = len(saved) - (2 if recurrence.projects else 0)
    kernel.params = saved[:param_count]
    total = recurrence.shape[0]
    steps = padding.longest
    keep = None if padding.mask is None else padding.mask[:, :steps].transpose(0, 1).unsqueeze(2)  # (T, B, 1)
    # grads[i][t]: gradient w.r.t. state tensor i before step t. It starts as what reaches
    # that state directly (output t - 1 for the output state, the final state at t = T)
    # and the loop, from t = T - 1 down, adds what flows back through step t.
    grads = (torch.empty_like(states[0]), *(torch.zeros_like(s) for s in states[1:]))
    grads[0][0].zero_()
    grads[0][1:].copy_(grad_outputs[:, :steps].transpose(0, 1))
    if keep is not None:
        keep, drop = keep.to(grad_outputs.dtype), (~keep).to(grad_outputs.dtype)
        grads[0][1:].mul_(keep)  # outputs are constant zero at padding
    for buffer, final in zip(grads, grad_final):
        buffer[steps].add_(final)
    kernel.prepare_backward(states)
    if not kernel.backward_loop(grads, padding):
        per_step = tuple(zip(*(g.unbind(0) for g in grads)))
        for t in range(steps - 1, -1, -1):
            grad, out = per_step[t + 1], per_step[t]
            if t >= padding.shortest:  # held state: the gradient passes straight through
                for g, o in zip(grad, out):
                    o.addcmul_(g, drop[t])
                    g.mul_(keep[t])
            kernel.backward_step(t, grad, out)
    d_projected, d_params = kernel.finish_backward(states, grads)  # (steps, B, G*H)
    d_state0 = tuple(g[0] for g in grads)
    projection = _projection_gradients(recurrence, saved[param_count:], d_projected, total)
    return (*projection, *d_state0, *d_params)


class _FusedRecurrence(torch.autograd.Function):
    """(recording, source, W_ax, b, *state<0>, *kernel params) -> (outputs, *final state) over all T steps.

    ``recording``: whether autograd records the call (grad mode was on). ``source`` is the
    (B, T, I) inputs, projected here with ``weight_x`` and ``bias``; or, when those are None,
    the projected inputs themselves, (T, B, G*H). On CUDA the loops may replay from CUDA
    graphs (:mod:`harness.fused.graphs`).
    """

    @staticmethod
    def forward(ctx, kernel: FusedKernel, padding: Padding, recording: bool, source: Tensor, weight_x: Tensor | None,
                bias: Tensor | None, *tensors: Tensor):
        count = kernel.state_count
        state0, params = tensors[:count], tensors[count:]
        # without grad mode no backward will run, whatever requires grad
        needs_input_grad = tuple(recording and needed for needed in ctx.needs_input_grad[3:])
        ctx.replay = graphs.replay_for(kernel, padding, source, weight_x, bias, state0, params, needs_input_grad)
        if ctx.replay is not None:
            outputs, final = ctx.replay.forward(source, state0, padding)
            return (outputs, *final)
        outputs, final, ctx.recurrence, saved = forward_pass(kernel, padding, source, weight_x, bias, state0, params,
                                                             needs_input_grad)
        ctx.save_for_backward(*saved)
        return (outputs, *final)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_outputs: Tensor, *grad_final: Tensor):
        if ctx.replay is not None:
            return (None, None, None, *ctx.replay.backward(grad_outputs, grad_final))
        return (None, None, None, *backward_pass(ctx.recurrence, ctx.saved_tensors, grad_outputs, grad_final))


def _projection_gradients(recurrence: Recurrence, saved: tuple[Tensor, ...], d_projected: Tensor,
                          total: int) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The gradients of the Function's source, W_ax and b from the projected-input gradient
    (``steps``, B, G*H), zero for the ``total - steps`` steps after the longest sequence;
    ``saved``: the time-major inputs and W_ax as the kernel's rows, when the Function projected."""
    steps, batch, width = d_projected.shape
    if not recurrence.projects:  # autograd differentiates the projection: it gets the (T, B, G*H) gradient
        if steps < total:
            d_projected = torch.cat([d_projected, d_projected.new_zeros(total - steps, batch, width)])
        return d_projected, None, None
    kernel, needs_input_grad = recurrence.kernel, recurrence.needs_input_grad
    inputs, weight_x = saved  # (T, B, I); (G*H, I)
    flat = d_projected.flatten(0, 1)  # (steps * B, G*H)
    d_inputs = d_weight = d_bias = None
    if needs_input_grad[0]:
        d_inputs = flat.mm(weight_x).unflatten(0, (steps, batch))
        if steps < total:
            d_inputs = torch.cat([d_inputs, d_inputs.new_zeros(total - steps, batch, inputs.shape[2])])
        d_inputs = d_inputs.transpose(0, 1)  # (B, T, I), as the inputs
    if needs_input_grad[1]:
        d_weight = restore_rows(flat.t().mm(inputs[:steps].flatten(0, 1)), kernel.order, kernel.scales)
    if needs_input_grad[2]:
        d_bias = restore_rows(flat.sum(0), kernel.order, kernel.scales)
    return d_inputs, d_weight, d_bias


from harness.fused import graphs  # noqa: E402 - it builds on the passes above
