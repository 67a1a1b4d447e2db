"""Train and test one grid run with PyTorch Lightning. Lightning stays in this layer.

``build_network`` turns (cell, task family, model settings, task data) into a plain
``nn.Module``; ``train_run`` wraps it in its family's LightningModule, fits, tests
and measures wall time, throughput and peak memory.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.environments import LightningEnvironment
from pytorch_lightning.strategies import DDPStrategy
from torch import nn

from harness.training.allocator import retain_freed_memory
from harness.core.cells import CellConfig, RecurrentCell
from harness.experiment import ModelSettings, TrainingSettings
from harness.training.batching import make_loader
from harness.training.distributed import DDP_TIMEOUT, DistributedRunError, RankProcesses, is_child, planned_shard
from harness.training.families import FAMILY_MODULES, FamilyModule, monitored_metric
from harness.training.resume import RunCheckpoints, with_checkpoints
from harness.networks.models import (
    ClassifierNet,
    Encoder,
    LanguageModelNet,
    MultilabelSequenceNet,
    Seq2SeqNet,
    TaggerNet,
    build_stack,
    hidden_size_for_budget,
    stack_param_count,
)
from harness.training.progress import has_bar, progress_callbacks
from harness.core.tasks import Task, TaskData


@dataclass
class NetworkPlan:
    """Sizes decided before building: the hidden size (possibly from a budget) and the stack's input size."""

    hidden_size: int
    input_size: int
    #: The (encoder) stack the parameter budget sizes.
    stack_param_count: int
    #: Every recurrent stack of the network: for an encoder-decoder, encoder plus decoder (the param_count
    #: tag); 0 where unknown (a plan read back from a checkpoint, which only needs the sizes).
    param_count: int = 0


def plan_network(cell_class: type[RecurrentCell], cell_config: CellConfig, family: str, model: ModelSettings,
                 input_size: int | None) -> NetworkPlan:
    """``input_size``: features per step for vector inputs, None for token inputs (embedding_size)."""
    stack_input = input_size if input_size is not None else model.embedding_size
    hidden = model.hidden_size
    if hidden is None:
        hidden = hidden_size_for_budget(cell_class, cell_config, stack_input, model.parameter_budget,
                                        model.num_layers, model.bidirectional)
    count = stack_param_count(cell_class, cell_config, stack_input, hidden, model.num_layers, model.bidirectional)
    total = count
    if family == "seq2seq":  # the decoder is a second, unidirectional stack of the same cell (see build_network)
        decoder_input = stack_input + hidden if model.decoder_context == "every_step" else stack_input
        total += stack_param_count(cell_class, cell_config, decoder_input, hidden, model.num_layers, False)
    return NetworkPlan(hidden, stack_input, count, total)


def build_network(cell_class: type[RecurrentCell], cell_config: CellConfig, task: Task, data: TaskData,
                  model: ModelSettings, plan: NetworkPlan) -> nn.Module:
    family = task.family

    def encoder(vocab_size: int | None, bidirectional: bool, pad_id: int = 0) -> Encoder:
        stack = build_stack(cell_class, cell_config, plan.input_size, plan.hidden_size, model.num_layers,
                            bidirectional, model.dropout, model.implementation)
        return Encoder(stack, vocab_size=vocab_size, embedding_size=model.embedding_size, pad_id=pad_id)

    vocab = data.input_vocab
    source = encoder(len(vocab) if vocab else None, model.bidirectional, _pad_id(vocab))
    if family == "tagging":
        net: nn.Module = TaggerNet(source, len(data.output_vocab), model.dropout)
    elif family == "classification":
        net = ClassifierNet(source, len(data.output_vocab), model.dropout, model.pooling)
    elif family == "regression":
        net = ClassifierNet(source, 1, model.dropout, model.pooling)
    elif family == "language_model":
        net = LanguageModelNet(source, len(vocab), model.dropout)
    elif family == "multilabel_sequence":
        net = MultilabelSequenceNet(source, data.input_size, model.dropout)
    elif family == "seq2seq":
        target = data.output_vocab
        if model.decoder_context == "every_step":  # the decoder also reads the context c (H wide) each step
            stack = build_stack(cell_class, cell_config, plan.input_size + plan.hidden_size, plan.hidden_size,
                                model.num_layers, False, model.dropout, model.implementation)
            decoder = Encoder(stack, vocab_size=len(target), embedding_size=model.embedding_size,
                              pad_id=_pad_id(target))
        else:
            decoder = encoder(len(target), False, _pad_id(target))
        net = Seq2SeqNet(source, decoder, len(target), model.dropout, model.decoder_context)
    else:
        raise ValueError(f"unknown task family {family!r}")
    initialize(net, model.initialization, model.init_scale)
    return net


