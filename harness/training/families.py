"""One generic LightningModule per task family, with the network injected.

Each module computes its family's loss (summed, then divided by the number of
predictions, so perplexity and bits per token come from the summed NLL) and its
standard metrics per split; the task adds its own through ``Task.evaluate``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from harness.core.cells import State
from harness.experiment import TrainingSettings
from harness.training.batching import IGNORE_INDEX, Collator, ExampleDataset, count_tokens
from harness.training.decoding import DecodingSettings, decode
from harness.training.distributed import all_sum, current_shard, gather_objects
from harness.core.errors import BadInputError
from harness.training.finite import NonFiniteLossError, check_gradient
from harness.training.sampling import sample_sequences, start_context
from harness.training.streams import detach_state
from harness.core.tasks import Task, TaskData


class FamilyModule(pl.LightningModule):
    """Shared training/evaluation logic; subclasses implement :meth:`compute`."""

    family: ClassVar[str]

    def __init__(self, net: nn.Module, task: Task, data: TaskData, training: TrainingSettings,
                 hyperparameters: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.net, self.task, self.data, self.settings = net, task, data, training
        self.save_hyperparameters(hyperparameters or {})
        self.train_tokens = 0
        self.epoch_metrics: dict[str, float] = {}
        self.test_metrics: dict[str, float] = {}
        self.samples: list[list[str]] = []
        self._sums: dict[str, list[float]] = {}
        self._predictions: dict[str, list[tuple[int, Any]]] = {}
        #: (monitored value signed so higher is better, epoch counted from 1, weights) of the best
        #: validation epoch so far,
        #: kept only with early stopping on: those weights are the ones tested.
        self._best: tuple[float, int, dict[str, Tensor]] | None = None

    # Subclass API ---------------------------------------------------------

    def compute(self, batch: dict[str, Any], *, predict: bool) -> tuple[Tensor, int, int, list[Any] | None]:
        """Returns (summed loss, number of predictions, correct predictions, per-example predictions)."""
        raise NotImplementedError

    def split_metrics(self, split: str, loss: float, accuracy: float, predictions: list[Any]) -> dict[str, float]:
        """The family's standard metrics beyond loss."""
        return {}

    # Lightning hooks ------------------------------------------------------

    def training_step(self, batch: dict[str, Any], batch_index: int) -> Tensor:
        loss_sum, count, _, _ = self.compute(batch, predict=False)
        # One read of the loss per step, for the check and the epoch sum. Data-parallel: the sums of
        # every rank's share, so all ranks stop on the same non-finite step, never one alone.
        world = current_shard().world
        value, total, tokens = all_sum([float(loss_sum.detach()), count, count_tokens(batch)])
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"training loss is {value / total} at epoch {self.current_epoch}, batch {batch_index}; "
                "lower the learning rate or enable gradient clipping"
            )
        self.train_tokens += int(tokens)
        self._accumulate("train", value, int(total), 0)
        # DDP averages the ranks' gradients: world × (share of the sum) / global count makes that
        # average the gradient of the global batch's mean loss.
        return loss_sum * world / total

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        # After backward (data-parallel: after the ranks' gradients were averaged, so every rank stops at the
        # same step), before clipping and the optimizer: one host read per step, like the loss's.
        check_gradient(self, self.current_epoch, self.global_step)

    def validation_step(self, batch: dict[str, Any], batch_index: int) -> None:
        self._evaluate_batch("val", batch)

    def test_step(self, batch: dict[str, Any], batch_index: int) -> None:
        self._evaluate_batch("test", batch)

    def on_train_epoch_start(self) -> None:
        self._reset("train")

    def on_validation_epoch_start(self) -> None:
        self._reset("val")

    def on_test_epoch_start(self) -> None:
        self._reset("test")

    def on_validation_epoch_end(self) -> None:
        metrics = self._finish("val", self.data.validation)
        # Early stopping monitors val_loss through Lightning's logged metrics.
        self.log("val_loss", metrics["val_loss"], prog_bar=True)
        self.epoch_metrics.update(metrics)
        if self.settings.early_stopping is None:
            return
        key, higher = monitored_metric(self.settings, self.task)
        if key not in metrics:
            raise BadInputError(f"training.early_stopping.monitor is primary, but task {self.task.name!r} reports "
                                f"no {key} on its validation split; use monitor: loss")
        if key != "val_loss":
            self.log(key, metrics[key], prog_bar=True)  # the EarlyStopping callback reads logged metrics
        value = metrics[key] if higher else -metrics[key]  # higher is better from here on
        if self._best is None or value > self._best[0]:
            self._best = (value, self.current_epoch + 1,
                          {k: v.detach().clone() for k, v in self.net.state_dict().items()})

    def on_fit_end(self) -> None:
        # Early stopping ends `patience` epochs after the best one: test the best, not the last.
        if self._best is not None:
            self.net.load_state_dict(self._best[2])

    def current_epoch_metrics(self) -> dict[str, float]:
        """This epoch's train loss and validation metrics (what gets logged per epoch)."""
        loss_sum, count, _ = self._sums.get("train", [0.0, 0, 0])
        train = {"train_loss": loss_sum / count} if count else {}
        return {**train, **self.epoch_metrics}

    def on_test_epoch_end(self) -> None:
        self.test_metrics = self._finish("test", self.data.test)
        if self._best is not None:
            self.test_metrics["test_best_epoch"] = float(self._best[1])

    def configure_optimizers(self) -> Any:
        settings = self.settings
        optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
                      "rmsprop": torch.optim.RMSprop}
        optimizer = optimizers[settings.optimizer](self.parameters(), lr=settings.learning_rate,
                                                   weight_decay=settings.weight_decay)
        if settings.lr_schedule == "constant":
            return optimizer
        if settings.lr_schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.max_epochs)
        elif settings.lr_decay_start_epoch is None:
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, settings.lr_step_epochs, settings.lr_gamma)
        else:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
                step_decay_factor, every=settings.lr_step_epochs, gamma=settings.lr_gamma,
                start=settings.lr_decay_start_epoch))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # Helpers --------------------------------------------------------------

    def _reset(self, split: str) -> None:
        self._sums[split] = [0.0, 0, 0]
        self._predictions[split] = []

    def _accumulate(self, split: str, loss_sum: float, count: int, correct: int) -> None:
        sums = self._sums.setdefault(split, [0.0, 0, 0])
        sums[0] += loss_sum
        sums[1] += count
        sums[2] += correct

    def _evaluate_batch(self, split: str, batch: dict[str, Any]) -> None:
        loss_sum, count, correct, predictions = self.compute(batch, predict=True)
        self._accumulate(split, float(loss_sum.detach()), count, correct)
        if predictions is not None:
            self._predictions[split].extend(zip(batch["index"].tolist(), predictions))

    def _finish(self, split: str, examples: list[Any]) -> dict[str, float]:
        # Data-parallel: every rank's share of the split, so each rank computes whole-split metrics.
        self._sums[split] = all_sum(self._sums[split])
        self._predictions[split] = gather_objects(self._predictions[split])
        loss_sum, count, correct = self._sums[split]
        loss = loss_sum / max(count, 1)
        if not math.isfinite(loss):
            # The last optimiser step can blow the weights up after a finite training loss:
            # never log or report a NaN/inf evaluation as a finished result.
            raise NonFiniteLossError(
                f"{'validation' if split == 'val' else split} loss is {loss} at epoch {self.current_epoch}; "
                "lower the learning rate or enable gradient clipping"
            )
        predictions = [p for _, p in sorted(self._predictions[split], key=lambda item: item[0])]
        metrics = {"loss": loss, **self.split_metrics(split, loss, correct / max(count, 1), predictions)}
        if predictions:
            metrics.update(self.task.evaluate(predictions, examples))
            metrics.update(_group_accuracy(predictions, examples, self.family))
        return {f"{split}_{name}": float(value) for name, value in metrics.items()}


