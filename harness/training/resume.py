"""Checkpoints of a run in progress, and resuming a run from its newest checkpoint that verifies.

Lightning writes the checkpoint (weights, optimizer, schedulers, loop progress, early-stopping
state); :class:`ResumeState` adds what it lacks (every rank's RNG states, the data order, the
harness's own state) and :class:`AtomicCheckpointIO` writes it atomically with a sha256 sidecar.
The training loader's position inside an epoch Lightning saves from the loader itself
(:class:`harness.training.positions.ResumableLoader`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from harness.core.file_hash import sha256_of
from harness.core.safe_files import atomic_write_bytes, check_sidecar, describe_load_error, load_weights_only
from harness.training.distributed import all_sum, current_shard
from harness.training.positions import loader_position
from harness.training.rng_states import capture_all_ranks, restore_own

#: Checkpoint files are ``step-<global step>.ckpt``: the newest has the largest step.
PREFIX, SUFFIX = "step-", ".ckpt"
#: How many of the newest checkpoints are kept (besides the best): the newest and one to fall back to.
KEEP_NEWEST = 2


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO, written via temp file + fsync + rename, with a sha256 sidecar.

    Loading checks the sidecar first and unpickles with ``weights_only=True`` only.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        import io

        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
        atomic_write_bytes(Path(path), data)
        atomic_write_bytes(Path(f"{path}.sha256"), (hashlib.sha256(data).hexdigest() + "\n").encode())

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        check_sidecar(Path(path))
        return load_weights_only(Path(path))

    def remove_checkpoint(self, path: Any) -> None:
        for name in (Path(path), Path(f"{path}.sha256")):
            name.unlink(missing_ok=True)


@dataclass
class Resumable:
    """A checkpoint that verified and loaded, and what it says about the run."""

    path: Path
    epochs_done: int  # completed training epochs
    mid_epoch: bool
    history: list[dict[str, float]]
    run_id: str | None  # the MLflow run (attempt) that wrote it
    #: False only for a mid-epoch checkpoint without the loader's position (written before positions were
    #: recorded): its resume restarts the epoch's data, so it is not the uninterrupted run.
    exact: bool = True
    batches_done: int = 0  # trained batches of the interrupted epoch (mid-epoch checkpoints)


@dataclass
class RunCheckpoints:
    """The checkpoint folder of one run (``<output>/checkpoints/<run key>/``) and its policy."""

    folder: Path
    every_minutes: float | None = None
    vocab_hashes: dict[str, str] = field(default_factory=dict)
    say: Callable[[str], None] = print
    run_id: str | None = None  # the MLflow run of this attempt, recorded in each checkpoint
    resumed: Resumable | None = None  # set by :meth:`select`
    #: Called once training resumes from a checkpoint (the runner tags its MLflow run).
    on_resume: Callable[[Resumable], None] | None = None
    #: True once :meth:`select` ran for a data-parallel run, before its ranks started: every rank resumes
    #: from that checkpoint and none selects again.
    preselected: bool = False
    #: A child rank (1…N−1) of a data-parallel run: it loads the checkpoint rank 0 chose and takes part in
    #: writing (Lightning writes on rank 0 alone), but never prunes, announces or tags.
    follower: bool = False

    def newest_first(self) -> list[Path]:
        found = [p for p in self.folder.glob(f"{PREFIX}*{SUFFIX}") if p.stem[len(PREFIX):].isdigit()]
        return sorted(found, key=lambda p: int(p.stem[len(PREFIX):]), reverse=True)

    def discard(self) -> None:
        """Forget every checkpoint of the run (``--no-resume``, or the run finished)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def select(self) -> Resumable | None:
        """The newest checkpoint that verifies; corrupt ones are renamed ``*.corrupt``, saying so."""
        for stale in self.folder.glob("*.tmp*"):  # a write torn by a kill
            stale.unlink(missing_ok=True)
        for path in self.newest_first():
            try:
                check_sidecar(path)
                content = load_weights_only(path)
                state = content["callbacks"][ResumeState.__qualname__]
                self._check_vocabularies(state)
            except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is skipped, never fatal
                self._set_aside(path, describe_load_error(path, error))
                continue
            mid_epoch = bool(state["mid_epoch"])
            self.resumed = Resumable(path, int(state["epochs_done"]), mid_epoch, list(state["history"]),
                                     state.get("run_id"), exact=not mid_epoch or bool(state.get("position")),
                                     batches_done=int(state.get("batches_done", 0)))
            return self.resumed
        return None

    def for_other_ranks(self) -> RunCheckpoints:
        """Select the checkpoint every rank of a data-parallel run resumes from (now, in rank 0, before the
        ranks start), and the picklable view of these checkpoints that ranks 1…N−1 get."""
        if not self.preselected:
            self.select()
            self.preselected = True
        return RunCheckpoints(self.folder, self.every_minutes, dict(self.vocab_hashes), _quiet, self.run_id,
                              self.resumed, preselected=True, follower=True)

    def _check_vocabularies(self, state: dict[str, Any]) -> None:
        saved = state.get("vocab_hashes", {})
        if saved != self.vocab_hashes:
            raise ValueError(f"its vocabularies {saved} differ from the data's {self.vocab_hashes}")

    def _set_aside(self, path: Path, reason: str) -> None:
        self.say(f"    checkpoint {path.name} is unusable ({reason}); falling back to the one before")
        for name in (path, Path(f"{path}.sha256")):
            if name.exists():
                os.replace(name, f"{name}.corrupt")

    def prune(self, best: Path | None) -> None:
        """Keep the :data:`KEEP_NEWEST` newest checkpoints and the best one; delete the rest (rank 0 only)."""
        if self.follower:
            return
        for path in self.newest_first()[KEEP_NEWEST:]:
            if path != best:
                path.unlink(missing_ok=True)
                Path(f"{path}.sha256").unlink(missing_ok=True)