def seeded_network(cell_class: type[RecurrentCell], cell_config: CellConfig, task: Task, data: TaskData,
                   model: ModelSettings, seed: int) -> tuple[NetworkPlan, nn.Module]:
    """Seed every generator with the run's seed, then plan and build its network: the same weights
    whichever executor (this process, a Ray worker) trains the run."""
    torch.manual_seed(seed)
    pl.seed_everything(seed, workers=True, verbose=False)
    plan = plan_network(cell_class, cell_config, task.family, model, data.input_size)
    return plan, build_network(cell_class, cell_config, task, data, model, plan)


def device_name(device: str) -> str:
    """The device a run names in its ``device`` tag: ``cpu``, or ``cuda:<GPU model>``."""
    if device != "cpu" and torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return "cpu"


def initialize(net: nn.Module, scheme: str, scale: float) -> None:
    """Overwrite every parameter with U(-scale, scale) or N(0, scale²); ``default`` keeps each layer's own."""
    if scheme == "default":
        return
    with torch.no_grad():
        for parameter in net.parameters():
            if scheme == "uniform":
                parameter.uniform_(-scale, scale)
            else:
                parameter.normal_(0.0, scale)
        for module in net.modules():  # <PAD> stays the zero vector, as nn.Embedding keeps it
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()


def _pad_id(vocab: Any) -> int | None:
    # None without <PAD>: a stream vocabulary's id 0 is a real token whose embedding must train.
    return vocab.pad_id if vocab is not None and "<PAD>" in vocab else None


@dataclass
class TrainingResult:
    test_metrics: dict[str, float]
    history: list[dict[str, float]]
    wall_time_s: float
    train_tokens_per_s: float
    peak_memory_mb: float
    memory_measure: str
    epochs: int
    execution_path: str
    device: str
    model_param_count: int
    samples: list[list[str]] = field(default_factory=list)
    resumed_epochs: int = 0  # epochs restored from a checkpoint instead of trained by this call


class WeightNoise(pl.Callback):
    """Gaussian weight noise (Graves 2011), as Chung et al. 2014 train with (σ = 0.075).

    Before each training batch every trainable parameter gets fresh N(0, σ²) noise; the
    forward and backward pass run on the noisy weights; just before the optimiser step
    the clean weights come back, so the gradient taken at the noisy point updates the
    clean weights. Validation and test always see the clean weights.
    """

    def __init__(self, std: float) -> None:
        self.std = std
        self._clean: list[tuple[nn.Parameter, torch.Tensor]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._restore()  # a batch whose step was skipped must not keep (and compound) its noise
        with torch.no_grad():
            for parameter in module.parameters():
                if parameter.requires_grad:
                    self._clean.append((parameter, parameter.detach().clone()))
                    parameter.add_(torch.randn_like(parameter) * self.std)

    def on_before_optimizer_step(self, trainer: pl.Trainer, module: pl.LightningModule, optimizer: Any) -> None:
        self._restore()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._restore()

    def _restore(self) -> None:
        with torch.no_grad():
            for parameter, clean in self._clean:
                parameter.copy_(clean)
        self._clean = []


class _EpochReporter(pl.Callback):
    """Hands each epoch's metrics to the runner (MLflow) and prints a progress line."""

    def __init__(self, on_epoch: Callable[[int, dict[str, float]], None], max_epochs: int, verbose: bool) -> None:
        self.on_epoch, self.max_epochs, self.verbose = on_epoch, max_epochs, verbose
        self.history: list[dict[str, float]] = []
        self.device = torch.device("cpu")

    def on_train_start(self, trainer: pl.Trainer, module: FamilyModule) -> None:
        # Recorded here: Lightning moves the module back to the CPU when fit ends.
        self.device = module.device

    def on_train_epoch_end(self, trainer: pl.Trainer, module: FamilyModule) -> None:
        metrics = module.current_epoch_metrics()
        self.history.append(metrics)
        self.on_epoch(trainer.current_epoch, metrics)
        if self.verbose:
            shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if "/" not in k)
            print(f"    epoch {trainer.current_epoch + 1}/{self.max_epochs}  {shown}", file=sys.stderr, flush=True)


