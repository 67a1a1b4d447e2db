"""The NLL per time step, by hand: summed binary cross-entropy over keys and real steps / real steps."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.experiment import EarlyStopping, TrainingSettings
from harness.training.batching import Collator
from harness.training.families import FAMILY_MODULES
from harness.core.tasks import Example, Task, TaskData


class ConstantLogits(nn.Module):
    """Predicts the same logits at every step: z_0 = 2, z_1 = -1, every other key 0."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(88))
        with torch.no_grad():
            self.logits[0], self.logits[1] = 2.0, -1.0

    def forward(self, inputs, lengths, state=None):
        return self.logits.expand(inputs.shape[0], inputs.shape[1], 88), state


class MusicLike(Task):
    name = "tiny"
    family = "multilabel_sequence"


def by_hand(frame: set[int]) -> float:
    """-log p(frame) under independent Bernoullis with p_k = sigmoid(z_k)."""
    def sigmoid(z: float) -> float:
        return 1 / (1 + math.exp(-z))

    z = {0: 2.0, 1: -1.0}
    total = 0.0
    for key in range(88):
        p = sigmoid(z.get(key, 0.0))
        total += -math.log(p) if key in frame else -math.log(1 - p)
    return total


def test_nll_is_the_summed_bce_over_all_real_steps_divided_by_their_number() -> None:
    # Piece A: {0} then a rest; piece B: {1, 5}. Three real steps; B is padded to length 2.
    pieces = [Example(inputs=[[0], []]), Example(inputs=[[1, 5]])]
    data = TaskData(pieces, pieces, pieces, input_size=88)
    module = FAMILY_MODULES["multilabel_sequence"](ConstantLogits(), MusicLike(), data, TrainingSettings())
    batch = Collator("multilabel_sequence", data)(list(enumerate(pieces)))
    loss_sum, count, _, _ = module.compute(batch, predict=True)

    step_a1, step_a2, step_b1 = by_hand({0}), by_hand(set()), by_hand({1, 5})
    # A rest under these logits: 86 keys at ln 2, key 0 at ln(1 + e^2), key 1 at ln(1 + e^-1).
    assert math.isclose(step_a2, 86 * math.log(2) + math.log(1 + math.e**2) + math.log(1 + math.e**-1))
    assert count == 3  # the padded step of B does not count
    assert math.isclose(float(loss_sum.detach()), step_a1 + step_a2 + step_b1, rel_tol=1e-6)

    # Through the module's test path: nll = loss = total / 3 steps, not the mean of per-piece means.
    module.on_test_epoch_start()
    module._evaluate_batch("test", batch)
    module.on_test_epoch_end()
    per_step = (step_a1 + step_a2 + step_b1) / 3
    assert math.isclose(module.test_metrics["test_nll"], per_step, rel_tol=1e-6)
    assert module.test_metrics["test_loss"] == module.test_metrics["test_nll"]
    assert not math.isclose(per_step, ((step_a1 + step_a2) / 2 + step_b1) / 2, rel_tol=1e-3)
    # train_nll: the same quantity on the training split (here the same pieces).
    assert math.isclose(module.test_metrics["test_train_nll"], per_step, rel_tol=1e-6)


@pytest.mark.filterwarnings("ignore:You are trying to")
def test_early_stopping_restores_the_best_validation_weights() -> None:
    pieces = [Example(inputs=[[0], [1]])]
    data = TaskData(pieces, pieces, pieces, input_size=88)
    net = ConstantLogits()
    settings = TrainingSettings(early_stopping=EarlyStopping(patience=2))
    module = FAMILY_MODULES["multilabel_sequence"](net, MusicLike(), data, settings)
    batch = Collator("multilabel_sequence", data)(list(enumerate(pieces)))
    for shift in (0.0, 5.0):  # epoch 1 as built; epoch 2 much worse
        with torch.no_grad():
            net.logits += shift
        module.on_validation_epoch_start()
        module._evaluate_batch("val", batch)
        module.on_validation_epoch_end()
    assert module._best[1] == 1
    module.on_fit_end()
    assert net.logits[:2].tolist() == [2.0, -1.0]
