"""vanilla, lstm and gru(reset=after) on our reference loop against torch.nn's own modules.

The torch module keeps its own random initialisation (both biases nonzero). Its weights
are mapped INTO our cells by differentiable expressions (``to_cell_parameters``) and our
stack runs through ``functional_call``, so backpropagating our loss lands our gradients
back on copies of torch's weights, where they must equal torch's own gradients.

The mapping, per layer and direction (torch rows in torch's gate order):

    RNN   weight_x = W_ih, weight_a = W_hh, bias = b_ih + b_hh
    LSTM  the same; torch's i, f, g, o rows are our u, f, c~, o
    GRU   torch's r, z, n rows are our r, u, c~, but z = 1 - Γu = σ(-pre-activation of Γu),
          so the z rows (weights and both biases) are negated; b_hn sits inside Γr * (...)
          and is our bias_candidate_a, while b_in alone is our candidate bias.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from harness.core.loading import load_plugins
from harness.networks.stack import RecurrentStack

TOLERANCE = dict(rtol=1e-5, atol=1e-6)  # float32
INPUT, HIDDEN = 3, 4

CASES = [
    pytest.param("vanilla", {"activation": "tanh"}, "RNN_TANH", id="vanilla-tanh"),
    pytest.param("vanilla", {"activation": "relu"}, "RNN_RELU", id="vanilla-relu"),
    pytest.param("lstm", {}, "LSTM", id="lstm"),
    pytest.param("gru", {"reset": "after"}, "GRU", id="gru-after"),
]


def torch_module(mode: str, num_layers: int, bidirectional: bool) -> nn.RNNBase:
    options = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
    if mode == "LSTM":
        return nn.LSTM(INPUT, HIDDEN, **options)
    if mode == "GRU":
        return nn.GRU(INPUT, HIDDEN, **options)
    return nn.RNN(INPUT, HIDDEN, nonlinearity=mode[4:].lower(), **options)


def to_cell_parameters(mode: str, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> dict[str, Tensor]:
    """One torch layer-direction's weights as our cell's parameters (differentiably)."""
    if mode != "GRU":
        return {"weight_x": w_ih, "weight_a": w_hh, "bias": b_ih + b_hh}
    h = HIDDEN

    def flip_update(rows: Tensor) -> Tensor:
        return torch.cat([rows[:h], -rows[h : 2 * h], rows[2 * h :]])

    bias = torch.cat([b_ih[: 2 * h] + b_hh[: 2 * h], b_ih[2 * h :]])  # b_r, b_z summed; b_in alone
    return {
        "weight_x": flip_update(w_ih),
        "weight_a": flip_update(w_hh),
        "bias": flip_update(bias),
        "bias_candidate_a": b_hh[2 * h :],
    }


def stack_parameters(
    mode: str, torch_weights: dict[str, Tensor], num_layers: int, directions: int
) -> dict[str, Tensor]:
    mapped = {}
    for layer in range(num_layers):
        for direction in range(directions):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            cell = to_cell_parameters(mode, *(torch_weights[n + suffix] for n in names))
            mapped.update({f"layers.{layer}.{direction}.{k}": v for k, v in cell.items()})
    return mapped


def run_torch(module: nn.RNNBase, x: Tensor, lengths: Tensor | None, h0: tuple[Tensor, ...] | None):
    hx = None if h0 is None else (h0 if isinstance(module, nn.LSTM) else h0[0])
    if lengths is None:
        outputs, final = module(x, hx)
    else:
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        packed_out, final = module(packed, hx)
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=x.shape[1])
    return outputs, final if isinstance(final, tuple) else (final,)


def weighted_loss(outputs: Tensor, final: tuple[Tensor, ...]) -> Tensor:
    generator = torch.Generator().manual_seed(5)
    return sum((t * torch.randn(t.shape, generator=generator)).sum() for t in (outputs, *final))


def compare(name: str, options: dict, mode: str, *, num_layers: int, bidirectional: bool, padded: bool) -> None:
    torch.manual_seed(0)
    module = torch_module(mode, num_layers, bidirectional)
    assert all(p.abs().sum() > 0 for n, p in module.named_parameters() if n.startswith("bias_hh"))
    cell_class = load_plugins(autoload=False).cells.get(name)
    stack = RecurrentStack(cell_class, INPUT, HIDDEN, num_layers=num_layers, bidirectional=bidirectional,
                           config=cell_class.Config(**options), implementation="reference")
    directions = 2 if bidirectional else 1
    batch, steps = 3, 5
    x = torch.randn(batch, steps, INPUT)
    lengths = torch.tensor([5, 2, 4]) if padded else None
    h0 = None
    if padded:  # also a nonzero initial state, e.g. one carried over from a previous segment
        h0 = tuple(torch.randn(num_layers * directions, batch, HIDDEN) for _ in cell_class.state_names)

    x_torch, h0_torch = _leaf(x), None if h0 is None else tuple(_leaf(h) for h in h0)
    out_torch, final_torch = run_torch(module, x_torch, lengths, h0_torch)
    weighted_loss(out_torch, final_torch).backward()

    leaves = {n: _leaf(p) for n, p in module.named_parameters()}  # our copy of torch's weights
    mapped = stack_parameters(mode, leaves, num_layers, directions)
    assert set(mapped) == {n for n, _ in stack.named_parameters()}, "the mapping must cover every parameter"
    x_ours, h0_ours = _leaf(x), None if h0 is None else tuple(_leaf(h) for h in h0)
    out_ours, final_ours = functional_call(stack, mapped, (x_ours, lengths, h0_ours))
    weighted_loss(out_ours, final_ours).backward()

    torch.testing.assert_close(out_ours, out_torch, **TOLERANCE)
    assert len(final_ours) == len(final_torch)
    for ours, theirs in zip(final_ours, final_torch):
        torch.testing.assert_close(ours, theirs, **TOLERANCE)
    torch.testing.assert_close(x_ours.grad, x_torch.grad, **TOLERANCE)
    if h0 is not None:
        for ours, theirs in zip(h0_ours, h0_torch):
            torch.testing.assert_close(ours.grad, theirs.grad, **TOLERANCE)
    for parameter_name, parameter in module.named_parameters():
        torch.testing.assert_close(leaves[parameter_name].grad, parameter.grad, **TOLERANCE,
                                   msg=lambda m, n=parameter_name: f"gradient of {n}: {m}")


def _leaf(tensor: Tensor) -> Tensor:
    return tensor.detach().clone().requires_grad_()


@pytest.mark.parametrize("name, options, mode", CASES)
def test_one_layer_unidirectional(name: str, options: dict, mode: str) -> None:
    compare(name, options, mode, num_layers=1, bidirectional=False, padded=False)


@pytest.mark.parametrize("name, options, mode", CASES)
def test_two_layers_bidirectional_padded(name: str, options: dict, mode: str) -> None:
    compare(name, options, mode, num_layers=2, bidirectional=True, padded=True)


@pytest.mark.parametrize("name, options, mode", CASES)
def test_cells_report_the_torch_mode(name: str, options: dict, mode: str) -> None:
    cell_class = load_plugins(autoload=False).cells.get(name)
    assert cell_class(INPUT, HIDDEN, cell_class.Config(**options)).torch_equivalent().mode == mode


class _OneStep(nn.Module):
    """One cell step as a forward(), so functional_call can swap in torch's weights."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return self.cell.step(self.cell.project_inputs(x.unsqueeze(1))[:, 0], state)