def _quiet(message: str) -> None:
    """A child rank's ``say``: rank 0 alone speaks."""


class ResumeState(pl.callbacks.Checkpoint):
    """Writes a checkpoint after every training epoch (and every ``every_minutes`` within one).

    Its own state in the checkpoint is what Lightning does not save: the Python, NumPy and torch
    (CPU and CUDA) RNG states of every rank, the training loader's shuffling generator (the data
    order), the per-epoch history, the module's best-epoch weights, its partial training-loss sums
    and a stream's carried hidden state. The loader's position inside the epoch (permutation and
    batches trained) Lightning saves from the loader itself (:mod:`harness.training.positions`).

    Data-parallel: every rank calls ``trainer.save_checkpoint`` at the same step; the RNG states are
    gathered from all ranks (a collective, so every rank has reached the step), Lightning writes the
    file on rank 0 alone and then waits for all ranks at a barrier.
    """

    def __init__(self, checkpoints: RunCheckpoints, data_order: torch.Generator | None) -> None:
        self.checkpoints, self.data_order = checkpoints, data_order
        self.loader: Any = None  # the training loader, when it records its position
        self.history: list[dict[str, float]] = []
        self._mid_epoch = False
        self._last_save = time.monotonic()
        self._best: tuple[float, Path] | None = None
        self.resumed: Resumable | None = None

    @property
    def state_key(self) -> str:
        return ResumeState.__qualname__

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        metrics = getattr(module, "current_epoch_metrics", dict)()
        self.history.append(dict(metrics))
        if self.loader is not None:
            self.loader.batches_done = 0  # the next epoch starts from its beginning
        path = self._save(trainer, mid_epoch=False)
        loss = metrics.get("val_loss")
        if loss is not None and (self._best is None or loss < self._best[0]):
            self._best = (float(loss), path)
        self.checkpoints.prune(self._best[1] if self._best else None)

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_index: int) -> None:
        every = self.checkpoints.every_minutes
        if every is None:
            return
        due = time.monotonic() - self._last_save >= every * 60
        if current_shard().world > 1:  # one decision for all ranks: saving is collective
            due = all_sum([float(due)])[0] > 0
        if due and batch_index + 1 < trainer.num_training_batches:  # the last batch: the epoch's own follows
            if self.loader is not None:
                self.loader.batches_done = batch_index + 1
            self._save(trainer, mid_epoch=True)
            self.checkpoints.prune(self._best[1] if self._best else None)

    def _save(self, trainer: pl.Trainer, *, mid_epoch: bool) -> Path:
        self._mid_epoch = mid_epoch
        path = self.checkpoints.folder / f"{PREFIX}{trainer.global_step:010d}{SUFFIX}"
        self.checkpoints.folder.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(path)
        self._last_save = time.monotonic()
        return path

    def state_dict(self) -> dict[str, Any]:
        return {
            "epochs_done": len(self.history),  # completed epochs, also mid-epoch
            "mid_epoch": self._mid_epoch,
            # The loader's position is in Lightning's part of the checkpoint: resuming there is exact.
            "position": self.loader is not None,
            "batches_done": self.loader.batches_done if self.loader is not None and self._mid_epoch else 0,
            "history": self.history,
            "vocab_hashes": self.checkpoints.vocab_hashes,
            "run_id": self.checkpoints.run_id,
            "rng_by_rank": capture_all_ranks(),
            "data_order": self.data_order.get_state() if self.data_order is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        restore_own(state)
        if self.data_order is not None and state["data_order"] is not None:
            self.data_order.set_state(state["data_order"])

    def on_save_checkpoint(self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        # The family module's own state: early stopping's best weights, tokens seen, a stream's carried state.
        # Mid-epoch also the epoch's training-loss sums so far (Lightning skips on_train_epoch_start on resume).
        checkpoint["harness_module"] = {"best": getattr(module, "_best", None),
                                        "train_tokens": getattr(module, "train_tokens", 0),
                                        "carried": getattr(module, "_carried", None),
                                        "train_sums": getattr(module, "_sums", {}).get("train")
                                        if self._mid_epoch else None}

    def on_load_checkpoint(self, trainer: pl.Trainer, module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("harness_module", {})
        for name, attribute in (("best", "_best"), ("train_tokens", "train_tokens"), ("carried", "_carried")):
            if saved.get(name) is not None and hasattr(module, attribute):
                setattr(module, attribute, saved[name])
        if saved.get("train_sums") is not None and hasattr(module, "_sums"):
            module._sums["train"] = list(saved["train_sums"])
        # Lightning hands the loader its position only when it restarts inside an epoch; the sampler's
        # epoch (a DistributedSampler's permutation) is needed after an end-of-epoch checkpoint too.
        positions = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader")
        if self.loader is not None and positions:
            self.loader.load_state_dict(positions[0])


def resume_checkpoint_path(checkpoints: RunCheckpoints | None, callback: ResumeState | None) -> Path | None:
    """The checkpoint ``trainer.fit`` should resume from (None: a fresh start), announced in the log."""
    if checkpoints is None or callback is None:
        return None
    found = checkpoints.resumed if checkpoints.preselected else checkpoints.select()
    if checkpoints.follower:
        callback.resumed = found
        return found.path if found is not None else None
    if found is None:
        if any(checkpoints.folder.glob("*.corrupt")):
            checkpoints.say("    no usable checkpoint left: starting from scratch")
        return None
    callback.resumed = found
    where = "end-of-epoch"
    if found.mid_epoch:
        where = (f"mid-epoch after batch {found.batches_done}, exact" if found.exact
                 else "mid-epoch, approximate: the epoch's data restarts")
    checkpoints.say(f"    resumed from epoch {found.epochs_done} checkpoint ({where}, {found.path.name})")
    if checkpoints.on_resume is not None:
        checkpoints.on_resume(found)
    return found.path


class CheckpointPlan:
    """How one ``_train`` call checkpoints: its callback, and the checkpoint ``fit`` resumes from."""

    def __init__(self, checkpoints: RunCheckpoints | None) -> None:
        self.checkpoints = checkpoints
        self.callback = ResumeState(checkpoints, None) if checkpoints is not None else None
        self.resumed_epochs = 0

    def start(self, train_loader: Any, history: list[dict[str, float]]) -> Path | None:
        """Bind the loader's shuffling generator; pick the checkpoint to resume from, if any."""
        if self.callback is None:
            return None
        self.callback.data_order = getattr(train_loader, "generator", None)
        self.callback.loader = loader_position(train_loader)
        path = resume_checkpoint_path(self.checkpoints, self.callback)
        if self.callback.resumed is not None:
            self.resumed_epochs = self.callback.resumed.epochs_done
            history[:0] = self.callback.resumed.history  # the reporter's history covers the whole run
        return path


def with_checkpoints(checkpoints: RunCheckpoints | None, callbacks: list[pl.Callback],
                     trainer_options: dict[str, Any]) -> CheckpointPlan:
    """Add the checkpoint callback to ``callbacks`` and its Trainer options to ``trainer_options``."""
    plan = CheckpointPlan(checkpoints)
    trainer_options["enable_checkpointing"] = plan.callback is not None
    if plan.callback is not None:
        callbacks.append(plan.callback)
        trainer_options["plugins"] = [*trainer_options.get("plugins", []), AtomicCheckpointIO()]
    return plan


def run_checkpoints(output_dir: Path, key: str, run_id: str, data: Any, *, every_minutes: float | None,
                    fresh: bool, say: Callable[[str], None],
                    on_resume: Callable[[Resumable], None] | None = None) -> RunCheckpoints:
    """The checkpoints of run ``key``; ``fresh`` (``--no-resume``) deletes the ones left by earlier attempts."""
    hashes = {name: vocab.hash for name in ("input_vocab", "output_vocab")
              if (vocab := getattr(data, name, None)) is not None}
    checkpoints = RunCheckpoints(output_dir / "checkpoints" / key, every_minutes, hashes, say, run_id,
                                 on_resume=on_resume)
    if fresh:
        checkpoints.discard()
    return checkpoints


def discard_checkpoints(output_dir: Path, key: str) -> None:
    """Delete run ``key``'s checkpoints (it finished: its model.pt artifact holds the weights)."""
    shutil.rmtree(output_dir / "checkpoints" / key, ignore_errors=True)


def record_resume(tracker: Any, run_id: str, resumed: Resumable) -> None:
    """Tag the new MLflow run (attempt) with where it resumed from, and copy the earlier epochs' metrics."""
    tracker.set_tags(run_id, {"resumed_from_epoch": resumed.epochs_done, "resumed_from_run": resumed.run_id or "",
                              "resume": "exact" if resumed.exact else "approximate"})
    for epoch, metrics in enumerate(resumed.history):
        tracker.log_metrics(run_id, metrics, step=epoch)


def free_bytes(folder: Path) -> int:
    """Free space of the file system that holds ``folder`` (or its nearest existing parent)."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return shutil.disk_usage(folder).free


__all__ = ["AtomicCheckpointIO", "CheckpointPlan", "discard_checkpoints", "ResumeState", "RunCheckpoints", "Resumable", "free_bytes",
           "record_resume", "resume_checkpoint_path", "run_checkpoints", "sha256_of", "with_checkpoints"]
