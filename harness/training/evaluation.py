"""``harness evaluate``: score a finished run's saved network on one split of its task's data.

The task is loaded again with the options recorded with the run (any of them may be
overridden, e.g. another ``data_dir``), so its vocabularies are rebuilt from the data. When
one differs from the vocabulary saved with the run the evaluation is refused (exit 2, both
hashes shown): the network's token ids would then stand for other tokens and every number
would be silently wrong. Otherwise the split is scored through the family's LightningModule,
exactly as the run's own test was, so unchanged options reproduce the recorded test metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pydantic import ValidationError

from harness.training.checkpoints import load_trained_run
from harness.experiment import TrainingSettings
from harness.training.batching import make_loader
from harness.core.errors import BadInputError, ConfigError
from harness.training.families import FAMILY_MODULES
from harness.core.tasks import Task, TaskConfig, TaskData
from harness.training.trainer import quiet_lightning
from harness.core.vocab import Vocabulary

Split = Literal["train", "validation", "test"]
VOCABULARIES = ("input_vocab", "output_vocab")


class VocabularyMismatchError(BadInputError):
    """The task's rebuilt vocabulary is not the one the run's network was trained with."""


@dataclass
class Evaluation:
    """What ``harness evaluate`` found: the metrics of one split, and what they were computed on."""

    run: str
    task: str
    split: str
    examples: int
    options: dict[str, Any]  # the task options used, defaults included
    changed: dict[str, Any]  # the options that differ from the run's recorded ones
    vocabulary_hashes: dict[str, str]
    metrics: dict[str, float]  # without the split prefix: {"accuracy": …, "loss": …}

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def evaluate_run(folder: Path, plugins: Any, *, split: Split = "test",
                 overrides: Mapping[str, Any] | None = None) -> Evaluation:
    """Rebuild the run in ``folder`` (its artifact folder), re-load its task and score ``split``.

    Raises:
        ConfigError: an override names no option of the task, or gives an invalid value.
        VocabularyMismatchError: a rebuilt vocabulary differs from the saved one.
    """
    trained = load_trained_run(folder, plugins)
    recorded = trained.config["task"]["options"]
    config = task_config(type(trained.task), recorded, overrides or {})
    task = type(trained.task)(config)
    data = task.load()
    data.check(task.name)
    before = trained.task.config.model_dump(mode="json")  # recorded options, defaults of newer ones filled in
    changed = {k: v for k, v in config.model_dump(mode="json").items() if before.get(k) != v}
    hashes = check_vocabularies(trained.data, data, folder=folder, changed=changed)
    training = TrainingSettings(**trained.config["training"])
    metrics = score_split(trained.net, task, data, split, training, device=trained.config.get("device", "auto"))
    return Evaluation(run=str(folder), task=task.name, split=split, examples=len(data.splits()[split]),
                      options=config.model_dump(mode="json"), changed=changed, vocabulary_hashes=hashes,
                      metrics=metrics)


def task_config(task_class: type[Task], recorded: Mapping[str, Any], overrides: Mapping[str, Any]) -> TaskConfig:
    """The run's recorded task options with ``overrides`` applied, validated by the task's Config."""
    known = list(task_class.Config.model_fields)
    unknown = [key for key in overrides if key not in known]
    if unknown:
        raise ConfigError(f"--set {unknown[0]}: task {task_class.name!r} has no option {unknown[0]!r}; "
                          f"its options: {', '.join(known) or '(none)'}")
    try:
        return task_class.Config(**{**recorded, **overrides})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(options)'}: {e['msg']}"
                             for e in error.errors())
        raise ConfigError(f"task {task_class.name!r} options with --set applied are invalid: {problems}") from None


def check_vocabularies(saved: TaskData, rebuilt: TaskData, *, folder: Path,
                       changed: Mapping[str, Any]) -> dict[str, str]:
    """Each vocabulary's hash, after checking that the rebuilt one equals the one saved with the run."""
    hashes, differences = {}, []
    for name in VOCABULARIES:
        before, now = getattr(saved, name), getattr(rebuilt, name)
        if before is None and now is None:
            continue
        if before is None or now is None or before.hash != now.hash:
            differences.append(f"  {name}: saved {_describe(before)}, now {_describe(now)}")
        elif before.tokens != now.tokens:  # a 64-bit hash collision: never trust ids that differ
            differences.append(f"  {name}: saved {_describe(before)}, now {_describe(now)} (same hash, other tokens)")
        else:
            hashes[name] = now.hash
    if differences:
        given = ", ".join(f"{k}={v}" for k, v in changed.items())
        how = f"the run's task options and {given}" if changed else "the run's own task options"
        raise VocabularyMismatchError(
            f"{folder}: refusing to evaluate: the vocabularies rebuilt from the data with {how} differ from the "
            "ones saved with the run, so the network's token ids would stand for other tokens:\n"
            + "\n".join(differences)
            + "\nEvaluate with options (data, vocab_size, lowercase, …) that rebuild the saved vocabularies, "
            "or retrain."
        )
    return hashes


def _describe(vocab: Vocabulary | None) -> str:
    return "(none)" if vocab is None else f"{vocab.hash} ({len(vocab):,} entries)"


def score_split(net: torch.nn.Module, task: Task, data: TaskData, split: Split, training: TrainingSettings,
                *, device: str = "auto") -> dict[str, float]:
    """The family's metrics (and the task's own) of ``net`` on ``split``, computed by its test step."""
    # The family module tests on `data.test`: hand it the chosen split in that place.
    scored = dataclasses.replace(data, test=data.splits()[split])
    module = FAMILY_MODULES[task.family](net, task, scored, training, {})
    on_gpu = device != "cpu" and torch.cuda.is_available()
    if training.cpu_threads is not None and not on_gpu:
        torch.set_num_threads(training.cpu_threads)
    with quiet_lightning():
        trainer = pl.Trainer(accelerator="gpu" if on_gpu else "cpu", devices=1, logger=False,
                             enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)
        loader = make_loader(task.family, scored, "test", training.eval_batch_size or training.batch_size, seed=0,
                             bptt_steps=training.bptt_steps)
        trainer.test(module, loader, verbose=False)
    return {name.removeprefix("test_"): value for name, value in module.test_metrics.items()}


def format_evaluation(evaluation: Evaluation) -> list[str]:
    """The human-readable lines ``harness evaluate`` prints."""
    changed = ", ".join(f"{k}={v}" for k, v in evaluation.changed.items())
    hashes = "  ".join(f"{name} {digest}" for name, digest in evaluation.vocabulary_hashes.items())
    shown = "  ".join(f"{name} {value:.6g}" for name, value in evaluation.metrics.items())
    options = f"options changed: {changed}" if changed else "the run's recorded options"
    return [
        f"run: {evaluation.run}",
        f"task: {evaluation.task} ({options})",
        f"vocabularies: {hashes or '(none)'} (equal to the run's)",
        f"{evaluation.split} ({evaluation.examples:,} examples): {shown}",
    ]
