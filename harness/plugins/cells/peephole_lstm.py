"""The LSTM with peephole connections, as the lecture notes describe it.

The gates also see the previous memory cell c<t-1>, element by element (a diagonal
weight p per gate: "the 5-th element of c<t-1> affects only the 5-th element of the
corresponding gates"):

    Γu    = σ(W_u [a<t-1>, x<t>] + p_u * c<t-1> + b_u)
    Γf    = σ(W_f [a<t-1>, x<t>] + p_f * c<t-1> + b_f)
    c~<t> = tanh(W_c [a<t-1>, x<t>] + b_c)
    c<t>  = Γu * c~<t> + Γf * c<t-1>
    Γo    = σ(W_o [a<t-1>, x<t>] + p_o * c<t-1> + b_o)      (variant: notes)
    Γo    = σ(W_o [a<t-1>, x<t>] + p_o * c<t>   + b_o)      (variant: gers)
    a<t>  = Γo * tanh(c<t>)

The ``gers`` variant is that of Gers, Schraudolph & Schmidhuber 2002 and Graves 2013
(https://arxiv.org/abs/1308.0850, eq. 9), where the output gate looks at the new cell.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from harness import hookimpl
from harness.core.cells import CellConfig, RecurrentCell, State
from harness.fused.kernels import PeepholeLSTMKernel
from harness.core.limits import MAX_BIAS


class PeepholeLSTMConfig(CellConfig):
    variant: Literal["notes", "gers"] = Field("notes", description=(
        "Which cell value the output gate peeps at: c<t-1> (the notes) or c<t> (Gers/Graves)."))
    forget_bias: float = Field(1.0, ge=-MAX_BIAS, le=MAX_BIAS, description=(
        "Initial b_f; see the lstm cell for why 1.0."))


class PeepholeLSTMCell(RecurrentCell):
    """Rows as in ``lstm`` [Γu ; Γf ; c~ ; Γo]; ``peephole`` rows are [p_u ; p_f ; p_o]."""

    name = "peephole_lstm"
    Config = PeepholeLSTMConfig
    gate_count = 4
    state_names = ("a", "c")

    def __init__(self, input_size: int, hidden_size: int, config: PeepholeLSTMConfig | None = None) -> None:
        super().__init__(input_size, hidden_size, config)
        bound = 1.0 / hidden_size**0.5
        self.peephole = nn.Parameter(torch.empty(3, hidden_size).uniform_(-bound, bound))

    def reset_parameters(self) -> None:
        super().reset_parameters()
        hidden = self.hidden_size
        with torch.no_grad():
            self.bias[hidden : 2 * hidden].fill_(self.config.forget_bias)

    def step(self, projected: Tensor, state: State) -> State:
        a_prev, c_prev = state  # (B, H) each
        pre = projected + a_prev @ self.weight_a.T  # (B, 4H)
        pre_update, pre_forget, pre_candidate, pre_output = pre.chunk(4, dim=1)
        peep_update, peep_forget, peep_output = self.peephole  # (H,) each
        update = torch.sigmoid(pre_update + peep_update * c_prev)
        forget = torch.sigmoid(pre_forget + peep_forget * c_prev)
        c = update * torch.tanh(pre_candidate) + forget * c_prev
        seen_by_output = c_prev if self.config.variant == "notes" else c
        a = torch.sigmoid(pre_output + peep_output * seen_by_output) * torch.tanh(c)
        return (a, c)

    def fused_kernel(self) -> PeepholeLSTMKernel:
        return PeepholeLSTMKernel(self)

    @classmethod
    def param_count(cls, input_size: int, hidden_size: int, config: CellConfig | None = None) -> int:
        count = 4 * hidden_size * (input_size + hidden_size + 1) + 3 * hidden_size
        return count + cls._initial_count(hidden_size, config)


@hookimpl
def register_cells(register) -> None:
    register(PeepholeLSTMCell)
