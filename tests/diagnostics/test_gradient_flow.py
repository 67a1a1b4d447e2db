"""The gradient-flow probe measures what the notes derive: w^d on a linear recurrence, vanishing
through a small-weight tanh RNN, and slower decay through an LSTM's forget-biased memory cell."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from harness.core.cells import RecurrentCell, State
from harness.training.gradient_flow import probe_network
from harness.core.loading import load_plugins
from harness.networks.stack import RecurrentStack


class LinearCell(RecurrentCell):
    """a<t> = w a<t-1> + x<t>, with w a fixed number (H = I = 1, W_ax = 1, b = 0)."""

    name = "linear_test"
    w = 0.9

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight_x.fill_(1.0)
            self.weight_a.zero_()
            self.bias.zero_()

    def step(self, projected: Tensor, state: State) -> State:
        return (self.w * state[0] + projected,)


class LastState(nn.Module):
    """The stack's final a<T> summed: ∂L/∂a<T> = 1 for every sequence."""

    def __init__(self, stack: RecurrentStack, lengths: Tensor) -> None:
        super().__init__()
        self.stack, self.lengths = stack, lengths

    def loss(self, inputs: Tensor) -> Tensor:
        _, final = self.stack(inputs, self.lengths)
        return final[0].sum()


@pytest.mark.parametrize("w", [0.9, 1.1, -0.5])
def test_a_linear_recurrence_passes_w_to_the_power_d(w: float) -> None:
    cell = type("Linear", (LinearCell,), {"w": w})
    lengths = torch.tensor([12, 7, 12, 3])  # padded sequences: distance counts from each one's last real step
    net = LastState(RecurrentStack(cell, 1, 1, implementation="reference"), lengths)
    inputs = torch.randn(4, 12, 1)
    flow = probe_network(net, lambda copy: copy.loss(inputs))
    assert flow["state"] == ["a"] * 12 and flow["distance"] == list(range(12))
    expected = [abs(w) ** d for d in range(12)]
    assert flow["norm"] == pytest.approx(expected, rel=1e-5)
    assert flow["examples"] == [4, 4, 4, 3, 3, 3, 3, 2, 2, 2, 2, 2]


def test_state_0_is_always_the_output_a() -> None:
    stack = RecurrentStack(load_plugins().cells.get("gru"), 3, 4)  # the GRU calls its one state c<t> = a<t>
    flow = probe_network(LastState(stack, torch.tensor([5])), lambda copy: copy.loss(torch.randn(1, 5, 3)))
    assert set(flow["state"]) == {"a"} and len(flow["norm"]) == 5


def test_the_probe_changes_nothing_in_the_network_it_measures() -> None:
    stack = RecurrentStack(load_plugins().cells.get("gru"), 3, 5)  # auto: the fused path
    lengths = torch.tensor([6, 6])
    net = LastState(stack, lengths)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    probe_network(net, lambda copy: copy.loss(torch.randn(2, 6, 3)))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    assert stack.implementation == "auto" and "forward" not in vars(stack)


def relative_flow(cell_name: str, seed: int = 0, steps: int = 30) -> dict[str, list[float]]:
    torch.manual_seed(seed)
    cell = load_plugins().cells.get(cell_name)
    stack = RecurrentStack(cell, 8, 32)
    with torch.no_grad():  # small weights; the LSTM's forget-gate bias stays 1
        for layer_cell in (c for layer in stack.layers for c in layer):
            layer_cell.weight_x.uniform_(-0.1, 0.1)
            layer_cell.weight_a.uniform_(-0.1, 0.1)
            if cell_name != "lstm":
                layer_cell.bias.uniform_(-0.1, 0.1)
    net = LastState(stack, torch.full((16,), steps))
    inputs = torch.randn(16, steps, 8)
    flow = probe_network(net, lambda copy: copy.loss(inputs))
    by_state: dict[str, list[float]] = {}
    for state, norm in zip(flow["state"], flow["norm"]):
        by_state.setdefault(state, []).append(norm)
    return {state: [n / norms[0] for n in norms] for state, norms in by_state.items()}


def test_a_small_weight_tanh_rnn_loses_the_gradient_with_distance() -> None:
    flow = relative_flow("vanilla")["a"]
    assert all(later < earlier for earlier, later in zip(flow, flow[1:]))
    assert flow[10] < 1e-4


def test_an_lstm_with_forget_bias_1_loses_it_more_slowly() -> None:
    vanilla, lstm = relative_flow("vanilla")["a"], relative_flow("lstm")
    assert set(lstm) == {"a", "c"}
    for distance, factor in ((5, 10), (10, 1e3), (20, 1e6)):  # the gap widens with distance
        assert lstm["a"][distance] > factor * vanilla[distance], (distance, lstm["a"][distance], vanilla[distance])
        assert lstm["c"][distance] > factor * vanilla[distance]
    # Through c<t> each step back multiplies by about Γf = σ(1) ≈ 0.73 (the other paths are small here).
    steps = [later / earlier for earlier, later in zip(lstm["c"][1:20], lstm["c"][2:21])]
    assert all(0.63 < step < 0.83 for step in steps), steps


@pytest.mark.parametrize(("task_name", "options"), [
    ("copy", {"delay": 3, "copy_length": 2}),          # tagging
    ("brackets", {"max_length": 8}),                   # language model
    ("numbers", {"max_number": 99}),                   # seq2seq: the encoder's states
    ("adding", {"length": 6}),                         # regression (vector inputs)
])
def test_every_family_s_own_loss_can_be_probed(task_name: str, options: dict) -> None:
    from harness.experiment import DiagnosticsSettings, ModelSettings, TrainingSettings
    from harness.training.diagnostics import RunDiagnostics
    from harness.training.trainer import build_network, plan_network

    plugins = load_plugins()
    task_class, cell = plugins.tasks.get(task_name), plugins.cells.get("lstm")
    task = task_class(task_class.Config(train_size=16, validation_size=8, test_size=8, **options))
    data = task.load()
    model = ModelSettings(hidden_size=5, embedding_size=4)
    net = build_network(cell, cell.Config(), task, data, model,
                        plan_network(cell, cell.Config(), task.family, model, data.input_size))
    diagnostics = RunDiagnostics(DiagnosticsSettings(gradient_flow=True, probe_size=4), task, data,
                                 TrainingSettings(), seed=0)
    diagnostics.probe(net, "init")
    flow = diagnostics.flow
    assert set(flow["state"]) == {"a", "c"} and set(flow["when"]) == {"init"}
    assert flow["distance"][0] == 0 and max(flow["distance"]) >= 1
    assert all(norm > 0 and math.isfinite(norm) for norm in flow["norm"])
