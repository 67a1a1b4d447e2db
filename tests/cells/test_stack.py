"""RecurrentStack behaviour the cell contract does not cover: path choice, dropout,
length validation, per-layer parameters and the output size."""

from __future__ import annotations

import pytest
import torch

from harness.core.loading import load_plugins
from harness.networks.stack import RecurrentStack

INPUT, HIDDEN = 3, 4

WITH_EQUIVALENT = [
    pytest.param("vanilla", {"activation": "tanh"}, id="vanilla-tanh"),
    pytest.param("vanilla", {"activation": "relu"}, id="vanilla-relu"),
    pytest.param("lstm", {}, id="lstm"),
    pytest.param("gru", {"reset": "after"}, id="gru-after"),
]
WITHOUT_EQUIVALENT = [
    pytest.param("gru_simple", {}, id="gru_simple"),
    pytest.param("gru", {"reset": "before"}, id="gru-before"),
    pytest.param("peephole_lstm", {"variant": "notes"}, id="peephole-notes"),
    pytest.param("peephole_lstm", {"variant": "gers"}, id="peephole-gers"),
]


def make_stack(name: str, options: dict | None = None, **stack_options) -> RecurrentStack:
    cell_class = load_plugins(autoload=False).cells.get(name)
    config = cell_class.Config(**(options or {}))
    return RecurrentStack(cell_class, INPUT, HIDDEN, config=config, **stack_options)


@pytest.fixture(autouse=True)
def _seeded():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


# -- which path runs ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, options", WITH_EQUIVALENT)
def test_auto_takes_the_faster_exact_path_on_the_cpu(name: str, options: dict) -> None:
    # ATen's CPU LSTM is oneDNN's fused kernel, unless the batch is packed; its RNN and GRU
    # are loops of small operations, slower than the fused kernels.
    stack = make_stack(name, options)
    onednn = name == "lstm" and torch.backends.mkldnn.is_available()
    assert stack.execution_path("cpu") == ("aten" if onednn else "fused")
    assert stack.execution_path("cpu", padded=True) == "fused"
    assert stack.double().execution_path("cpu") == "fused"  # oneDNN has no float64 LSTM
    assert make_stack(name, options, implementation="torch").execution_path("cpu", padded=True) == "aten"
    assert make_stack(name, options, implementation="reference").execution_path() == "reference"


@pytest.mark.parametrize("name, options", WITH_EQUIVALENT)
def test_auto_takes_torch_on_other_devices(name: str, options: dict, monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "enabled", True)
    assert make_stack(name, options).execution_path("cuda", padded=True) == "cudnn"
    assert make_stack(name, options).execution_path("mps", padded=True) == "aten"  # torch's own kernels there


def test_a_stack_records_the_paths_its_calls_ran() -> None:
    stack = make_stack("lstm")
    assert stack.paths_used == set()
    x = torch.randn(3, 5, INPUT)
    stack(x)
    stack(x, torch.tensor([5, 2, 4]))
    # padded batches run the fused kernel with its compiled CPU steps (tests/fused/test_native.py)
    assert stack.paths_used == ({"aten", "fused-native"} if torch.backends.mkldnn.is_available() else {"fused-native"})


@pytest.mark.parametrize("name, options", WITHOUT_EQUIVALENT)
def test_other_cells_run_on_their_fused_kernel(name: str, options: dict) -> None:
    assert make_stack(name, options).execution_path() == "fused"
    assert make_stack(name, options, num_layers=2, bidirectional=True).execution_path("cpu") == "fused"
    assert make_stack(name, options, implementation="reference").execution_path() == "reference"


@pytest.mark.parametrize("name, options", WITHOUT_EQUIVALENT)
def test_forcing_torch_without_an_equivalent_is_an_error(name: str, options: dict) -> None:
    with pytest.raises(ValueError, match="no torch.nn equivalent"):
        make_stack(name, options, implementation="torch")


# -- dropout -----------------------------------------------------------------------------------

DROPOUT_CASES = [
    pytest.param("lstm", "auto", id="lstm-aten"),
    pytest.param("lstm", "reference", id="lstm-reference"),
    pytest.param("gru_simple", "auto", id="gru_simple-fused"),
]


