"""The recurrent cell interface every cell plugin implements.

A cell is one time step of a recurrence in the notation of the lecture notes:
it maps the previous state and the input x<t> to the next state, whose first
tensor is the output activation a<t>. Every cell shares this interface, so the
recurrent stack, the training loop and the reports never branch on a cell name.

The notes write W_a[a<t-1>, x<t>] with W_a = [W_aa; W_ax]. A cell stores the two
halves separately, ``weight_x`` (W_ax, for all gates stacked) and ``weight_a``
(W_aa), because W_ax x<t> + b does not depend on the state: the stack computes it
for all time steps in one matrix product (``project_inputs``) before the time loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

if TYPE_CHECKING:
    from harness.fused import FusedKernel

#: A cell state: a tuple of (B, H) tensors; ``state[0]`` is the output a<t>.
State = tuple[Tensor, ...]


class CellConfig(BaseModel):
    """Options every cell accepts. Subclasses add their own fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_state: Literal["zeros", "learned"] = Field("zeros", description=(
        "a<0> (and c<0>): the notes' zeros, or a learned vector shared by all sequences."))


@dataclass(frozen=True)
class TorchEquivalent:
    """Weights of a ``torch.nn.RNN/LSTM/GRU`` layer that computes exactly this cell.

    ``mode`` is the torch module (``"RNN_TANH"``, ``"RNN_RELU"``, ``"LSTM"``, ``"GRU"``);
    the tensors are in torch's layout and gate order, built differentiably from the
    cell's own parameters so gradients flow back into the cell.
    """

    mode: str
    weight_ih: Tensor
    weight_hh: Tensor
    bias_ih: Tensor
    bias_hh: Tensor


class RecurrentCell(nn.Module):
    """Base class of every cell. Subclasses set the class attributes and ``step``.

    Subclasses set:
        name: the registry name (``"lstm"``).
        Config: a :class:`CellConfig` subclass with the cell's options.
        gate_count: rows of W_ax in units of ``hidden_size`` (LSTM: 4).
        state_names: the state tensors in order; the first is the output a<t>.

    and implement :meth:`step`. Optionally :meth:`torch_equivalent` (a fast path),
    :meth:`fused_kernel` (the other fast path) and :meth:`param_count` (a closed form;
    the default counts on the meta device).
    """

    name: ClassVar[str]
    Config: ClassVar[type[CellConfig]] = CellConfig
    gate_count: ClassVar[int] = 1
    state_names: ClassVar[tuple[str, ...]] = ("a",)
    #: ``harness tune`` defaults for this cell's own options, ``{option: {type, low, high, ...}}``
    #: in the experiment file's ``tuning.search_space`` form without the ``cell.`` prefix
    #: (the LSTM: ``forget_bias``). The file's entries override them.
    search_space: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, input_size: int, hidden_size: int, config: CellConfig | None = None) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"input_size and hidden_size must be positive, got {input_size}, {hidden_size}")
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}, got {type(self.config).__name__}")
        self.input_size, self.hidden_size = input_size, hidden_size
        rows = self.gate_count * hidden_size
        self.weight_x = nn.Parameter(torch.empty(rows, input_size))  # W_ax of every gate, stacked
        self.weight_a = nn.Parameter(torch.empty(rows, hidden_size))  # W_aa of every gate, stacked
        self.bias = nn.Parameter(torch.empty(rows))  # b of every gate, stacked
        if self.config.initial_state == "learned":
            self.initial = nn.Parameter(torch.zeros(len(self.state_names), hidden_size))
        else:
            self.register_parameter("initial", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias, as torch.nn's RNNs do."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for parameter in (self.weight_x, self.weight_a, self.bias):
            nn.init.uniform_(parameter, -bound, bound)

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """W_ax x<t> + b for every gate and every time step in one product.

        Args:
            inputs: (B, T, I)
        Returns:
            (B, T, gate_count * H)
        """
        return nn.functional.linear(inputs, self.weight_x, self.bias)

    def step(self, projected: Tensor, state: State) -> State:
        """One time step.

        Args:
            projected: (B, gate_count * H), this step's slice of :meth:`project_inputs`.
            state: the previous state, each tensor (B, H).
        Returns:
            The new state, each tensor (B, H); element 0 is a<t>.
        """
        raise NotImplementedError

    def initial_state(self, batch_size: int) -> State:
        """a<0> (and c<0>): zeros, or the learned vectors broadcast over the batch."""
        if self.initial is None:
            zeros = self.weight_a.new_zeros(batch_size, self.hidden_size)
            return tuple(zeros for _ in self.state_names)
        return tuple(v.expand(batch_size, -1) for v in self.initial)

    def torch_equivalent(self) -> TorchEquivalent | None:
        """Weights for the ``torch.nn`` fast path, or None when torch computes something else."""
        return None

    def fused_kernel(self) -> FusedKernel | None:
        """A new :class:`~harness.fused.FusedKernel` with this cell's step math, or None.

        The stack runs it (``implementation: fused``, or ``auto`` without a torch.nn
        equivalent) instead of the loop over :meth:`step`; it must compute the same function.
        """
        return None

    @classmethod
    def param_count(cls, input_size: int, hidden_size: int, config: CellConfig | None = None) -> int:
        """Number of trainable parameters of one cell of this size."""
        with torch.device("meta"):
            cell = cls(input_size, hidden_size, config)
        return sum(p.numel() for p in cell.parameters())

    @classmethod
    def _initial_count(cls, hidden_size: int, config: CellConfig | None) -> int:
        learned = config is not None and config.initial_state == "learned"
        return len(cls.state_names) * hidden_size if learned else 0

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}, config={self.config!r}"
