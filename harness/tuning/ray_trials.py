"""``harness tune --executor ray``: each trial trains as a Ray task; the study never leaves this process.

The driver (``harness tune``) keeps doing everything the local tuner does: it opens the
studies, counts the budget, asks, tells, reconciles dead trials and writes MLflow
(:class:`harness.tuning.trial.TrialExecutor`, whose recording code this class inherits). Only
the training moves: :meth:`RayTrialExecutor._train` submits it as a Ray task and waits.

**Pruning decisions reach the trial through a broker actor.** After each epoch the Ray task
sends its metrics to :class:`PruningBroker` (an actor of this driver, no CPU) and waits for the
answer; the driver takes the report, calls the same :meth:`PruningCallback.observe` as the local
tuner (``trial.report`` then ``trial.should_prune`` on the driver's study) and answers
"continue" or "prune". A pruned task stops training at that epoch, as locally. Workers need
no access to the Optuna storage (SQLite by default, not shareable across machines) and no
credentials: the one-writer design of :mod:`harness.runs.ray_executor`.

The task returns every epoch's metrics, the network plan, the results and how it ended (an
exception is returned, not raised, so the epochs before it still reach MLflow); the driver
replays them into the trial's MLflow run and re-raises the exception, so a trial ends exactly
as the local tuner would end it (pruned, non-finite, error, interrupted).

**Checkpoints, as a local trial's.** The task writes the trial's per-epoch checkpoints in the
same folder as a local trial (``<output_dir>/checkpoints/tuning/…``, keyed by the retry chain:
:mod:`harness.training.trial_checkpoints`), so a trial queued again after ``kill -9`` or Ctrl-C
of ``harness tune`` resumes from the newest one that verifies, bit for bit. The folder is the
driver's output folder (an absolute path): a worker on another machine resumes only if that
folder is on a file system shared with the driver, at the same path; elsewhere it finds no
checkpoint and the trial starts afresh from its first epoch (its results stay correct). The
task tells the driver through the broker that it resumed (before its first new epoch), and the
driver records it as the local tuner does: tags, restored epochs in MLflow, their values
reported once to the Optuna trial (:meth:`TrialExecutor._resumed`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytorch_lightning as pl

from harness.experiment import LoadedExperiment, content_hash
from harness.runs.executors import ray_task_options
from harness.runs.grid import RunSpec
from harness.runs.ray_executor import TASK_RETRIES, connect_ray
from harness.training.resume import Resumable
from harness.training.trainer import NetworkPlan, TrainingResult, seeded_network, train_run
from harness.training.trial_checkpoints import trial_checkpoints
from harness.tuning.trial import PruningCallback, TrialExecutor

#: How often the driver looks for epoch reports (and a pending Ctrl-C) while a trial trains.
POLL_SECONDS = 0.05
CONTINUE, PRUNE, STOP = "continue", "prune", "stop"


class TrialStopped(Exception):
    """The driver ended the trial (its objective broke, or a signal): the task stops training."""


@dataclass
class TrialRecord:
    """What a trial's Ray task hands back: everything the driver records."""

    plan: NetworkPlan
    epochs: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    result: TrainingResult | None = None
    #: How training ended when it did not complete (optuna.TrialPruned, NonFiniteLossError, …).
    error: BaseException | None = None


@dataclass
class TrialNews:
    """What the driver takes from the broker at each look: the task's messages, its resume, its epochs."""

    notes: list[str] = field(default_factory=list)
    resumed: Resumable | None = None
    reports: list[tuple[int, dict[str, float]]] = field(default_factory=list)