@pytest.mark.parametrize("name, implementation", DROPOUT_CASES)
def test_dropout_between_layers_only_in_training(name: str, implementation: str) -> None:
    stack = make_stack(name, num_layers=2, dropout=0.5, implementation=implementation)
    plain = make_stack(name, num_layers=2, implementation=implementation)
    plain.load_state_dict(stack.state_dict())
    x = torch.randn(2, 5, INPUT)

    stack.train()
    (first, first_final), (second, _) = stack(x), stack(x)
    assert not torch.allclose(first, second), "training mode should drop different units each call"
    stack.eval()
    evaluated, evaluated_final = stack(x)
    assert torch.equal(evaluated, stack(x)[0]), "eval mode must be deterministic"
    torch.testing.assert_close(evaluated, plain.eval()(x)[0], rtol=0, atol=0)
    assert not torch.allclose(first, evaluated)
    # Dropout sits between layers: layer 0 (index 0 of the final state) never sees it.
    for training_part, eval_part in zip(first_final, evaluated_final):
        torch.testing.assert_close(training_part[0], eval_part[0], rtol=1e-6, atol=1e-7)
        assert not torch.allclose(training_part[1], eval_part[1])


@pytest.mark.filterwarnings("ignore:dropout option adds dropout after all but last recurrent layer")
@pytest.mark.parametrize("name, implementation", DROPOUT_CASES)
def test_one_layer_has_no_dropout(name: str, implementation: str) -> None:
    stack = make_stack(name, num_layers=1, dropout=0.5, implementation=implementation).train()
    x = torch.randn(2, 5, INPUT)
    training = stack(x)[0]
    assert torch.equal(training, stack(x)[0])
    torch.testing.assert_close(training, stack.eval()(x)[0], rtol=1e-6, atol=1e-7)


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize("implementation", ["auto", "reference"])
@pytest.mark.parametrize(
    "lengths",
    [[0, 3], [3, 4], [-1, 2], [3, 3, 3], [3]],
    ids=["zero", "longer-than-T", "negative", "too-many", "too-few"],
)
def test_invalid_lengths_are_rejected(implementation: str, lengths: list[int]) -> None:
    stack = make_stack("lstm", implementation=implementation)
    with pytest.raises(ValueError, match="lengths"):
        stack(torch.randn(2, 3, INPUT), torch.tensor(lengths))


def test_invalid_stack_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="num_layers"):
        make_stack("lstm", num_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        make_stack("lstm", dropout=1.0)


# -- layers and sizes --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lstm", "gru_simple"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_three_layers_have_separate_parameters(name: str, bidirectional: bool) -> None:
    stack = make_stack(name, num_layers=3, bidirectional=bidirectional)
    directions = 2 if bidirectional else 1
    assert len(stack.layers) == 3 and all(len(layer) == directions for layer in stack.layers)
    cells = [cell for layer in stack.layers for cell in layer]
    assert len({id(cell) for cell in cells}) == 3 * directions
    parameters = list(stack.parameters())
    assert len({p.data_ptr() for p in parameters}) == len(parameters), "no two parameters share storage"
    gates = stack.cell_class.gate_count * HIDDEN
    for layer_number, layer in enumerate(stack.layers):
        expected_input = INPUT if layer_number == 0 else directions * HIDDEN  # the deep RNN reads a^[l-1]
        assert all(cell.weight_x.shape == (gates, expected_input) for cell in layer)
    for i, first in enumerate(cells):
        for second in cells[i + 1 :]:
            assert not torch.equal(first.weight_a, second.weight_a), "each cell is initialised on its own"
    count = sum(stack.cell_class.param_count(c.input_size, HIDDEN, stack.config) for c in cells)
    assert sum(p.numel() for p in parameters) == count

    x = torch.randn(2, 4, INPUT)
    before_outputs, before_final = stack(x)
    with torch.no_grad():
        stack.layers[2][0].weight_a.add_(1.0)  # touch the top layer only
    after_outputs, after_final = stack(x)
    assert not torch.allclose(before_outputs, after_outputs)
    for before, after in zip(before_final, after_final):
        lower = 2 * directions  # final-state rows of layers 0 and 1
        torch.testing.assert_close(before[:lower], after[:lower], rtol=0, atol=0)


@pytest.mark.parametrize("name, options", WITH_EQUIVALENT[2:] + WITHOUT_EQUIVALENT[:1])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_output_size_is_directions_times_hidden(name: str, options: dict, bidirectional: bool) -> None:
    stack = make_stack(name, options, num_layers=2, bidirectional=bidirectional)
    directions = 2 if bidirectional else 1
    assert stack.output_size == directions * HIDDEN and stack.bidirectional == bidirectional
    outputs, final = stack(torch.randn(2, 5, INPUT), torch.tensor([5, 3]))
    assert outputs.shape == (2, 5, stack.output_size)
    assert all(part.shape == (2 * directions, 2, HIDDEN) for part in final)
