"""training.devices > 1: one run trained data-parallel by Lightning's DDP, here as CPU processes over gloo.

The ranks are real processes (harness.training.distributed starts them); nothing is mocked.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pydantic import ValidationError
from harness_processes import mlflow_runs, run_harness, write_experiment
from torch import nn

from harness.experiment import ModelSettings, TrainingSettings
from harness.training.batching import IGNORE_INDEX, make_loader
from harness.training.distributed import DistributedRunError
from harness.core.loading import load_plugins
from harness.training.trainer import build_network, plan_network, train_run
from harness.plugins.tasks.agreement import AgreementConfig, AgreementTask
from harness.plugins.tasks.char_lm import CharLMConfig, CharLMTask


def _char_lm(tmp_path: Path) -> tuple[CharLMTask, object]:
    folder = tmp_path / "data" / "tinyshakespeare"
    folder.mkdir(parents=True)
    rng = random.Random(0)
    (folder / "input.txt").write_text("".join(rng.choice("abcdefgh \n") for _ in range(6000)))
    task = CharLMTask(CharLMConfig(data_dir=str(tmp_path / "data")))
    return task, task.load()


def _train(task, data, family: str, devices: int, **training) -> tuple[nn.Module, object]:
    cell = load_plugins().cells.get("lstm")
    model = ModelSettings(embedding_size=8, hidden_size=16, num_layers=1)
    torch.manual_seed(0)
    plan = plan_network(cell, cell.Config(), family, model, data.input_size)
    net = build_network(cell, cell.Config(), task, data, model, plan)
    settings = TrainingSettings(cpu_threads=1, devices=devices, **training)
    result = train_run(net, task, data, settings, seed=0, device="cpu", hyperparameters={}, verbose=False)
    return net, result


@pytest.mark.slow
def test_a_stream_language_model_on_two_processes_computes_exactly_the_one_process_run(tmp_path) -> None:
    # Each rank reads half of the 4 columns; DDP's gradient average is then the one-process gradient,
    # so two epochs of SGD land on the same weights and metrics up to float rounding.
    task, data = _char_lm(tmp_path)
    options = dict(optimizer="sgd", learning_rate=1.0, batch_size=4, bptt_steps=10, max_epochs=2)
    single_net, single = _train(task, data, "language_model", 1, **options)
    parallel_net, parallel = _train(task, data, "language_model", 2, **options)
    for name, weight in single_net.state_dict().items():
        torch.testing.assert_close(parallel_net.state_dict()[name], weight, rtol=1e-5, atol=1e-6)
    for key in ("test_loss", "test_perplexity", "test_tokens"):
        assert parallel.test_metrics[key] == pytest.approx(single.test_metrics[key], rel=1e-6)
    assert [h["val_loss"] for h in parallel.history] == pytest.approx([h["val_loss"] for h in single.history],
                                                                      rel=1e-6)
    assert parallel.train_tokens_per_s > 0 and parallel.epochs == 2


@pytest.mark.slow
def test_sentence_tasks_score_every_test_example_once_across_the_ranks() -> None:
    # 3 ranks, 31 test sentences: shares of 11, 10 and 10. The reported loss and accuracy must be those
    # of the whole split, which one process computes here from the trained weights.
    task = AgreementTask(AgreementConfig(train_size=48, validation_size=20, test_size=31, max_distance=6))
    data = task.load()
    net, result = _train(task, data, "classification", 3, batch_size=6, max_epochs=1)
    net.eval()
    loss_sum, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for batch in make_loader("classification", data, "test", 8, seed=0):
            logits = net(batch["inputs"], batch["lengths"])
            loss_sum += float(nn.functional.cross_entropy(logits, batch["targets"], reduction="sum",
                                                          ignore_index=IGNORE_INDEX))
            correct += int((logits.argmax(1) == batch["targets"]).sum())
            count += len(batch["targets"])
    assert count == 31
    assert result.test_metrics["test_loss"] == pytest.approx(loss_sum / count, rel=1e-5)
    assert result.test_metrics["test_accuracy"] == pytest.approx(correct / count)


def test_batches_must_split_evenly_over_the_devices() -> None:
    with pytest.raises(ValidationError, match="batch_size 6 does not split evenly over devices: 4"):
        TrainingSettings(batch_size=6, devices=4)
    with pytest.raises(ValidationError, match="eval_batch_size 3 does not split evenly over devices: 2"):
        TrainingSettings(batch_size=4, eval_batch_size=3, devices=2)


def _children() -> set[int]:
    return {int(pid) for pid in Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()}


class _KillARank(pl.Callback):
    """SIGKILLs one child rank at the third training batch, as the kernel's OOM killer would.

    ``before``: this process's children before the run (another test's servers), never touched."""

    def __init__(self, before: set[int]) -> None:
        self.before = before

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == 2:
            os.kill(min(_children() - self.before), signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the child ranks through /proc")
def test_a_killed_rank_fails_the_run_promptly_and_leaves_no_process_behind(tmp_path) -> None:
    task, data = _char_lm(tmp_path)
    cell = load_plugins().cells.get("lstm")
    model = ModelSettings(embedding_size=8, hidden_size=16, num_layers=1)
    net = build_network(cell, cell.Config(), task, data, model, plan_network(cell, cell.Config(), "language_model",
                                                                             model, None))
    settings = TrainingSettings(batch_size=6, bptt_steps=10, max_epochs=50, cpu_threads=1, devices=3)
    started, before = time.monotonic(), _children()
    with pytest.raises(DistributedRunError, match=r"rank 1 of 3 ended with signal SIGKILL during the run"):
        train_run(net, task, data, settings, seed=0, device="cpu", hyperparameters={}, verbose=False,
                  extra_callbacks=[_KillARank(before)])
    assert time.monotonic() - started < 120, "rank 0 waited for the dead rank instead of failing"
    assert _children() - before == set(), "the surviving rank was left running"
    assert not torch.distributed.is_initialized()


@pytest.mark.slow
def test_harness_run_records_a_data_parallel_run_once(tmp_path) -> None:
    # Through the CLI: the child ranks never touch the ledger or MLflow; the run is recorded once,
    # FINISHED, with the whole split's metrics and the devices it trained on.
    write_experiment(tmp_path, "ddp", {
        "cells": ["gru"],
        "tasks": [{"name": "agreement",
                   "options": {"train_size": 40, "validation_size": 16, "test_size": 16, "max_distance": 5}}],
        "seeds": [0], "device": "cpu",
        "model": {"embedding_size": 8, "hidden_size": 8},
        "training": {"batch_size": 8, "max_epochs": 1, "cpu_threads": 1, "devices": 2},
        "output_dir": "out", "reports_dir": "reports",
    })
    done = run_harness(tmp_path, "run", "ddp.yaml")
    assert done.returncode == 0, done.stderr
    (run,) = mlflow_runs(tmp_path / "out", "ddp")
    assert run.info.status == "FINISHED"
    assert run.data.params["training.devices"] == "2"
    assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