def train_run(net: nn.Module, task: Task, data: TaskData, training: TrainingSettings, *, seed: int,
              device: str, hyperparameters: dict[str, Any],
              on_epoch: Callable[[int, dict[str, float]], None] = lambda epoch, metrics: None,
              verbose: bool = True, extra_callbacks: Sequence[pl.Callback] = (),
              checkpoints: RunCheckpoints | None = None) -> TrainingResult:
    """Fit on train (validating each epoch), then test; raises NonFiniteLossError on NaN/inf loss.

    ``extra_callbacks`` join the run's own (e.g. the speed benchmark's batch timer). ``checkpoints``:
    write them each epoch and resume from the newest that verifies (:mod:`harness.training.resume`). With
    ``training.devices`` > 1 this process becomes rank 0 of a data-parallel run
    (:mod:`harness.training.distributed`) and returns rank 0's result; all ranks write (rank 0 the file)
    and resume from the same checkpoints.
    """
    ranks: contextlib.AbstractContextManager = contextlib.nullcontext()
    if training.devices > 1 and not is_child():
        gpus = torch.cuda.device_count() if device != "cpu" and torch.cuda.is_available() else None
        if gpus is not None and gpus < training.devices:
            raise DistributedRunError(
                f"training.devices is {training.devices} but this process sees {gpus} GPU(s); lower "
                "training.devices or make more GPUs visible (CUDA_VISIBLE_DEVICES)")
        # Every rank resumes from the checkpoint rank 0 selects now, before the ranks start.
        followers = checkpoints.for_other_ranks() if checkpoints is not None else None
        ranks = RankProcesses(dict(net=net, task=task, data=data, training=training, seed=seed, device=device,
                                   hyperparameters=hyperparameters, verbose=False, checkpoints=followers),
                              training.devices)
    with ranks:
        return _train(net, task, data, training, seed=seed, device=device, hyperparameters=hyperparameters,
                      on_epoch=on_epoch, verbose=verbose, extra_callbacks=extra_callbacks, checkpoints=checkpoints)