def monitored_metric(training: TrainingSettings, task: Task) -> tuple[str, bool]:
    """The validation metric early stopping watches and whether higher is better."""
    if training.early_stopping is not None and training.early_stopping.monitor == "primary":
        return f"val_{task.primary_metric}", task.higher_is_better
    return "val_loss", False


def step_decay_factor(epoch: int, *, every: int, gamma: float, start: int) -> float:
    """The ``step`` schedule's learning-rate factor in (0-based) ``epoch``: ``start`` epochs at the
    initial rate, then × ``gamma`` once more every ``every`` epochs. With start 4, every 1 and
    gamma 0.5 (Zaremba et al. 2014) epochs 1-4 train at lr, epoch 5 at lr/2, epoch 13 at lr/2⁹;
    with start = every it is ``StepLR``."""
    decays = 0 if epoch < start else 1 + (epoch - start) // every
    return gamma**decays


def _group_accuracy(predictions: list[Any], examples: list[Any], family: str) -> dict[str, float]:
    """accuracy/<group> for classification examples that carry a group (e.g. a distance bucket)."""
    if family != "classification" or not any(e.group for e in examples):
        return {}
    totals: dict[str, list[int]] = {}
    for prediction, example in zip(predictions, examples):
        if example.group is not None:
            hits = totals.setdefault(example.group, [0, 0])
            hits[0] += int(prediction == example.target)
            hits[1] += 1
    return {f"accuracy/{group}": hit / n for group, (hit, n) in sorted(totals.items())}


