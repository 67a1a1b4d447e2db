"""Training uses the GPU when one is present (Lightning's accelerator "auto"). Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch

from graph_training import assert_same_training, train_adding

from harness.experiment import ModelSettings, TrainingSettings
from harness.fused import triton_enabled
from harness.core.loading import load_plugins
from harness.training.trainer import build_network, plan_network, train_run

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


TRITON = "-triton" if torch.cuda.is_available() and triton_enabled(torch.device("cuda")) else ""


@pytest.mark.parametrize("cell, expected_path", [("lstm", "cudnn"), ("gru_simple", f"fused{TRITON}-graphs")])
def test_auto_device_trains_on_the_gpu(cell: str, expected_path: str) -> None:
    plugins = load_plugins()
    cell_class = plugins.cells.get(cell)
    task_class = plugins.tasks.get("agreement")
    task = task_class(task_class.Config(train_size=128, validation_size=32, test_size=32, max_distance=8))
    data = task.load()
    model = ModelSettings(hidden_size=16, embedding_size=8)
    plan = plan_network(cell_class, cell_class.Config(), task.family, model, None)
    net = build_network(cell_class, cell_class.Config(), task, data, model, plan)
    result = train_run(net, task, data, TrainingSettings(max_epochs=1, batch_size=32), seed=0, device="auto",
                       hyperparameters={}, verbose=False)
    assert result.device.startswith("cuda")  # where it trained (Lightning returns it to the CPU after)
    assert result.execution_path == expected_path
    assert result.memory_measure == "cuda_max_allocated" and result.peak_memory_mb > 0
    assert 0.0 <= result.test_metrics["test_accuracy"] <= 1.0


@pytest.mark.parametrize("cell", ["gru_simple", "peephole_lstm"])
def test_training_with_cuda_graph_replays_matches_eager_training(cell: str, monkeypatch) -> None:
    """Three epochs with Adam, validation and testing: the replayed fused loops learn what the
    eager ones learn (float32 sums may differ in order)."""
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        replayed = train_adding(cell, "1", monkeypatch)
        eager = train_adding(cell, "0", monkeypatch)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    assert replayed.execution_path == f"fused{TRITON}-graphs" and eager.execution_path == f"fused{TRITON}"
    assert_same_training(eager, replayed, rel=1e-4)
