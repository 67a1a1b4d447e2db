"""T4 (rule R4) and T5 of the fault plan: non-finite gradients and exploding ones, in process on the CPU.

* A gradient that turns NaN while the loss is still finite (an overflow inside backward) ends the run
  at that step with ``NonFiniteLossError`` naming the gradient, before the optimizer applies it: the
  weights stay those of the step before, and with a checkpoint after every batch none is written
  after the bad step, so the newest one still loads and holds finite weights.
* Learning rate 10³ with clipping at norm 1: the norms before clipping are recorded above 1, the
  norms the optimizer applied never above 1 (+1e-6), and the run finishes with finite metrics.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from random_parity import ParityTask, random_parity_data
import pytorch_lightning as pl
import torch

from harness.core.loading import load_plugins
from harness.core.safe_files import load_weights_only
from harness.core.tasks import TaskData
from harness.experiment import TrainingSettings
from harness.networks.models import ClassifierNet, Encoder, build_stack
from harness.training.diagnostics import GradientNormMonitor, clipping_summary
from harness.training.finite import NonFiniteLossError
from harness.training.resume import RunCheckpoints
from harness.training.trainer import train_run

BATCHES_PER_EPOCH = 6  # 48 examples / 8
BAD_STEP = 8  # the optimizer step (counted from 0) whose gradient turns NaN: batch 2 of epoch 2


def _net(data: TaskData) -> ClassifierNet:
    pl.seed_everything(0, verbose=False)
    stack = build_stack(load_plugins().cells.get("vanilla"), None, 8, 8, 1, False, 0.0)
    return ClassifierNet(Encoder(stack, vocab_size=len(data.input_vocab), embedding_size=8), 2, 0.0)


class _PoisonGradient(pl.Callback):
    """From optimizer step ``at`` on, backward puts NaN into the output layer's gradient (the loss stays finite)."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.weights_before: dict[str, torch.Tensor] = {}
        self._handle: Any = None

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, index: int) -> None:
        if trainer.global_step == self.at and self._handle is None:
            self.weights_before = {k: v.detach().clone() for k, v in module.net.state_dict().items()}
            parameter = next(p for name, p in module.net.named_parameters() if name.startswith("head"))
            self._handle = parameter.register_hook(lambda grad: torch.full_like(grad, math.nan))


def test_a_nan_gradient_after_a_finite_loss_fails_the_step_and_no_checkpoint_holds_it(tmp_path: Path) -> None:
    data = random_parity_data()
    net = _net(data)
    assert any(name.startswith("head") for name, _ in net.named_parameters())
    poison = _PoisonGradient(BAD_STEP)
    checkpoints = RunCheckpoints(tmp_path / "ckpt", every_minutes=1e-9, say=lambda message: None)  # every batch
    settings = TrainingSettings(learning_rate=0.01, batch_size=8, max_epochs=3, cpu_threads=1)
    stopped = rf"gradient norm is nan at epoch 1, step {BAD_STEP} \(the loss was finite\)"
    with pytest.raises(NonFiniteLossError, match=stopped):
        train_run(net, ParityTask(), data, settings, seed=0, device="cpu", hyperparameters={}, verbose=False,
                  extra_callbacks=[poison], checkpoints=checkpoints)
    # The optimizer never applied the NaN: the weights are those of the step before.
    after = net.state_dict()
    assert poison.weights_before and all(torch.equal(after[k], v) for k, v in poison.weights_before.items())
    # Checkpoints after batches 1…8 (steps 1…8) at most; none after the bad step, and the newest loads, finite.
    newest = checkpoints.newest_first()[0]
    assert int(newest.stem.split("-")[1]) == BAD_STEP
    state = load_weights_only(newest)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_an_exploding_learning_rate_is_held_by_clipping_and_the_norms_show_it() -> None:
    data = random_parity_data()
    net = _net(data)
    monitor = GradientNormMonitor()
    settings = TrainingSettings(learning_rate=1e3, batch_size=8, max_epochs=2, cpu_threads=1, gradient_clip_norm=1.0)
    result = train_run(net, ParityTask(), data, settings, seed=0, device="cpu", hyperparameters={}, verbose=False,
                       extra_callbacks=[monitor])
    assert len(monitor.norms) == len(monitor.clipped_norms) == 2 * BATCHES_PER_EPOCH
    metrics, histogram = clipping_summary(monitor.norms, 1.0, monitor.clipped_norms)
    assert metrics["grad_norm_max"] > 1.0 and metrics["grad_clipped_fraction"] > 0
    assert metrics["grad_norm_after_clip_max"] <= 1.0 + 1e-6
    for before, after in zip(monitor.norms, monitor.clipped_norms):
        assert after == pytest.approx(min(before, 1.0), rel=1e-5)  # scaled down to the threshold, never up
    assert histogram["nonfinite"] == 0
    assert result.test_metrics and all(math.isfinite(v) for v in result.test_metrics.values())
