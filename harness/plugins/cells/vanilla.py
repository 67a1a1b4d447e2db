"""The basic RNN cell of the lecture notes.

    a<t> = g(W_a [a<t-1>, x<t>] + b_a),   W_a = [W_aa ; W_ax],   g = tanh (default) or ReLU

This is exactly what ``torch.nn.RNN`` computes (with its second bias at zero),
so the stack may run it through cuDNN/ATen.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from harness import hookimpl
from harness.core.cells import CellConfig, RecurrentCell, State, TorchEquivalent
from harness.fused.kernels import VanillaKernel


class VanillaConfig(CellConfig):
    activation: Literal["tanh", "relu"] = Field("tanh", description=(
        "The notes' g: tanh is the common choice; ReLU is the alternative they name."))


class VanillaCell(RecurrentCell):
    """a<t> = g(W_aa a<t-1> + W_ax x<t> + b_a)."""

    name = "vanilla"
    Config = VanillaConfig
    gate_count = 1
    state_names = ("a",)

    def step(self, projected: Tensor, state: State) -> State:
        (a_prev,) = state  # (B, H)
        pre_activation = projected + a_prev @ self.weight_a.T  # (B, H)
        g = torch.tanh if self.config.activation == "tanh" else torch.relu
        return (g(pre_activation),)

    def fused_kernel(self) -> VanillaKernel:
        return VanillaKernel(self)

    def torch_equivalent(self) -> TorchEquivalent:
        mode = "RNN_TANH" if self.config.activation == "tanh" else "RNN_RELU"
        return TorchEquivalent(mode, self.weight_x, self.weight_a, self.bias, torch.zeros_like(self.bias))

    @classmethod
    def param_count(cls, input_size: int, hidden_size: int, config: CellConfig | None = None) -> int:
        return hidden_size * (input_size + hidden_size + 1) + cls._initial_count(hidden_size, config)


@hookimpl
def register_cells(register) -> None:
    register(VanillaCell)
