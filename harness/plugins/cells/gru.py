"""The full GRU of the lecture notes, with the relevance gate Γr.

    c~<t> = tanh(W_c [Γr * c<t-1>, x<t>] + b_c)          (reset: before, the notes' form)
    Γu    = σ(W_u [c<t-1>, x<t>] + b_u)
    Γr    = σ(W_r [c<t-1>, x<t>] + b_r)
    c<t>  = Γu * c~<t> + (1 - Γu) * c<t-1>,   a<t> = c<t>

Option ``reset: after`` is the form of cuDNN and ``torch.nn.GRU`` (Cho et al. 2014 v3
as implemented there): the relevance gate multiplies the recurrent product,

    c~<t> = tanh(W_cx x<t> + b_c + Γr * (W_cc c<t-1> + b_cc)),

which needs the extra bias b_cc. torch's update gate z is our 1 - Γu, so the fast path
hands torch the negated update-gate weights. Chung et al. 2014,
https://arxiv.org/abs/1412.3555, discuss both placements.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from harness import hookimpl
from harness.core.cells import CellConfig, RecurrentCell, State, TorchEquivalent
from harness.fused.kernels import GRUKernel


class GRUConfig(CellConfig):
    reset: Literal["before", "after"] = Field("before", description=(
        "Where Γr applies: before the candidate's recurrent product (the notes) or after it (cuDNN)."))


class GRUCell(RecurrentCell):
    """Rows of the stacked weights: [relevance Γr ; update Γu ; candidate c~] (torch's r, z, n order)."""

    name = "gru"
    Config = GRUConfig
    gate_count = 3
    state_names = ("c",)

    def __init__(self, input_size: int, hidden_size: int, config: GRUConfig | None = None) -> None:
        super().__init__(input_size, hidden_size, config)
        if self.config.reset == "after":
            bound = 1.0 / hidden_size**0.5
            self.bias_candidate_a = nn.Parameter(torch.empty(hidden_size).uniform_(-bound, bound))  # b_cc
        else:
            self.register_parameter("bias_candidate_a", None)

    def step(self, projected: Tensor, state: State) -> State:
        (c_prev,) = state  # (B, H)
        hidden = self.hidden_size
        pre_relevance, pre_update, pre_candidate = projected.chunk(3, dim=1)  # each (B, H)
        gates_recurrent = c_prev @ self.weight_a[: 2 * hidden].T  # (B, 2H)
        relevance = torch.sigmoid(pre_relevance + gates_recurrent[:, :hidden])
        update = torch.sigmoid(pre_update + gates_recurrent[:, hidden:])
        weight_candidate = self.weight_a[2 * hidden :]  # W_cc, (H, H)
        if self.config.reset == "before":
            candidate = torch.tanh(pre_candidate + (relevance * c_prev) @ weight_candidate.T)
        else:
            candidate = torch.tanh(pre_candidate + relevance * (c_prev @ weight_candidate.T + self.bias_candidate_a))
        return (update * candidate + (1 - update) * c_prev,)

    def fused_kernel(self) -> GRUKernel:
        return GRUKernel(self)

    def torch_equivalent(self) -> TorchEquivalent | None:
        if self.config.reset != "after":
            return None
        # torch: h' = (1 - z) n + z h, so z = 1 - Γu = σ(-(pre-activation of Γu)).
        hidden = self.hidden_size

        def flip_update(rows: Tensor) -> Tensor:
            return torch.cat([rows[:hidden], -rows[hidden : 2 * hidden], rows[2 * hidden :]])

        zeros = self.bias.new_zeros(2 * hidden)
        return TorchEquivalent(
            "GRU",
            flip_update(self.weight_x),
            flip_update(self.weight_a),
            flip_update(self.bias),
            torch.cat([zeros, self.bias_candidate_a]),
        )

    @classmethod
    def param_count(cls, input_size: int, hidden_size: int, config: CellConfig | None = None) -> int:
        after = isinstance(config, GRUConfig) and config.reset == "after"
        count = 3 * hidden_size * (input_size + hidden_size + 1) + (hidden_size if after else 0)
        return count + cls._initial_count(hidden_size, config)


@hookimpl
def register_cells(register) -> None:
    register(GRUCell)
