"""``harness tune``: one Optuna study per (cell, task), each driven to the same fixed budget,
then the best configuration of each re-trained over the file's seeds as ordinary grid runs.

Every study gets ``tuning.trials`` trials of at most ``training.max_epochs`` epochs: the same
search effort for every cell, the fair-comparison protocol of Greff et al. (2017) and Melis
et al. (2017). How a study reaches exactly that many trials, with several workers and dead
ones, is :mod:`harness.tuning.study`; one trial is :mod:`harness.tuning.trial`; what is
searched is :mod:`harness.tuning.space`; the report's part is :mod:`harness.tuning.report`.

**Storage** follows the experiment's ``storage`` (:mod:`harness.runs.storage`, shared with the run
ledger): SQLite by default, ``optuna.db`` in the output folder (one process; Optuna's FAQ
advises against SQLite for parallel work); a journal file for several processes on one
machine (Optuna's JournalFileBackend, beside the ledger's journal); PostgreSQL or MySQL for
workers on many machines. Trials are MLflow runs of ``<experiment>-trials``; the re-training
runs belong to the experiment itself, so its normal report shows them.

**Executor.** ``executor: ray`` trains each trial as a Ray task (:mod:`harness.tuning.ray_trials`:
the studies stay here, pruning decisions reach the task through a broker actor) and re-trains
with the grid's :class:`harness.runs.ray_executor.RayRunner`; ``local`` trains in this process.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from harness.experiment import LoadedExperiment, TuningSettings, content_hash
from harness.core.errors import ConfigError
from harness.core.tasks import Task, TaskData
from harness.training.interrupts import Interrupts
from harness.runs.run_states import DEFAULT_LEASE_SECONDS
from harness.runs.identity import worker_id
from harness.runs.grid import GridSummary, RunSpec, expand_grid
from harness.runs.runner import Runner, RunInterrupted
from harness.experiment.storage_url import StorageChoice
from harness.runs.task_data import load_task
from harness.runs.storage import experiment_storage, initialization_lock, open_journal_backend
from harness.runs.tracking import Tracker, flatten, tracking_uri_for
from harness.tuning.space import StudyPlan, apply_params, fixed_settings, plan_studies
from harness.tuning.study import StudyDriver, StudyResult, Worker, slot_holders
from harness.tuning.trial import TrialExecutor

__all__ = ["TuneSummary", "describe_storage", "open_storage", "open_study", "quiet_optuna", "slot_holders",
           "trials_experiment", "tune"]


def trials_experiment(name: str) -> str:
    """The MLflow experiment that holds an experiment's tuning trials (the grid's report never sees them)."""
    return f"{name}-trials"


# ---------------------------------------------------------------------------
# Storage: the experiment's storage choice (harness.runs.storage), as Optuna sees it.
# ---------------------------------------------------------------------------


def open_storage(choice: StorageChoice, *, create: bool = True) -> optuna.storages.BaseStorage | None:
    """Optuna's storage beside the run ledger; None when ``create`` is off and nothing is stored there yet.

    SQLite: ``optuna.db`` in the ledger database's folder (one process). Journal: the
    ledger journal's companion ``<name>.optuna.journal`` (Optuna replays its own file, so
    it cannot share the ledger's), under the same kind of fcntl lock. PostgreSQL/MySQL:
    Optuna's tables in the same database.
    """
    if choice.kind == "journal":
        path = choice.companion_file("optuna")
        if not create and not path.exists():
            return None
        from optuna.storages.journal import JournalStorage

        return JournalStorage(open_journal_backend(path))
    url = choice.url
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if choice.kind == "sqlite":
        assert choice.path is not None
        path = choice.path.with_name("optuna.db")
        if not create and not path.exists():
            return None
        url, engine_kwargs = f"sqlite:///{path}", {"connect_args": {"timeout": 60}}
    with initialization_lock(url):  # several workers starting at once would all create the tables
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)


def describe_storage(choice: StorageChoice) -> str:
    if choice.kind == "journal":
        return f"journal {choice.companion_file('optuna')}"
    if choice.kind == "sqlite":
        assert choice.path is not None
        return f"sqlite {choice.path.with_name('optuna.db')}"
    return choice.describe()




@dataclass
class TuneSummary:
    studies: list[StudyResult] = field(default_factory=list)
    retrain: GridSummary = field(default_factory=GridSummary)
    interrupted_by: int | None = None
    #: The MLflow store of the re-training runs (the report reads it).
    tracking_uri: str = ""

    @property
    def exit_code(self) -> int:
        if self.interrupted_by is not None:
            return 128 + self.interrupted_by
        no_result = any(s.best_value is None for s in self.studies)
        return 1 if no_result or self.retrain.failed else 0


class _TunedTags:
    """Mixed into a grid runner: tags saying which study and trial a re-training run's values come from."""

    tuned_tags: dict[str, Any]

    def _tags(self, spec: RunSpec) -> dict[str, Any]:
        return {**super()._tags(spec), **self.tuned_tags}  # type: ignore[misc]


