"""``harness run``: expand the grid, execute each run once, record everything, report.

Nothing touches the disk or MLflow until the experiment file, every cell and task
name and every option have been validated. Claiming and skipping decisions live in
:mod:`harness.ledger`; this module only executes what the ledger hands out.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import harness
from harness.checkpoints import save_network
from harness.config import LoadedExperiment, ResolvedChoice, content_hash, resolve
from harness.errors import BadInputError, ConfigError
from harness.families import NonFiniteLossError
from harness.ledger import DONE, FAILED, KILLED, Ledger, worker_id
from harness.plugins import LoadedPlugins
from harness.tasks import Task, TaskData
from harness.tracking import Tracker, default_tracking_uri, flatten
from harness.training import build_network, plan_network, train_run

LEASE_SECONDS = 120.0
HEARTBEAT_SECONDS = 20.0


class RunInterrupted(BaseException):
    """SIGINT/SIGTERM arrived: end the current run as KILLED and stop the grid.

    A BaseException, not KeyboardInterrupt: Lightning answers KeyboardInterrupt with
    sys.exit(1), but re-raises other BaseExceptions after its own clean-up.
    """

    def __init__(self, signal_number: int) -> None:
        self.signal_number = signal_number
        super().__init__(f"interrupted by {signal.Signals(signal_number).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number


@dataclass(frozen=True)
class RunSpec:
    """One cell × task × seed with everything needed to execute it."""

    key: str
    cell: ResolvedChoice
    task: ResolvedChoice
    seed: int
    hidden_size: int
    stack_param_count: int
    config: dict[str, Any]  # the resolved config; hashed into the key and logged as params

    @property
    def run_name(self) -> str:
        return f"{self.cell.label}-{self.task.label}-s{self.seed}"


@dataclass
class GridSummary:
    finished: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted_by: int | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted_by is not None:
            return 128 + self.interrupted_by
        return 1 if self.failed else 0


def expand_grid(loaded: LoadedExperiment, plugins: LoadedPlugins) -> list[RunSpec]:
    """Validate plugin options and family constraints, and build every RunSpec (no side effects)."""
    experiment = loaded.experiment
    cells, tasks = resolve(loaded, plugins)
    if experiment.device == "gpu" and not torch.cuda.is_available():
        raise ConfigError(f"{loaded.where('device')}device is 'gpu' but no CUDA device is visible; use auto or cpu")
    specs = []
    for task_index, task in enumerate(tasks):
        family = task.plugin_class.family
        if family in ("language_model", "multilabel_sequence") and experiment.model.bidirectional:
            raise ConfigError(
                f"{loaded.where('model', 'bidirectional')}task {task.name!r} predicts the next step "
                f"({family}), so it cannot be bidirectional (it would see what it predicts); "
                "set model.bidirectional: false"
            )
        for cell in cells:
            for seed in experiment.seeds:
                specs.append(_spec(loaded, plugins, cell, task, seed))
    return specs


def _spec(loaded: LoadedExperiment, plugins: LoadedPlugins, cell: ResolvedChoice, task: ResolvedChoice,
          seed: int) -> RunSpec:
    experiment = loaded.experiment
    task_class = task.plugin_class
    input_size = getattr(task_class, "input_size", None)  # vector tasks may declare it up front
    plan = plan_network(cell.plugin_class, cell.config, task_class.family, experiment.model, input_size)
    versions = {
        "harness": harness.__version__,
        plugins.cells.entry(cell.name).plugin: plugins.plugin_of_cell(cell.name).version or "unknown",
        plugins.tasks.entry(task.name).plugin: plugins.plugin_of_task(task.name).version or "unknown",
    }
    config = {
        "cell": {"name": cell.name, "label": cell.label, "options": cell.options()},
        "task": {"name": task.name, "label": task.label, "options": task.options()},
        "seed": seed,
        "model": experiment.model.model_dump(mode="json"),
        "training": experiment.training.model_dump(mode="json"),
        "device": experiment.device,
        "plugin_versions": versions,
    }
    return RunSpec(content_hash(config), cell, task, seed, plan.hidden_size, plan.stack_param_count, config)


class Runner:
    """Executes a validated grid against its ledger and MLflow store."""

    def __init__(self, loaded: LoadedExperiment, plugins: LoadedPlugins, specs: list[RunSpec],
                 *, verbose: bool = True) -> None:
        self.loaded, self.plugins, self.specs, self.verbose = loaded, plugins, specs, verbose
        self.output_dir = loaded.output_dir
        self.worker = worker_id()
        self._task_data: dict[str, tuple[Task, TaskData]] = {}
        self._interrupt: RunInterrupted | None = None
        self._critical = 0

    # Side effects begin here: folders, ledger, MLflow. -------------------

    def open(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(f"sqlite:///{(self.output_dir / 'ledger.db').resolve()}")
        uri = self.loaded.experiment.tracking_uri or default_tracking_uri(self.output_dir)
        self.tracker = Tracker(uri, self.loaded.name, self.output_dir / "artifacts")
        self.ledger.plan(self.loaded.name, [
            {"key": s.key, "cell": s.cell.label, "task": s.task.label, "seed": s.seed, "spec": s.config}
            for s in self.specs
        ])
        reference = self.loaded.experiment.reference
        if reference is not None:  # the report reads it from MLflow, like everything else
            self.tracker.set_experiment_tag("reference", reference.model_dump_json())
        for row in self.ledger.reconcile(self.loaded.name):
            if row.mlflow_run_id:
                self._close_mlflow_run(row.mlflow_run_id, KILLED, row.reason)

    def run(self) -> GridSummary:
        summary = GridSummary()
        by_key = {s.key: s for s in self.specs}
        done_before = sum(1 for r in self.ledger.rows(self.loaded.name) if r.key in by_key and r.status == DONE)
        summary.skipped = done_before
        total = len(self.specs)
        attempted: set[str] = set()
        self._say(f"{self.loaded.name}: {total} runs, {done_before} already finished"
                  f" (ledger {self.output_dir / 'ledger.db'})")
        with self._signals():
            try:
                while self._interrupt is None:
                    with self._critical_section():
                        row = self.ledger.claim(self.loaded.name, self.worker, LEASE_SECONDS, keys=set(by_key),
                                                exclude=attempted)
                        if row is None:
                            break
                        attempted.add(row.key)
                        spec = by_key[row.key]
                        self._say(f"[{done_before + len(attempted)}/{total}] {spec.cell.label} × "
                                  f"{spec.task.label} × seed {spec.seed} (hidden {spec.hidden_size}, "
                                  f"attempt {row.attempts})")
                    status = self._execute(spec)  # handles its own interruption: ends KILLED
                    if status == DONE:
                        summary.finished += 1
                    elif status == FAILED:
                        summary.failed += 1
            except RunInterrupted:
                pass  # arrived between runs, when no run was claimed: nothing to close
        if self._interrupt is not None:
            summary.interrupted_by = self._interrupt.signal_number
        return summary

    def _execute(self, spec: RunSpec) -> str:
        """Train one claimed run; it always ends DONE, FAILED or KILLED in both ledger and MLflow."""
        run_id = None
        stop_heartbeat = self._start_heartbeat(spec.key)
        try:
            with self._critical_section():
                run_id = self.tracker.start_run(spec.run_name, self._tags(spec), {
                    **flatten(spec.config), "config_hash": spec.key})
                self.ledger.set_mlflow_run(spec.key, self.worker, run_id)
                self.tracker.log_text(run_id, json.dumps(spec.config, indent=2, sort_keys=True), "config.json")
            self._check_interrupt()
            result = self._train(spec, run_id)
            self._check_interrupt()
        except RunInterrupted as interrupted:
            self._interrupt = self._interrupt or interrupted
            return self._end(spec, run_id, KILLED, f"interrupted by {signal.Signals(interrupted.signal_number).name}")
        except NonFiniteLossError as error:
            return self._end(spec, run_id, FAILED, f"nonfinite: {error}")
        except BadInputError as error:
            return self._end(spec, run_id, FAILED, f"bad_input: {error}")
        except Exception as error:  # noqa: BLE001 - one broken run must not stop the grid
            if run_id is not None:
                self.tracker.log_text(run_id, traceback.format_exc(), "error.txt")
            return self._end(spec, run_id, FAILED, f"error: {type(error).__name__}: {error}")
        finally:
            stop_heartbeat()
        with self._critical_section():
            metrics = {**result.test_metrics, "wall_time_s": result.wall_time_s,
                       "train_tokens_per_s": result.train_tokens_per_s, "peak_memory_mb": result.peak_memory_mb,
                       "epochs": result.epochs, "model_param_count": result.model_param_count}
            self.tracker.log_metrics(run_id, metrics)
            self.tracker.set_tags(run_id, {"execution_path": result.execution_path,
                                           "memory_measure": result.memory_measure})
            if result.samples:
                self.tracker.log_text(run_id, "\n".join(" ".join(s) for s in result.samples) + "\n", "samples.txt")
            shown = ", ".join(f"{k} {v:.4g}" for k, v in result.test_metrics.items() if "/" not in k)
            self._say(f"    done in {result.wall_time_s:.1f}s: {shown}")
            return self._end(spec, run_id, DONE, "")

    def _train(self, spec: RunSpec, run_id: str) -> Any:
        task, data = self._load_task(spec.task)
        torch.manual_seed(spec.seed)
        import pytorch_lightning as pl

        pl.seed_everything(spec.seed, workers=True, verbose=False)
        experiment = self.loaded.experiment
        plan = plan_network(spec.cell.plugin_class, spec.cell.config, task.family, experiment.model,
                            data.input_size)
        net = build_network(spec.cell.plugin_class, spec.cell.config, task, data, experiment.model, plan)
        self.tracker.set_tags(run_id, {"hidden_size": plan.hidden_size, "param_count": plan.stack_param_count})
        self.tracker.log_metrics(run_id, {"stack_param_count": plan.stack_param_count})
        self._log_vocabularies(run_id, data)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            with self._critical_section():
                self.tracker.log_metrics(run_id, metrics, step=epoch)
            self._check_interrupt()

        result = train_run(net, task, data, experiment.training, seed=spec.seed, device=experiment.device,
                           hyperparameters=spec.config, on_epoch=on_epoch, verbose=self.verbose)
        with self._critical_section():
            digest = save_network(self.tracker, run_id, net, plan, data)
            self.tracker.set_tags(run_id, {"model_sha256": digest,
                                           **{f"note.{key}": value for key, value in task.notes.items()}})
        return result

    def _load_task(self, choice: ResolvedChoice) -> tuple[Task, TaskData]:
        cache_key = content_hash({"name": choice.name, "options": choice.options()})
        if cache_key not in self._task_data:
            task = choice.plugin_class(choice.config)
            data = task.load()
            data.check(choice.name)
            data.check_declared_input_size(choice.plugin_class)
            self._task_data[cache_key] = (task, data)
        return self._task_data[cache_key]

    def _log_vocabularies(self, run_id: str, data: TaskData) -> None:
        for name, vocab in (("input_vocab", data.input_vocab), ("output_vocab", data.output_vocab)):
            if vocab is not None:
                self.tracker.log_text(run_id, vocab.to_json(), f"{name}.json")
                self.tracker.set_tags(run_id, {f"{name}_hash": vocab.hash})

    def _end(self, spec: RunSpec, run_id: str | None, status: str, reason: str) -> str:
        with self._critical_section():
            if run_id is not None:
                self._close_mlflow_run(run_id, status, reason)
            self.ledger.finish(spec.key, self.worker, status, reason)
        if status != DONE:
            self._say(f"    {status}: {reason}")
        return status

    def _close_mlflow_run(self, run_id: str, status: str, reason: str) -> None:
        mlflow_status = {DONE: "FINISHED", FAILED: "FAILED", KILLED: "KILLED"}[status]
        self.tracker.end_run(run_id, mlflow_status, reason)

    def _tags(self, spec: RunSpec) -> dict[str, Any]:
        task_class = spec.task.plugin_class
        return {
            "run_key": spec.key, "cell": spec.cell.label, "cell_name": spec.cell.name, "task": spec.task.label,
            "task_name": spec.task.name, "family": task_class.family, "seed": spec.seed,
            "primary_metric": task_class.primary_metric, "higher_is_better": task_class.higher_is_better,
            "plugin_versions": json.dumps(spec.config["plugin_versions"], sort_keys=True),
            "git_commit": _git_commit(), "device": _device_name(self.loaded.experiment.device),
            "experiment_file": str(self.loaded.path), "hidden_size": spec.hidden_size,
            "param_count": spec.stack_param_count,
        }

    # Signals: SIGINT/SIGTERM interrupt training, but never a bookkeeping step. --

    @contextmanager
    def _signals(self) -> Iterator[None]:
        def handler(signum: int, frame: Any) -> None:
            interrupted = RunInterrupted(signum)
            self._interrupt = self._interrupt or interrupted
            if not self._critical:
                raise interrupted

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for number, old in previous.items():
                signal.signal(number, old)

    @contextmanager
    def _critical_section(self) -> Iterator[None]:
        """A signal arriving in here is remembered, and raised at the next _check_interrupt."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1

    def _check_interrupt(self) -> None:
        if self._interrupt is not None:
            raise self._interrupt

    def _start_heartbeat(self, key: str) -> Any:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_SECONDS):
                self.ledger.heartbeat(key, self.worker, LEASE_SECONDS)

        thread = threading.Thread(target=beat, name="ledger-heartbeat", daemon=True)
        thread.start()
        return stop.set

    def _say(self, message: str) -> None:
        if self.verbose:
            print(message, file=sys.stderr, flush=True)


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _device_name(device: str) -> str:
    if device != "cpu" and torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return "cpu"