def _train(net: nn.Module, task: Task, data: TaskData, training: TrainingSettings, *, seed: int, device: str,
           hyperparameters: dict[str, Any], on_epoch: Callable[[int, dict[str, float]], None], verbose: bool,
           extra_callbacks: Sequence[pl.Callback], checkpoints: RunCheckpoints | None = None) -> TrainingResult:
    module = FAMILY_MODULES[task.family](net, task, data, training, hyperparameters)
    reporter = _EpochReporter(on_epoch, training.max_epochs, verbose)
    callbacks: list[pl.Callback] = [*progress_callbacks(verbose), reporter, *extra_callbacks]
    if training.weight_noise:
        callbacks.append(WeightNoise(training.weight_noise))
    if training.early_stopping is not None:
        key, higher = monitored_metric(training, task)
        callbacks.append(pl.callbacks.EarlyStopping(
            monitor=key, mode="max" if higher else "min", patience=training.early_stopping.patience,
            min_delta=training.early_stopping.min_delta,
        ))
    accelerator = {"auto": "auto", "cpu": "cpu", "gpu": "gpu"}[device]
    parallel: dict[str, Any] = {}
    if training.devices > 1:
        # The ranks exist already (harness.training.distributed): LightningEnvironment reads them from the
        # environment. A stream's windows after the first start from the carried state, so a
        # learned a<0> gets no gradient there: DDP must look for unused parameters.
        strategy = DDPStrategy(find_unused_parameters=data.contiguous, timeout=DDP_TIMEOUT)
        parallel = dict(strategy=strategy, plugins=[LightningEnvironment()], use_distributed_sampler=False)
    saving = with_checkpoints(checkpoints, callbacks, parallel)  # appends its callback, sets its Trainer options
    with quiet_lightning():
        trainer = pl.Trainer(
            accelerator=accelerator, devices=training.devices, max_epochs=training.max_epochs, logger=False,
            enable_model_summary=False, num_sanity_val_steps=0,
            enable_progress_bar=has_bar(callbacks), callbacks=callbacks,
            gradient_clip_val=training.gradient_clip_norm, gradient_clip_algorithm="norm",
            deterministic="warn", **parallel,
        )
    # Deterministic mode also fills every new tensor with NaN, to expose reads of uninitialised memory:
    # a debugging aid, not part of determinism, costing several ms per step of a 10k-word softmax on a CPU.
    torch.utils.deterministic.fill_uninitialized_memory = False
    eval_batch_size = training.eval_batch_size or training.batch_size
    shard = planned_shard(training.devices)
    train_loader, val_loader, test_loader = (
        make_loader(task.family, data, split, size, seed=seed, bptt_steps=training.bptt_steps, shard=shard)
        for split, size in (("train", training.batch_size), ("validation", eval_batch_size),
                            ("test", eval_batch_size)))
    on_gpu = torch.cuda.is_available() and accelerator != "cpu"
    retain_freed_memory()
    if training.cpu_threads is not None and not on_gpu:
        torch.set_num_threads(training.cpu_threads)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    resume_from = saving.start(train_loader, reporter.history)
    with quiet_lightning():
        trainer.fit(module, train_loader, val_loader, ckpt_path=resume_from, weights_only=True)
        train_seconds = time.perf_counter() - started
        trainer.test(module, test_loader, verbose=False)
    wall = time.perf_counter() - started
    if on_gpu:
        peak, measure = torch.cuda.max_memory_allocated() / 2**20, "cuda_max_allocated"
    else:
        peak, measure = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_max_rss"
    stack = next(m for m in net.modules() if hasattr(m, "execution_path"))
    return TrainingResult(
        test_metrics=module.test_metrics,
        history=reporter.history,
        wall_time_s=wall,
        train_tokens_per_s=module.train_tokens / max(train_seconds, 1e-9),
        peak_memory_mb=peak,
        memory_measure=measure,
        epochs=trainer.current_epoch,
        execution_path="+".join(sorted(stack.paths_used)) or stack.execution_path(reporter.device),
        device=str(reporter.device),
        model_param_count=sum(p.numel() for p in net.parameters()),
        samples=module.samples,
        resumed_epochs=saving.resumed_epochs,
    )


class quiet_lightning:
    """Silence Lightning's start-up chatter (GPU available, …) that would bury the grid progress."""

    _names = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning")

    def __enter__(self) -> None:
        self._levels = {n: logging.getLogger(n).level for n in self._names}
        for name in self._names:
            logging.getLogger(name).setLevel(logging.ERROR)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        # Data-parallel runs combine their metrics themselves (harness.training.distributed) before logging them.
        warnings.filterwarnings("ignore", message=".*sync_dist=True.*")

    def __exit__(self, *exc: object) -> None:
        self._warnings.__exit__(*exc)
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