class _TunedRunner(_TunedTags, Runner):
    pass


def _tuned_runner(tuned: LoadedExperiment, plugins: Any, tags: dict[str, Any], ray_address: str | None,
                  **options: Any) -> Runner:
    """The grid executor of the experiment (local or Ray), re-training one study's best values."""
    if tuned.experiment.executor == "ray":
        from harness.runs.ray_executor import RayRunner

        class _TunedRayRunner(_TunedTags, RayRunner):
            pass

        runner: Runner = _TunedRayRunner(tuned, plugins, expand_grid(tuned, plugins), ray_address=ray_address,
                                         **options)
    else:
        runner = _TunedRunner(tuned, plugins, expand_grid(tuned, plugins), **options)
    runner.tuned_tags = tags  # type: ignore[attr-defined]
    return runner


def tune(loaded: LoadedExperiment, plugins: Any, *, storage: str | None = None,
         lease_seconds: float = DEFAULT_LEASE_SECONDS, verbose: bool = True,
         ray_address: str | None = None) -> TuneSummary:
    """Search every study to its budget, then re-train each best configuration over the seeds.

    ``executor: ray`` trains each trial as a Ray task (:mod:`harness.tuning.ray_trials`) and the
    re-training runs with the grid's Ray executor; the studies stay in this process either way.

    Everything is validated before the first side effect. Returns the summary; a signal ends
    the running trial (FAIL, queued again) and returns with ``interrupted_by`` set.
    """
    plans = plan_studies(loaded, plugins)
    task_data: dict[str, tuple[Task, TaskData]] = {}
    for plan in plans:  # every trial's configuration must expand like a grid run
        for spec in expand_grid(apply_params(loaded, plan, {}, loaded.experiment.seeds[:1]), plugins):
            # A bad or empty data file stops here (exit 2, file:line), not in trial after trial.
            load_task(spec.task, task_data)
    tuning = loaded.experiment.tuning
    assert tuning is not None
    choice = experiment_storage(loaded, storage)
    uri = tracking_uri_for(loaded.experiment.tracking_uri, loaded.output_dir, choice, loaded.where("tracking_uri"))
    quiet_optuna()
    loaded.output_dir.mkdir(parents=True, exist_ok=True)
    optuna_storage = open_storage(choice)
    assert optuna_storage is not None
    trials_tracker = Tracker(uri, trials_experiment(loaded.name), loaded.output_dir / "artifacts")
    guard, summary = Interrupts(), TuneSummary(tracking_uri=uri)
    executor = _trial_executor(loaded, plugins, trials_tracker, guard, verbose, ray_address, task_data)
    worker = Worker(worker_id(), lease_seconds, guard, trials_tracker, executor.say)
    executor.say(f"{loaded.name}: {len(plans)} studies × {tuning.trials} trials × at most "
                 f"{loaded.experiment.training.max_epochs} epochs (Optuna storage {describe_storage(choice)})")
    with guard.installed():
        try:
            executor.open()
            # All studies first: one started under other settings stops the command before any training.
            studies = [open_study(loaded, plan, optuna_storage, tuning) for plan in plans]
            for plan, study in zip(plans, studies):
                result = StudyDriver(plan, study, optuna_storage, tuning, worker).drive(executor)
                summary.studies.append(result)
                executor.say(_summary_line(result))
            # Re-training: the grid runner installs its own signal handling while it trains.
            summary.retrain = _retrain(loaded, plugins, summary.studies, choice, lease_seconds, verbose,
                                       ray_address)
            summary.interrupted_by = summary.retrain.interrupted_by
        except RunInterrupted as interrupted:
            summary.interrupted_by = interrupted.signal_number
        finally:
            executor.close()
    return summary


def _trial_executor(loaded: LoadedExperiment, plugins: Any, tracker: Tracker, guard: Interrupts, verbose: bool,
                    ray_address: str | None, task_data: dict[str, tuple[Task, TaskData]]) -> TrialExecutor:
    """Trials train in this process (``executor: local``) or as Ray tasks (``executor: ray``)."""
    if loaded.experiment.executor == "ray":
        from harness.tuning.ray_trials import RayTrialExecutor

        return RayTrialExecutor(loaded, plugins, tracker, guard, verbose=verbose, ray_address=ray_address,
                                task_data=task_data)
    return TrialExecutor(loaded, plugins, tracker, guard, verbose=verbose, task_data=task_data)