@pytest.mark.parametrize(
    "name, options, torch_cell",
    [
        ("lstm", {}, lambda: nn.LSTMCell(INPUT, HIDDEN)),
        ("gru", {"reset": "after"}, lambda: nn.GRUCell(INPUT, HIDDEN)),
        ("vanilla", {"activation": "tanh"}, lambda: nn.RNNCell(INPUT, HIDDEN, nonlinearity="tanh")),
        ("vanilla", {"activation": "relu"}, lambda: nn.RNNCell(INPUT, HIDDEN, nonlinearity="relu")),
    ],
    ids=["LSTMCell", "GRUCell", "RNNCell-tanh", "RNNCell-relu"],
)
def test_single_step_matches_torch_cell(name: str, options: dict, torch_cell) -> None:
    torch.manual_seed(3)
    theirs = torch_cell()
    cell_class = load_plugins(autoload=False).cells.get(name)
    ours = _OneStep(cell_class(INPUT, HIDDEN, cell_class.Config(**options)))
    mode = "LSTM" if name == "lstm" else "GRU" if name == "gru" else "RNN"
    weights = {n: _leaf(p) for n, p in theirs.named_parameters()}
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    mapped = {f"cell.{k}": v for k, v in to_cell_parameters(mode, *(weights[n] for n in names)).items()}
    x = torch.randn(2, INPUT)
    state = tuple(torch.randn(2, HIDDEN) for _ in cell_class.state_names)

    expected = theirs(x, state if name == "lstm" else state[0])
    expected = expected if isinstance(expected, tuple) else (expected,)
    actual = functional_call(ours, mapped, (x, state))
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, **TOLERANCE)
    weighted_loss(actual[0], actual[1:]).backward()
    weighted_loss(expected[0], expected[1:]).backward()
    for n, p in theirs.named_parameters():
        torch.testing.assert_close(weights[n].grad, p.grad, **TOLERANCE)
