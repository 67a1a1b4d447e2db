"""The simplified GRU of the lecture notes: one update gate, no relevance gate.

    c~<t> = tanh(W_c [c<t-1>, x<t>] + b_c)
    Γu    = σ(W_u [c<t-1>, x<t>] + b_u)
    c<t>  = Γu * c~<t> + (1 - Γu) * c<t-1>,      a<t> = c<t>

This is the Update-Gate RNN (UGRNN) of Collins, Sohl-Dickstein and Sussillo,
"Capacity and Trainability in Recurrent Neural Networks" (ICLR 2017,
https://arxiv.org/abs/1611.09913), up to gate polarity: the UGRNN writes
h<t> = g * h<t-1> + (1 - g) * c~<t>, i.e. its gate g is our 1 - Γu.
torch.nn has no such cell, so it runs on the fused kernel (harness.fused) here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness import hookimpl
from harness.core.cells import CellConfig, RecurrentCell, State
from harness.fused.kernels import SimpleGRUKernel


class SimpleGRUCell(RecurrentCell):
    """Rows of the stacked weights: [candidate c~ ; update Γu]."""

    name = "gru_simple"
    gate_count = 2
    state_names = ("c",)

    def step(self, projected: Tensor, state: State) -> State:
        (c_prev,) = state  # (B, H)
        pre = projected + c_prev @ self.weight_a.T  # (B, 2H)
        pre_candidate, pre_update = pre.chunk(2, dim=1)
        candidate = torch.tanh(pre_candidate)
        update = torch.sigmoid(pre_update)
        return (update * candidate + (1 - update) * c_prev,)

    def fused_kernel(self) -> SimpleGRUKernel:
        return SimpleGRUKernel(self)

    @classmethod
    def param_count(cls, input_size: int, hidden_size: int, config: CellConfig | None = None) -> int:
        return 2 * hidden_size * (input_size + hidden_size + 1) + cls._initial_count(hidden_size, config)


@hookimpl
def register_cells(register) -> None:
    register(SimpleGRUCell)