def open_study(loaded: LoadedExperiment, plan: StudyPlan, storage: optuna.storages.BaseStorage,
                tuning: TuningSettings) -> optuna.Study:
    """Create or load the study; a study started under other fixed settings is refused, not mixed."""
    description = {
        "fixed": fixed_settings(loaded, plan), "seed": loaded.experiment.seeds[0],
        "space": {k: v.model_dump(mode="json") for k, v in plan.space.items()},
        "metric": plan.monitor, "direction": plan.direction,
    }
    fingerprint = content_hash(description)
    try:
        study = optuna.create_study(storage=storage, study_name=plan.name, direction=plan.direction,
                                    pruner=_pruner(tuning), load_if_exists=True)
    except optuna.exceptions.DuplicatedStudyError:  # created by another worker at the same moment
        study = optuna.load_study(study_name=plan.name, storage=storage, pruner=_pruner(tuning))
    stored = study.user_attrs.get("fingerprint")
    if stored is not None and stored != fingerprint:
        before = flatten(json.loads(study.user_attrs.get("settings") or "{}"))
        now = flatten(json.loads(json.dumps(description, sort_keys=True)))  # the same key order as stored
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        raise ConfigError(
            f"{loaded.where('tuning')}study {plan.name!r} in this storage was started with other settings "
            f"({', '.join(changed[:6]) or 'unknown'} differ), so its trials would not be comparable; restore them "
            "to resume it, or give the changed file another name or output_dir")
    attributes = {"fingerprint": fingerprint, "settings": json.dumps(description, sort_keys=True),
                  "trials": tuning.trials,
                  "max_epochs": loaded.experiment.training.max_epochs, "metric": plan.monitor,
                  "search_space": json.dumps(description["space"], sort_keys=True),
                  "sources": json.dumps(plan.sources, sort_keys=True), "seed": loaded.experiment.seeds[0],
                  "sampler": tuning.sampler.model_dump_json(), "pruner": tuning.pruner.model_dump_json(),
                  "cell": plan.cell.label, "task": plan.task.label}
    for key, value in attributes.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    study.sampler = _sampler(tuning, study)
    return study


def _sampler(tuning: TuningSettings, study: optuna.Study) -> optuna.samplers.BaseSampler:
    """Seeded so that one worker reproduces a study; offset so a resumed or parallel worker draws anew."""
    settings, seed = tuning.sampler, tuning.sampler.seed
    if seed is not None:
        trials = study.get_trials(deepcopy=False)
        seed += len(trials)
        if any(t.state == TrialState.RUNNING for t in trials):  # another worker is drawing from the same seed
            seed += os.getpid()
    if settings.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.startup_trials)


def _pruner(tuning: TuningSettings) -> optuna.pruners.BasePruner:
    pruner = tuning.pruner
    if pruner.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=pruner.startup_trials, n_warmup_steps=pruner.warmup_epochs)
    if pruner.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=pruner.min_epochs,
                                                      reduction_factor=pruner.reduction_factor)
    return optuna.pruners.NopPruner()


def _retrain(loaded: LoadedExperiment, plugins: Any, results: list[StudyResult], storage: StorageChoice,
             lease_seconds: float, verbose: bool, ray_address: str | None = None) -> GridSummary:
    """Each study's best values over the file's seeds, as grid runs of the experiment (its normal report)."""
    total = GridSummary()
    for result in results:
        plan = result.plan
        if result.best_value is None:
            if verbose:
                print(f"{plan.name}: no trial completed; nothing to re-train", file=sys.stderr, flush=True)
            continue
        tuned = apply_params(loaded, plan, result.best_params, loaded.experiment.seeds)
        tags = {"tuned": "1", "tuning_study": plan.name, "tuning_trial": result.best_number,
                "tuning_params": json.dumps(result.best_params, sort_keys=True), "tuning_value": result.best_value}
        runner = _tuned_runner(tuned, plugins, tags, ray_address, verbose=verbose, storage=storage,
                               lease_seconds=lease_seconds)
        runner.open()
        summary = runner.run()
        total.finished += summary.finished
        total.failed += summary.failed
        total.skipped += summary.skipped
        if summary.interrupted_by is not None:
            total.interrupted_by = summary.interrupted_by
            break
    return total


def _summary_line(result: StudyResult) -> str:
    counts = ", ".join(f"{state.lower()} {n}" for state, n in result.counts.items())
    best = f"; best {result.plan.monitor} {result.best_value:.4g}" if result.best_value is not None else ""
    used = sum(result.counts.values())
    return f"{result.plan.cell.label} × {result.plan.task.label}: {used}/{result.budget} trials ({counts}){best}"


def quiet_optuna() -> None:
    """Optuna logs errors only: our own lines say what happened to each trial (it would warn on every FAIL)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
