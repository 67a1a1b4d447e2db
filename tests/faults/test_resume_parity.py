"""Resuming from a checkpoint gives bit-for-bit the run that was never interrupted (in process, CPU).

The run has everything whose state a resume must bring back: dropout (torch RNG), a shuffled
loader (its generator), a step learning-rate schedule, Adam's moments and early stopping.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from random_parity import ParityTask, random_parity_data
import pytorch_lightning as pl
import torch

from harness.experiment import EarlyStopping, TrainingSettings
from harness.networks.models import ClassifierNet, Encoder, LanguageModelNet, build_stack
from harness.core.loading import load_plugins
from harness.training.resume import RunCheckpoints
from harness.core.tasks import Example, Task, TaskData
from harness.core.vocab import Vocabulary
from harness.training.trainer import train_run


class _Crash(pl.Callback):
    """Stands for a kill: raises as epoch ``at`` starts, after the checkpoint of epoch ``at`` was written."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.at:
            raise RuntimeError("simulated crash")


def _train(data: TaskData, checkpoints: RunCheckpoints | None, crash_at: int | None = None) -> Any:
    pl.seed_everything(0, verbose=False)
    stack = build_stack(load_plugins().cells.get("gru"), None, 8, 8, 1, False, 0.3)
    net = ClassifierNet(Encoder(stack, vocab_size=len(data.input_vocab), embedding_size=8), 2, 0.3)
    settings = TrainingSettings(learning_rate=0.02, batch_size=8, max_epochs=6, cpu_threads=1, lr_schedule="step",
                                lr_step_epochs=2, early_stopping=EarlyStopping(patience=4))
    callbacks = [_Crash(crash_at)] if crash_at is not None else []
    result = train_run(net, ParityTask(), data, settings, seed=0, device="cpu", hyperparameters={},
                       verbose=False, extra_callbacks=callbacks, checkpoints=checkpoints)
    return result, {k: v.clone() for k, v in net.state_dict().items()}


def test_a_resumed_run_equals_the_uninterrupted_one_exactly(tmp_path: Path) -> None:
    data = random_parity_data()
    reference, reference_weights = _train(data, None)
    messages: list[str] = []
    checkpoints = RunCheckpoints(tmp_path / "ck", say=messages.append)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(data, checkpoints, crash_at=3)
    kept = sorted(p.name for p in (tmp_path / "ck").glob("*.ckpt"))
    assert len(kept) <= 3, kept  # pruned: the newest two and the best
    resumed, resumed_weights = _train(data, RunCheckpoints(tmp_path / "ck", say=messages.append))
    assert any("resumed from epoch 3 checkpoint" in m for m in messages), messages
    assert resumed.resumed_epochs == 3
    assert resumed.test_metrics == reference.test_metrics  # exact, not approximately
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in reference.history]
    for name, tensor in reference_weights.items():
        assert torch.equal(tensor, resumed_weights[name]), name


def test_a_corrupt_last_checkpoint_falls_back_to_the_one_before(tmp_path: Path) -> None:
    data = random_parity_data()
    messages: list[str] = []
    with pytest.raises(RuntimeError):
        _train(data, RunCheckpoints(tmp_path / "ck", say=messages.append), crash_at=3)
    checkpoints = RunCheckpoints(tmp_path / "ck", say=messages.append)
    newest = checkpoints.newest_first()[0]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated to half
    found = checkpoints.select()
    assert found is not None and found.epochs_done == 2
    assert any("unusable" in m and "sha256" in m for m in messages), messages
    assert Path(f"{newest}.corrupt").exists()
    for path in checkpoints.newest_first():  # every one damaged: a fresh start, said so
        path.write_bytes(b"\x00" * 10)
    assert RunCheckpoints(tmp_path / "ck", say=messages.append).select() is None


def test_a_checkpoint_of_other_vocabularies_is_never_resumed(tmp_path: Path) -> None:
    data = random_parity_data()
    messages: list[str] = []
    with pytest.raises(RuntimeError):
        _train(data, RunCheckpoints(tmp_path / "ck", say=messages.append, vocab_hashes={"input_vocab": "aaa"}),
               crash_at=2)
    other = RunCheckpoints(tmp_path / "ck", say=messages.append, vocab_hashes={"input_vocab": "bbb"})
    assert other.select() is None
    assert any("vocabularies {'input_vocab': 'aaa'} differ from the data's {'input_vocab': 'bbb'}" in m
               for m in messages), messages


class _CrashMidEpoch(pl.Callback):
    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any,
                             batch_index: int) -> None:
        if trainer.current_epoch == 3 and batch_index == 2:
            raise RuntimeError("simulated crash")