class PruningBroker:
    """A Ray actor: carries epoch reports from trial tasks to the driver, and its decisions back."""

    def __init__(self) -> None:
        self._news: dict[str, TrialNews] = {}
        self._decisions: dict[tuple[str, int], tuple[str, str]] = {}
        self._events: dict[tuple[str, int], asyncio.Event] = {}

    async def ask(self, key: str, epoch: int, metrics: dict[str, float]) -> tuple[str, str]:
        """Called by a task after each epoch; returns once the driver has decided."""
        if (key, epoch) not in self._decisions:  # a task Ray ran again asks again: same answer
            self._news.setdefault(key, TrialNews()).reports.append((epoch, metrics))
            event = self._events.setdefault((key, epoch), asyncio.Event())
            await event.wait()
        return self._decisions[(key, epoch)]

    async def say(self, key: str, message: str) -> None:
        """A task's message for the driver's log (the resume announcement, an unusable checkpoint)."""
        self._news.setdefault(key, TrialNews()).notes.append(message)

    async def resumed(self, key: str, resumed: Resumable) -> None:
        """A task resumed from a checkpoint; it calls this before training its first new epoch."""
        self._news.setdefault(key, TrialNews()).resumed = resumed

    async def take(self, key: str) -> TrialNews:
        """The driver: what trial ``key``'s task sent since the last look (reports not yet answered)."""
        return self._news.pop(key, TrialNews())

    async def decide(self, key: str, epoch: int, decision: str, message: str = "") -> None:
        self._decisions[(key, epoch)] = (decision, message)
        self._events.setdefault((key, epoch), asyncio.Event()).set()


class _AskDriver(pl.Callback):
    """In the Ray task: after each epoch, ask the driver whether to go on."""

    def __init__(self, broker: Any, key: str) -> None:
        self.broker, self.key = broker, key

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        import ray

        metrics = {k: float(v) for k, v in module.current_epoch_metrics().items()}  # type: ignore[operator]
        decision, message = ray.get(self.broker.ask.remote(self.key, trainer.current_epoch + 1, metrics))
        if decision == PRUNE:
            raise optuna.TrialPruned(message)
        if decision == STOP:
            raise TrialStopped(message)


def _train_trial_on_worker(spec: RunSpec, task_and_data: tuple[Any, Any], experiment: Any, broker: Any, key: str,
                           verbose: bool, output_dir: Path, checkpoint_key: str) -> TrialRecord:
    """The body of every trial task: the local trial's training and checkpoints, with the pruning question
    sent to the driver. ``key`` is the trial's MLflow run id; ``checkpoint_key`` its checkpoint folder."""
    import ray

    task, data = task_and_data
    plan, net = seeded_network(spec.cell.plugin_class, spec.cell.config, task, data, experiment.model, spec.seed)
    record = TrialRecord(plan)

    checkpoints = trial_checkpoints(
        output_dir, checkpoint_key, data, run_id=key, every_minutes=experiment.checkpoint_minutes,
        say=lambda message: ray.get(broker.say.remote(key, message)),
        # Through the broker, not in the returned record: the driver must restore the pruning history before
        # it answers the first new epoch (the call is waited for, so it arrives before that epoch's ask).
        on_resume=lambda resumed: ray.get(broker.resumed.remote(key, resumed)))
    try:
        record.result = train_run(net, task, data, experiment.training, seed=spec.seed, device=experiment.device,
                                  hyperparameters=spec.config, verbose=verbose,
                                  on_epoch=lambda epoch, metrics: record.epochs.append((epoch, dict(metrics))),
                                  extra_callbacks=[_AskDriver(broker, key)], checkpoints=checkpoints)
    except Exception as error:  # noqa: BLE001 - handed to the driver, which ends the trial as locally
        record.error = error
    return record


