"""Gradient flow through time: ‖∂L/∂a<t>‖ (and ‖∂L/∂c<t>‖) by distance from the step where the loss is read.

The probe runs the family's own loss on a deep copy of the network, forced onto the reference time
loop (ordinary autograd through ``cell.step``), so training is never touched and no fused backward
is trusted. It records every step's state of the top layer's forward cell of the first recurrent stack.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from harness.core.cells import State
from harness.networks.stack import RecurrentStack


@dataclass
class StepRecording:
    """What one forward call of a stack left behind: every step's new state and the real lengths."""

    states: list[State] = field(default_factory=list)  # T × (each (B, H))
    lengths: Tensor | None = None  # (B,), None: every sequence is T long
    done: bool = False


@contextmanager
def recording_steps(stack: RecurrentStack) -> Iterator[StepRecording]:
    """Record the first forward call of ``stack`` (which must be a copy: it is switched to the reference loop)."""
    stack.implementation, stack._torch_mode, stack._fused = "reference", None, False
    cell = stack.layers[-1][0]  # the top layer's forward direction: the states the output reads
    recording = StepRecording()
    original_forward, original_step = stack.forward, cell.step

    def forward(inputs: Tensor, lengths: Tensor | None = None, initial_state: State | None = None) -> Any:
        first = not recording.done
        result = original_forward(inputs, lengths, initial_state)
        if first:
            recording.lengths, recording.done = lengths, True
        return result

    def step(projected: Tensor, state: State) -> State:
        new_state = original_step(projected, state)
        if not recording.done:
            recording.states.append(new_state)
        return new_state

    stack.forward, cell.step = forward, step  # instance attributes shadow the methods, on the copy only
    try:
        yield recording
    finally:
        del stack.forward, cell.step


def gradient_by_distance(recording: StepRecording, loss: Tensor, state_names: tuple[str, ...]) -> dict[str, Any]:
    """Mean over examples of ‖∂L_T/∂s<T-d>‖ for each state s and distance d = 0 … T-1.

    L_T is the part of ``loss`` read at each example's last real step T: its gradient there, g = ∂L/∂s<T>,
    is carried back through the recurrence only (the surrogate Σ g·s<T>), so for a many-to-one task it is
    ∂L/∂s<t> itself, and for per-step losses the flow from the last step alone.
    Returns columns ``state``, ``distance``, ``norm``, ``examples`` (how many sequences reach that far back).
    """
    steps = len(recording.states)
    batch = recording.states[0][0].shape[0]
    flat = [part for state in recording.states for part in state]  # T*K tensors (B, H), step-major
    parts = len(state_names)
    lengths = recording.lengths if recording.lengths is not None else torch.full((batch,), steps)
    last = (lengths.to("cpu", torch.long) - 1)  # (B,)
    at_loss = torch.autograd.grad(loss, flat, retain_graph=True, allow_unused=True)
    rows = torch.arange(batch)
    surrogate = loss.new_zeros(())
    for k in range(parts):
        final = torch.stack([flat[t * parts + k] for t in range(steps)])[last, rows]  # (B, H): s_k<T_b> of each b
        direct = torch.stack([_zeros_if_none(g, flat[0]) for g in at_loss[k::parts]])[last, rows]  # (B, H)
        surrogate = surrogate + (direct.detach() * final).sum()
    through_time = torch.autograd.grad(surrogate, flat, allow_unused=True)
    columns: dict[str, list[Any]] = {"state": [], "distance": [], "norm": [], "examples": []}
    for k, name in enumerate(state_names):
        grads = torch.stack([_zeros_if_none(g, flat[0]) for g in through_time[k::parts]])  # (T, B, H)
        norms = grads.norm(dim=2)  # (T, B)
        for distance in range(int(last.max()) + 1):
            reaching = last >= distance  # (B,) sequences with a step `distance` before their last
            values = norms[(last - distance).clamp(min=0), rows][reaching]
            columns["state"].append(name)
            columns["distance"].append(distance)
            columns["norm"].append(float(values.mean()))
            columns["examples"].append(int(reaching.sum()))
    return columns


def _zeros_if_none(gradient: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if gradient is None else gradient


def probe_network(net: nn.Module, loss_of: Callable[[nn.Module], Tensor]) -> dict[str, Any]:
    """Gradient by distance of ``loss_of(copy)`` on a deep copy of ``net`` in eval mode (no dropout)."""
    probe = copy.deepcopy(net).eval()
    stack = next((m for m in probe.modules() if isinstance(m, RecurrentStack)), None)
    if stack is None:
        raise ValueError("the network has no RecurrentStack to probe")
    with torch.enable_grad(), recording_steps(stack) as recording:
        loss = loss_of(probe)
    if not recording.states:
        raise ValueError("the probe's forward pass never ran the recurrent stack")
    # State 0 is the output a<t> of every cell (the GRU's c<t> is its a<t>); a memory cell keeps its name.
    names = ("a", *stack.layers[-1][0].state_names[1:])
    return gradient_by_distance(recording, loss, names)
