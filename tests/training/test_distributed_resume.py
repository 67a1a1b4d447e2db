"""A data-parallel run (2 CPU ranks over gloo) checkpoints like a one-process run and resumes all its ranks.

Rank 0 stops after epoch 1's checkpoint (as a kill would: its children are terminated), the rerun
resumes every rank from that checkpoint and ends with the uninterrupted 2-rank run's numbers.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch

from harness.core.loading import load_plugins
from harness.experiment import ModelSettings, TrainingSettings
from harness.plugins.tasks.agreement import AgreementConfig, AgreementTask
from harness.training.distributed import DistributedRunError
from harness.training.resume import RunCheckpoints
from harness.training.trainer import build_network, plan_network, train_run

pytestmark = pytest.mark.slow  # real processes that train for seconds: run early under xdist, or skip with -m 'not slow'


class _Stop(pl.Callback):
    """Raises in rank 0 as epoch ``epoch`` starts, or before batch ``batch`` of it: after a checkpoint."""

    def __init__(self, epoch: int, batch: int | None = None) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if self.batch is None and trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated crash")

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, index: int) -> None:
        if self.batch is not None and trainer.current_epoch == self.epoch and index == self.batch:
            raise RuntimeError("simulated crash")


def _run(task: AgreementTask, data: Any, checkpoints: RunCheckpoints | None, stop: pl.Callback | None = None):
    cell = load_plugins().cells.get("gru")
    model = ModelSettings(embedding_size=8, hidden_size=8, num_layers=1, dropout=0.3)
    torch.manual_seed(0)
    pl.seed_everything(0, verbose=False)
    net = build_network(cell, cell.Config(), task, data, model,
                        plan_network(cell, cell.Config(), "classification", model, None))
    settings = TrainingSettings(cpu_threads=1, devices=2, batch_size=8, max_epochs=3, learning_rate=0.02,
                                lr_schedule="step", lr_step_epochs=1)
    result = train_run(net, task, data, settings, seed=0, device="cpu", hyperparameters={}, verbose=False,
                       extra_callbacks=[stop] if stop is not None else [], checkpoints=checkpoints)
    return result, {k: v.clone() for k, v in net.state_dict().items()}


def test_a_data_parallel_run_resumes_every_rank_and_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    # One interrupted attempt, checkpointing after every batch, stopped before batch 4 of epoch 2: its
    # folder holds epoch 1's end-of-epoch checkpoint (kept as the best) and the mid-epoch ones after it.
    # Both resumes, from epoch 1's end and from the middle of epoch 2, end bit-exactly as the uninterrupted run.
    task = AgreementTask(AgreementConfig(train_size=48, validation_size=16, test_size=16, max_distance=5))
    data = task.load()
    reference, reference_weights = _run(task, data, None)
    messages: list[str] = []
    with pytest.raises((RuntimeError, DistributedRunError), match="simulated crash"):
        _run(task, data, RunCheckpoints(tmp_path / "ck", every_minutes=1e-9, say=messages.append), _Stop(1, batch=3))
    steps = [int(p.stem[5:]) for p in RunCheckpoints(tmp_path / "ck").newest_first()]
    assert steps[0] == 9 and 6 in steps, steps  # 6 batches an epoch (48 examples, global batch 8)
    saved = torch.load(tmp_path / "ck" / "step-0000000009.ckpt", weights_only=True)
    assert len(saved["callbacks"]["ResumeState"]["rng_by_rank"]) == 2  # each rank's own RNG states
    shutil.copytree(tmp_path / "ck", tmp_path / "epoch-end")
    for path in RunCheckpoints(tmp_path / "epoch-end").newest_first():
        if int(path.stem[5:]) > 6:
            path.unlink()
    for folder, expected in (("epoch-end", "(end-of-epoch"), ("ck", "(mid-epoch after batch 3, exact")):
        messages.clear()
        resumed, resumed_weights = _run(task, data, RunCheckpoints(tmp_path / folder, say=messages.append))
        assert any(f"resumed from epoch 1 checkpoint {expected}" in m for m in messages), messages
        assert resumed.resumed_epochs == 1
        assert resumed.test_metrics == reference.test_metrics, folder  # bit-exact on the CPU with gloo
        assert resumed.history == reference.history, folder
        for name, tensor in reference_weights.items():
            assert torch.equal(tensor, resumed_weights[name]), (folder, name)
