"""model.initialization overwrites every parameter, as Zaremba et al. (uniform) and Cho et al. (normal) do."""

import pytest
import torch

from harness.experiment import ModelSettings
from harness.networks.models import Encoder, LanguageModelNet, build_stack
from harness.training.trainer import initialize
from harness.plugins.cells.lstm import LSTMCell


def _net() -> LanguageModelNet:
    stack = build_stack(LSTMCell, None, 8, 16, 2, False, 0.0)
    return LanguageModelNet(Encoder(stack, vocab_size=50, embedding_size=8, pad_id=0), 50)


def test_uniform_bounds_every_parameter_and_keeps_pad_zero():
    torch.manual_seed(0)
    net = _net()
    initialize(net, "uniform", 0.1)
    for name, parameter in net.named_parameters():
        assert parameter.abs().max() <= 0.1, name
        assert parameter.abs().max() > 0.05, name  # really drawn, not left at a small default
    assert torch.equal(net.encoder.embedding.weight[0], torch.zeros(8))


def test_normal_scale_and_default_keeps_the_forget_bias():
    torch.manual_seed(0)
    net = _net()
    initialize(net, "normal", 0.01)
    weights = torch.cat([p.flatten() for p in net.parameters()])
    assert weights.std().item() == pytest.approx(0.01, rel=0.05)
    net = _net()
    initialize(net, "default", 0.1)
    cell = net.encoder.stack.layers[0][0]
    assert torch.all(cell.bias[16:32] == 1.0)  # the LSTM's forget_bias default survives


def test_new_fields_leave_old_run_keys_alone():
    assert "initialization" not in ModelSettings().model_dump(mode="json")
    assert ModelSettings(initialization="uniform").model_dump(mode="json")["initialization"] == "uniform"
