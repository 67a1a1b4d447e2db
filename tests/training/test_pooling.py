"""``model.pooling``: what the output layer of a many-to-one network reads, on padded batches.

The network is built the way a run builds it (``build_network`` from ``ModelSettings``), and
the features are captured at the output layer's input, so these tests prove the option reaches
the network and that padding never leaks into the features.
"""

from __future__ import annotations

import pytest
import torch

from harness.experiment import ModelSettings
from harness.core.loading import load_plugins
from harness.core.tasks import Task, TaskData
from harness.training.trainer import build_network, plan_network
from harness.core.vocab import Vocabulary

CELLS = load_plugins(autoload=False).cells
HIDDEN = 5
#: One cell per loop path (fused kernel, reference loop), and ``auto`` (on the CPU, padded batches
#: run fused; the torch path's final states at padding are part of the cell contract).
PATHS = [
    pytest.param("lstm", "auto", id="lstm-auto"),
    pytest.param("gru_simple", "fused", id="gru_simple-fused"),
    pytest.param("vanilla", "reference", id="vanilla-reference"),
]


class _Classify(Task):
    name = "pooling_probe"
    family = "classification"


def network(cell: str, implementation: str, pooling: str, *, bidirectional: bool = True,
            family: str = "classification") -> torch.nn.Module:
    torch.manual_seed(0)
    cell_class = CELLS.get(cell)
    model = ModelSettings(hidden_size=HIDDEN, embedding_size=4, bidirectional=bidirectional, pooling=pooling,
                          implementation=implementation)
    data = TaskData([], [], [], input_vocab=Vocabulary([f"w{i}" for i in range(12)]),
                    output_vocab=Vocabulary(["0", "1", "2"], specials=()))
    task = type("Probe", (_Classify,), {"family": family})()
    plan = plan_network(cell_class, cell_class.Config(), family, model, None)
    return build_network(cell_class, cell_class.Config(), task, data, model, plan).eval()


def head_inputs(net: torch.nn.Module, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """What the output layer reads, (B, D*H)."""
    seen = []
    handle = net.head.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    with torch.no_grad():
        net(tokens, lengths)
    handle.remove()
    return seen[0]


# Lengths 5, 2, 3, 1: every row but the first is padded (pad id 0).
TOKENS = torch.tensor([[4, 5, 6, 7, 8], [9, 10, 0, 0, 0], [11, 4, 6, 0, 0], [7, 0, 0, 0, 0]])
LENGTHS = torch.tensor([5, 2, 3, 1])


@pytest.mark.parametrize("cell, implementation", PATHS)
def test_last_is_the_forward_output_at_the_last_real_step_and_the_backward_output_at_step_0(
        cell: str, implementation: str) -> None:
    net = network(cell, implementation, "last")
    with torch.no_grad():
        outputs, _ = net.encoder(TOKENS, LENGTHS)  # (B, T, 2H): [a→, a←] per step
    expected = torch.stack([torch.cat([outputs[row, length - 1, :HIDDEN], outputs[row, 0, HIDDEN:]])
                            for row, length in enumerate(LENGTHS.tolist())])
    assert torch.allclose(head_inputs(net, TOKENS, LENGTHS), expected, atol=1e-6)


@pytest.mark.parametrize("cell, implementation", PATHS)
@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_every_pooling_ignores_padding(cell: str, implementation: str, pooling: str) -> None:
    """Each padded row gets exactly the features of the same sentence run alone, unpadded."""
    net = network(cell, implementation, pooling)
    batched = head_inputs(net, TOKENS, LENGTHS)
    for row, length in enumerate(LENGTHS.tolist()):
        alone = head_inputs(net, TOKENS[row: row + 1, :length], LENGTHS[row: row + 1])
        assert torch.allclose(batched[row], alone[0], atol=1e-6), (pooling, row)


@pytest.mark.parametrize("cell, implementation", PATHS)
def test_mean_and_max_pool_the_real_steps_of_both_directions(cell: str, implementation: str) -> None:
    means, maxima = (head_inputs(network(cell, implementation, p), TOKENS, LENGTHS) for p in ("mean", "max"))
    with torch.no_grad():
        outputs, _ = network(cell, implementation, "mean").encoder(TOKENS, LENGTHS)  # same seed, same weights
    for row, length in enumerate(LENGTHS.tolist()):
        real = outputs[row, :length]  # (length, 2H)
        assert torch.allclose(means[row], real.mean(0), atol=1e-6)
        assert torch.allclose(maxima[row], real.max(0).values, atol=1e-6)
    # Some features are negative at every real step: there a zero from padding would have won the max.
    assert (maxima < 0).any()


def test_regression_networks_take_the_pooling_too() -> None:
    net = network("lstm", "auto", "max", bidirectional=False, family="regression")
    assert net.pooling == "max" and net.head.out_features == 1


def test_pooling_is_left_out_of_the_dumped_config_while_it_is_the_default() -> None:
    # Run keys hash the dumped config: files recorded before pooling existed keep their keys.
    assert "pooling" not in ModelSettings().model_dump()
    assert ModelSettings(pooling="mean").model_dump()["pooling"] == "mean"