class ClassificationModule(FamilyModule):
    family = "classification"

    def compute(self, batch, *, predict):
        logits = self.net(batch["inputs"], batch["lengths"])  # (B, C)
        loss_sum = nn.functional.cross_entropy(logits, batch["targets"], reduction="sum")
        predicted = logits.argmax(1)
        correct = int((predicted == batch["targets"]).sum())
        return loss_sum, len(predicted), correct, predicted.tolist() if predict else None

    def split_metrics(self, split, loss, accuracy, predictions):
        return {"accuracy": accuracy}


class RegressionModule(FamilyModule):
    family = "regression"

    def compute(self, batch, *, predict):
        predicted = self.net(batch["inputs"], batch["lengths"])[:, 0]  # (B,)
        loss_sum = nn.functional.mse_loss(predicted, batch["targets"], reduction="sum")
        return loss_sum, len(predicted), 0, predicted.tolist() if predict else None

    def split_metrics(self, split, loss, accuracy, predictions):
        return {"mse": loss}


class TaggingModule(FamilyModule):
    family = "tagging"

    def compute(self, batch, *, predict):
        logits = self.net(batch["inputs"], batch["lengths"])  # (B, T, C)
        targets = batch["targets"]  # (B, T), IGNORE_INDEX at padding
        loss_sum = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum",
                                               ignore_index=IGNORE_INDEX)
        real = targets != IGNORE_INDEX
        predicted = logits.argmax(2)
        correct = int(((predicted == targets) & real).sum())
        predictions = None
        if predict:
            predictions = [row[:length] for row, length in zip(predicted.tolist(), batch["lengths"].tolist())]
        return loss_sum, int(real.sum()), correct, predictions

    def split_metrics(self, split, loss, accuracy, predictions):
        return {"cross_entropy": loss, "token_accuracy": accuracy}


class LanguageModelModule(FamilyModule):
    """x<t> = y<t-1>, on independent sentences (<BOS> … <EOS>) or on a contiguous stream.

    Stream mode (``data.contiguous``): truncated BPTT as :mod:`harness.training.streams` describes;
    the state of each stream is carried from window to window (detached) and starts from
    zero at every pass's window 0. In both modes loss = NLL summed over every predicted
    token / the number of predicted tokens N, perplexity = exp(loss), bits per token =
    loss / ln 2; streams also report N (``tokens``) and bits per ``data.token_unit``.
    """

    family = "language_model"
    #: Sequences sampled at test time for ``Task.evaluate_samples``.
    test_samples = 200
    sample_max_length = 100

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._carried: dict[str, State] = {}  # stream name → state after its last window

    def compute(self, batch, *, predict):
        if self.data.contiguous:
            logits = self._stream_forward(batch)  # (B, T, V)
        else:
            logits, _ = self.net(batch["inputs"], batch["lengths"])  # (B, T, V)
        targets = batch["targets"]
        loss_sum = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum",
                                               ignore_index=IGNORE_INDEX)
        real = targets != IGNORE_INDEX
        correct = int(((logits.argmax(2) == targets) & real).sum()) if predict else 0
        return loss_sum, int(real.sum()), correct, None

    def _stream_forward(self, batch: dict[str, Any]) -> Tensor:
        stream, window = batch["stream"], int(batch["window"])
        state = None if window == 0 else self._carried[stream]
        logits, state = self.net(batch["inputs"], None, state)  # no lengths: every window is full
        self._carried[stream] = detach_state(state)
        return logits

    def split_metrics(self, split, loss, accuracy, predictions):
        metrics = {"perplexity": math.exp(min(loss, 700.0)), "bits_per_token": loss / math.log(2),
                   "token_accuracy": accuracy}
        if self.data.contiguous:
            metrics["tokens"] = self._sums[split][1]
            if self.data.token_unit != "token":
                metrics[f"bits_per_{self.data.token_unit}"] = metrics["bits_per_token"]
        if split == "test":
            generator = torch.Generator(device="cpu").manual_seed(0)
            vocab = self.data.input_vocab
            self.samples = sample_sequences(self.net, vocab, count=self.test_samples, context=start_context(vocab),
                                            max_length=self.sample_max_length, generator=generator)
            metrics.update(self.task.evaluate_samples(self.samples))
        return metrics


