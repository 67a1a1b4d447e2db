"""With early stopping on, every family tests the weights of its best validation epoch, not the last."""

from __future__ import annotations

import random

import pytest
import torch

from harness.experiment import EarlyStopping, TrainingSettings
from harness.networks.models import ClassifierNet, Encoder, build_stack
from harness.core.loading import load_plugins
from harness.core.tasks import Example, Task, TaskData
from harness.training.trainer import train_run
from harness.core.vocab import Vocabulary


class _NoiseTask(Task):
    name = "noise"
    family = "classification"
    primary_metric = "accuracy"
    higher_is_better = True


def _noise_data() -> TaskData:
    # Random labels: a network can only memorise them, so validation loss rises after the first epochs.
    rng = random.Random(0)
    vocab = Vocabulary([f"w{i}" for i in range(30)])
    classes = Vocabulary(["a", "b"], specials=())

    def split(count: int) -> list[Example]:
        return [Example([rng.randrange(4, len(vocab)) for _ in range(6)], rng.randrange(2)) for _ in range(count)]

    validation = split(64)
    # test = validation, so the test loss shows which weights were tested.
    return TaskData(split(64), validation, validation, input_vocab=vocab, output_vocab=classes)


@pytest.mark.parametrize("early_stopping", [True, False])
def test_the_best_validation_epoch_is_the_one_tested(early_stopping: bool) -> None:
    torch.manual_seed(0)
    data = _noise_data()
    stack = build_stack(load_plugins().cells.get("gru"), None, 16, 32, 1, False, 0.0)
    net = ClassifierNet(Encoder(stack, vocab_size=len(data.input_vocab), embedding_size=16), 2)
    settings = TrainingSettings(learning_rate=0.03, batch_size=8, max_epochs=6, cpu_threads=1,
                                early_stopping=EarlyStopping(patience=10) if early_stopping else None)
    result = train_run(net, _NoiseTask(), data, settings, seed=0, device="cpu", hyperparameters={},
                       verbose=False)
    losses = [epoch["val_loss"] for epoch in result.history]
    assert len(losses) == 6
    best = min(range(6), key=losses.__getitem__)
    assert best < 5, "the data must make the last epoch worse than the best for this test to mean anything"
    if early_stopping:
        assert result.test_metrics["test_best_epoch"] == best + 1
        assert result.test_metrics["test_loss"] == pytest.approx(losses[best], rel=1e-5)
    else:
        assert "test_best_epoch" not in result.test_metrics
        assert result.test_metrics["test_loss"] == pytest.approx(losses[-1], rel=1e-5)


def test_early_stopping_can_follow_the_primary_metric() -> None:
    torch.manual_seed(0)
    data = _noise_data()
    stack = build_stack(load_plugins().cells.get("gru"), None, 16, 32, 1, False, 0.0)
    net = ClassifierNet(Encoder(stack, vocab_size=len(data.input_vocab), embedding_size=16), 2)
    settings = TrainingSettings(learning_rate=0.03, batch_size=8, max_epochs=6, cpu_threads=1,
                                early_stopping=EarlyStopping(patience=10, monitor="primary"))
    result = train_run(net, _NoiseTask(), data, settings, seed=0, device="cpu", hyperparameters={},
                       verbose=False)
    accuracies = [epoch["val_accuracy"] for epoch in result.history]
    best = max(range(len(accuracies)), key=lambda i: (accuracies[i], -i))  # the first epoch at the maximum
    losses = [epoch["val_loss"] for epoch in result.history]
    assert best != min(range(len(losses)), key=losses.__getitem__), "the loss must pick another epoch here"
    assert result.test_metrics["test_best_epoch"] == best + 1
    assert result.test_metrics["test_accuracy"] == pytest.approx(accuracies[best])


def test_the_default_monitor_keeps_older_run_keys() -> None:
    assert "monitor" not in EarlyStopping(patience=3).model_dump()
    assert EarlyStopping(patience=3, monitor="primary").model_dump()["monitor"] == "primary"
