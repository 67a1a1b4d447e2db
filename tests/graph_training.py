"""Training through Lightning with the fused loops replayed from graphs and without, for
the tests that compare the two (tests/fused/test_graphs.py on a CPU stand-in,
tests/training/test_gpu.py with real CUDA graphs)."""

from __future__ import annotations

import pytest
import torch

from harness.experiment import ModelSettings, TrainingSettings
from harness.core.loading import load_plugins
from harness.training.trainer import TrainingResult, build_network, plan_network, train_run


def train_adding(cell: str, graphs: str, monkeypatch, device: str = "auto") -> TrainingResult:
    """Three epochs of the adding task with Adam, validating under no_grad after each, then
    testing under inference mode (as Lightning does), with ``HARNESS_CUDA_GRAPHS=graphs``."""
    monkeypatch.setenv("HARNESS_CUDA_GRAPHS", graphs)
    plugins = load_plugins()
    cell_class, task_class = plugins.cells.get(cell), plugins.tasks.get("adding")
    # every batch has one shape (64 steps, batch 32): captured at its second sight, then replayed
    task = task_class(task_class.Config(length=64, train_size=256, validation_size=64, test_size=64))
    data = task.load()
    model = ModelSettings(hidden_size=32)
    plan = plan_network(cell_class, cell_class.Config(), task.family, model, data.input_size)
    torch.manual_seed(0)  # the same initial weights in both runs
    net = build_network(cell_class, cell_class.Config(), task, data, model, plan)
    return train_run(net, task, data, TrainingSettings(max_epochs=3, batch_size=32), seed=0, device=device,
                     hyperparameters={}, verbose=False)


def assert_same_training(eager: TrainingResult, replayed: TrainingResult, rel: float) -> None:
    for want, got in zip(eager.history, replayed.history, strict=True):
        for key in want.keys() & {"train_loss", "val_loss"}:
            assert got[key] == pytest.approx(want[key], rel=rel), (key, want, got)
    assert replayed.test_metrics == pytest.approx(eager.test_metrics, rel=rel)