class Seq2SeqModule(FamilyModule):
    """Encoder-decoder with teacher forcing: the decoder reads <BOS> y<1> … y<Ty> and predicts y<1> … <EOS>.

    ``perplexity`` is teacher-forced: exp of the NLL summed over every reference token and
    the final <EOS>, each given the reference prefix, divided by their number. The outputs
    the task scores are decoded as its ``decoding`` attribute says
    (:class:`harness.training.decoding.DecodingSettings`: greedy or beam search, length limit); a task
    without one is decoded greedily up to twice its longest reference + 5 tokens.
    """

    family = "seq2seq"

    def compute(self, batch, *, predict):
        logits = self.net(batch["inputs"], batch["lengths"], batch["decoder_inputs"], batch["decoder_lengths"])
        targets = batch["targets"]  # (B, Ty+1)
        loss_sum = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum",
                                               ignore_index=IGNORE_INDEX)
        real = targets != IGNORE_INDEX
        correct = int(((logits.argmax(2) == targets) & real).sum())
        predictions = None
        if predict:
            vocab = self.data.output_vocab
            settings = getattr(self.task, "decoding", None) or DecodingSettings()
            longest = settings.max_length or int(batch["decoder_lengths"].max()) * 2 + 5
            predictions = decode(self.net, batch["inputs"], batch["lengths"], bos_id=vocab.bos_id,
                                 eos_id=vocab.eos_id, settings=settings, max_length=longest)
        return loss_sum, int(real.sum()), correct, predictions

    def split_metrics(self, split, loss, accuracy, predictions):
        return {"perplexity": math.exp(min(loss, 700.0)), "token_accuracy_teacher_forced": accuracy}


class MultilabelSequenceModule(FamilyModule):
    """x<t> = y<t-1> with one sigmoid per label (polyphonic music: 88 keys per step).

    ``loss`` = ``nll``: binary cross-entropy (the negative log-likelihood of the step's
    labels under independent Bernoullis), summed over every label of every real step of
    every sequence, divided by the number of real steps — the average NLL per time step
    of Boulanger-Lewandowski et al. (2012) and Chung et al. (2014), in nats; each step
    weighs the same. At test time ``train_nll`` is the same quantity on the training split
    (the tested weights, no weight noise).
    """

    family = "multilabel_sequence"

    def compute(self, batch, *, predict):
        logits, _ = self.net(batch["inputs"], batch["lengths"])  # (B, T, L)
        lengths = batch["lengths"].to(logits.device)
        real = torch.arange(logits.shape[1], device=logits.device)[None, :] < lengths[:, None]  # (B, T)
        per_step = nn.functional.binary_cross_entropy_with_logits(logits, batch["targets"], reduction="none").sum(2)
        return per_step[real].sum(), int(real.sum()), 0, None

    def split_metrics(self, split, loss, accuracy, predictions):
        metrics = {"nll": loss}
        if split == "test":
            metrics["train_nll"] = self._nll(self.data.train)
        return metrics

    @torch.no_grad()
    def _nll(self, examples: list[Any]) -> float:
        loader = torch.utils.data.DataLoader(ExampleDataset(examples), batch_size=self.settings.batch_size,
                                             collate_fn=Collator(self.family, self.data))
        total, steps = 0.0, 0
        for batch in loader:
            loss_sum, count, _, _ = self.compute({k: v.to(self.device) for k, v in batch.items()}, predict=False)
            total, steps = total + float(loss_sum), steps + count
        return total / max(steps, 1)


FAMILY_MODULES: dict[str, type[FamilyModule]] = {
    module.family: module
    for module in (ClassificationModule, RegressionModule, TaggingModule, LanguageModelModule, Seq2SeqModule,
                   MultilabelSequenceModule)
}
