"""The LSTM of the lecture notes (Hochreiter & Schmidhuber 1997, with a forget gate).

    c~<t> = tanh(W_c [a<t-1>, x<t>] + b_c)
    Γu    = σ(W_u [a<t-1>, x<t>] + b_u)        (update, a.k.a. input gate)
    Γf    = σ(W_f [a<t-1>, x<t>] + b_f)        (forget)
    Γo    = σ(W_o [a<t-1>, x<t>] + b_o)        (output)
    c<t>  = Γu * c~<t> + Γf * c<t-1>
    a<t>  = Γo * tanh(c<t>)

This is exactly ``torch.nn.LSTM`` (gate order i, f, g, o = u, f, c~, o, second bias zero).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from harness import hookimpl
from harness.core.cells import CellConfig, RecurrentCell, State, TorchEquivalent
from harness.fused.kernels import LSTMKernel
from harness.core.limits import MAX_BIAS


class LSTMConfig(CellConfig):
    forget_bias: float = Field(1.0, ge=-MAX_BIAS, le=MAX_BIAS, description=(
        "Initial b_f. 1.0 (the default) starts Γf near σ(1) ≈ 0.73, so the cell remembers "
        "from the first step and gradients flow through c<t> early in training (Gers et al. "
        "2000; Jozefowicz et al. 2015 found it closes most of the LSTM/GRU gap). 0.0 is "
        "torch.nn.LSTM's initialisation."))


class LSTMCell(RecurrentCell):
    """Rows of the stacked weights: [update Γu ; forget Γf ; candidate c~ ; output Γo]."""

    name = "lstm"
    Config = LSTMConfig
    gate_count = 4
    state_names = ("a", "c")
    #: harness tune: search the initial forget-gate bias between torch's 0 and Gers et al.'s 1 and beyond.
    search_space = {"forget_bias": {"type": "float", "low": 0.0, "high": 2.0}}

    def reset_parameters(self) -> None:
        super().reset_parameters()
        hidden = self.hidden_size
        with torch.no_grad():
            self.bias[hidden : 2 * hidden].fill_(self.config.forget_bias)

    def step(self, projected: Tensor, state: State) -> State:
        a_prev, c_prev = state  # (B, H) each
        pre = projected + a_prev @ self.weight_a.T  # (B, 4H)
        pre_update, pre_forget, pre_candidate, pre_output = pre.chunk(4, dim=1)
        c = torch.sigmoid(pre_update) * torch.tanh(pre_candidate) + torch.sigmoid(pre_forget) * c_prev
        a = torch.sigmoid(pre_output) * torch.tanh(c)
        return (a, c)

    def fused_kernel(self) -> LSTMKernel:
        return LSTMKernel(self)

    def torch_equivalent(self) -> TorchEquivalent:
        return TorchEquivalent("LSTM", self.weight_x, self.weight_a, self.bias, torch.zeros_like(self.bias))

    @classmethod
    def param_count(cls, input_size: int, hidden_size: int, config: CellConfig | None = None) -> int:
        return 4 * hidden_size * (input_size + hidden_size + 1) + cls._initial_count(hidden_size, config)


@hookimpl
def register_cells(register) -> None:
    register(LSTMCell)