class RayTrialExecutor(TrialExecutor):
    """A :class:`TrialExecutor` whose trials train as Ray tasks (the file's ``resources`` each)."""

    def __init__(self, loaded: LoadedExperiment, *args: Any, ray_address: str | None = None, **kwargs: Any) -> None:
        super().__init__(loaded, *args, **kwargs)
        self.ray_address = ray_address
        self.task_options = {**ray_task_options(loaded), "max_retries": TASK_RETRIES}
        self._ray: Any = None
        self._owns_ray = False
        self._broker: Any = None
        self._remote: Any = None
        self._data_refs: dict[str, Any] = {}

    def open(self) -> None:
        from harness.runs.executors import require_ray

        self._owns_ray = not require_ray().is_initialized()
        self._ray = ray = connect_ray(self.ray_address)
        self._broker = ray.remote(num_cpus=0)(PruningBroker).remote()
        self._remote = ray.remote(_train_trial_on_worker)
        self.say(f"trials as Ray tasks of {self.task_options}")

    def close(self) -> None:
        if self._ray is not None and self._owns_ray:
            self._ray.shutdown()
        self._ray = None

    def _train(self, trial_loaded: LoadedExperiment, spec: RunSpec, run_id: str, pruning: PruningCallback,
               checkpoint_key: str) -> Any:
        """Train the trial as a Ray task, with its checkpoints in ``checkpoint_key`` (see the module docstring)."""
        ray = self._ray
        remote = self._remote.options(name=f"trial {spec.run_name}", **self.task_options)
        # Absolute: a worker's working directory is not the driver's.
        ref = remote.remote(spec, self._data_ref(spec), trial_loaded.experiment, self._broker, run_id, self.verbose,
                            self.loaded.output_dir.resolve(), checkpoint_key)
        done = resume_recorded = False
        try:
            while not done:
                with self.guard.critical():  # a signal must not land inside Ray's C code: raised below
                    done = bool(ray.wait([ref], timeout=POLL_SECONDS)[0])
                    news: TrialNews = ray.get(self._broker.take.remote(run_id))
                for note in news.notes:
                    self.say(note)
                # Once, and only before the driver has seen an epoch: a task Ray ran again (its worker died)
                # resumes from a checkpoint of epochs the driver already observed (the task asks before it
                # saves an epoch), and restoring them again would count them twice.
                if news.resumed is not None and not pruning.values and not resume_recorded:
                    self._resumed(run_id, pruning, news.resumed)
                    resume_recorded = True
                with self.guard.critical():
                    for epoch, metrics in news.reports:
                        self._answer(run_id, epoch, metrics, pruning)
                self.guard.check()
            with self.guard.critical():
                record: TrialRecord = ray.get(ref)
        finally:
            if not done:  # interrupted, or the objective broke: stop the task (running or queued)
                with self.guard.critical():
                    ray.get(self._broker.decide.remote(run_id, len(pruning.values) + 1, STOP, "stopped by the driver"))
                    ray.cancel(ref, force=True)
        with self.guard.critical():
            self.tracker.log_resolved_hidden_size(run_id, spec.config, record.plan.hidden_size)
            for epoch, metrics in record.epochs:
                self.tracker.log_metrics(run_id, metrics, step=epoch)
        if record.error is not None:
            raise record.error
        return record.result

    def _answer(self, run_id: str, epoch: int, metrics: dict[str, float], pruning: PruningCallback) -> None:
        """The local pruning callback's decision, on the driver's study, sent back to the task."""
        if epoch <= len(pruning.values):  # a task Ray ran again (its worker died) repeats its epochs
            self._broker.decide.remote(run_id, epoch, CONTINUE)
            return
        try:
            pruned = pruning.observe(epoch, metrics)
        except BaseException:
            self._broker.decide.remote(run_id, epoch, STOP, "the driver ended the trial")
            raise
        self._broker.decide.remote(run_id, epoch, PRUNE if pruned else CONTINUE, pruned or "")

    def _data_ref(self, spec: RunSpec) -> Any:
        """The task's data, put in Ray's object store once per task."""
        key = content_hash({"name": spec.task.name, "options": spec.task.options()})
        if key not in self._data_refs:
            self._data_refs[key] = self._ray.put(self._load_task(spec))
        return self._data_refs[key]