def test_a_timed_checkpoint_inside_an_epoch_resumes_at_the_next_batch_exactly(tmp_path: Path) -> None:
    # Checkpoints after every batch; the crash comes as batch 2 of epoch 4 starts, so the newest checkpoint
    # is the one after its batch 1: the resume must go on with batch 2 of the same permutation.
    data = random_parity_data()
    reference, reference_weights = _train(data, None)
    messages: list[str] = []
    crashing = RunCheckpoints(tmp_path / "ck", every_minutes=1e-9, say=messages.append)  # after every batch
    with pytest.raises(RuntimeError):
        train_run_with(data, crashing, _CrashMidEpoch())
    resumed, resumed_weights = _train(data, RunCheckpoints(tmp_path / "ck", say=messages.append))
    lines = [m for m in messages if "resumed from" in m]
    assert lines and "resumed from epoch 3 checkpoint (mid-epoch after batch 2, exact" in lines[0], messages
    assert not any("approximate" in m for m in messages), messages
    assert resumed.test_metrics == reference.test_metrics  # bit-exact
    assert resumed.history == reference.history  # train_loss of the interrupted epoch included
    for name, tensor in reference_weights.items():
        assert torch.equal(tensor, resumed_weights[name]), name


def train_run_with(data: TaskData, checkpoints: RunCheckpoints, crash: pl.Callback) -> Any:
    pl.seed_everything(0, verbose=False)
    stack = build_stack(load_plugins().cells.get("gru"), None, 8, 8, 1, False, 0.3)
    net = ClassifierNet(Encoder(stack, vocab_size=len(data.input_vocab), embedding_size=8), 2, 0.3)
    settings = TrainingSettings(learning_rate=0.02, batch_size=8, max_epochs=6, cpu_threads=1, lr_schedule="step",
                                lr_step_epochs=2, early_stopping=EarlyStopping(patience=4))
    return train_run(net, ParityTask(), data, settings, seed=0, device="cpu", hyperparameters={}, verbose=False,
                     extra_callbacks=[crash], checkpoints=checkpoints)


class _StreamTask(Task):
    name = "tiny_stream"
    family = "language_model"
    primary_metric = "perplexity"
    higher_is_better = False


def _train_stream(data: TaskData, checkpoints: RunCheckpoints | None, crash: pl.Callback | None = None) -> Any:
    pl.seed_everything(0, verbose=False)
    stack = build_stack(load_plugins().cells.get("lstm"), None, 6, 8, 1, False, 0.2)
    net = LanguageModelNet(Encoder(stack, vocab_size=len(data.input_vocab), embedding_size=6), len(data.input_vocab),
                           0.2)
    settings = TrainingSettings(learning_rate=0.5, optimizer="sgd", batch_size=3, bptt_steps=7, max_epochs=3,
                                cpu_threads=1)
    result = train_run(net, _StreamTask(), data, settings, seed=0, device="cpu", hyperparameters={}, verbose=False,
                       extra_callbacks=[crash] if crash is not None else [], checkpoints=checkpoints)
    return result, {k: v.clone() for k, v in net.state_dict().items()}


class _CrashInWindow(pl.Callback):
    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any,
                             batch_index: int) -> None:
        if trainer.current_epoch == 1 and batch_index == 5:
            raise RuntimeError("simulated crash")


def test_a_stream_resumes_mid_epoch_at_the_next_window_with_its_carried_state(tmp_path: Path) -> None:
    # TBPTT: window 5 of epoch 2 must start from the state carried out of window 4, saved in the checkpoint.
    rng = random.Random(1)
    vocab = Vocabulary([f"c{i}" for i in range(12)], specials=())
    split = [Example([rng.randrange(12) for _ in range(240)])]  # 3 columns of 80 tokens: 12 windows of 7
    data = TaskData(split, split, split, input_vocab=vocab, output_vocab=vocab, contiguous=True)
    reference, reference_weights = _train_stream(data, None)
    messages: list[str] = []
    with pytest.raises(RuntimeError):
        _train_stream(data, RunCheckpoints(tmp_path / "ck", every_minutes=1e-9, say=messages.append),
                      _CrashInWindow())
    resumed, resumed_weights = _train_stream(data, RunCheckpoints(tmp_path / "ck", say=messages.append))
    assert any("resumed from epoch 1 checkpoint (mid-epoch after batch 5, exact" in m for m in messages), messages
    assert resumed.test_metrics == reference.test_metrics
    assert resumed.history == reference.history
    for name, tensor in reference_weights.items():
        assert torch.equal(tensor, resumed_weights[name]), name
