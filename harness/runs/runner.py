"""``harness run``: execute each run of a grid once against its ledger, and record everything.

Nothing touches the disk or MLflow until the experiment file, every cell and task
name and every option have been validated. Claiming and skipping decisions live in
:mod:`harness.runs.ledger`; this module only executes what the ledger hands out. Any number
of Runners (``harness run`` drivers, processes, machines) may share one ledger: each claims runs
until none is left, then waits for the runs other drivers hold, taking over those whose driver died.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any


from harness.training.checkpoints import save_network
from harness.runs.disk import best_effort, check_free_space, release_reserve, reserve_space, write_failure_reason
from harness.experiment import LoadedExperiment, ResolvedChoice
from harness.core.errors import BadInputError
from harness.training.finite import NonFiniteLossError
from harness.runs.grid import GridSummary, RunSpec
from harness.runs.grid_clock import GridClock
from harness.runs.task_data import load_task
from harness.training.interrupts import Interrupts, RunInterrupted
from harness.runs.run_states import CLAIMABLE, DEFAULT_LEASE_SECONDS, DONE, FAILED, KILLED, RUNNING, LedgerRow
from harness.runs.identity import worker_id
from harness.runs.ledger import open_ledger
from harness.core.loading import LoadedPlugins
from harness.training.resume import discard_checkpoints, record_resume, run_checkpoints
from harness.training.diagnostics import RunDiagnostics
from harness.training.progress import progress_minutes
from harness.experiment.storage_url import StorageChoice, default_storage
from harness.runs.sweeps import sweep_tags
from harness.core.tasks import Task, TaskData
from harness.runs.tracking import Tracker, run_params, tracking_uri_for
from harness.training.trainer import device_name, seeded_network, train_run

#: Heartbeats per lease: a worker renews its claim every lease / 6 (20 s of the default 120 s).
HEARTBEATS_PER_LEASE = 6
#: Longest pause between looks at the ledger while other drivers hold the last runs.
MAX_POLL_SECONDS = 5.0


class LeaseLost(Exception):
    """Another worker reclaimed this run (our heartbeats stopped reaching the ledger in time)."""


class Runner:
    """Executes a validated grid against its ledger and MLflow store."""

    def __init__(self, loaded: LoadedExperiment, plugins: LoadedPlugins, specs: list[RunSpec],
                 *, verbose: bool = True, storage: StorageChoice | None = None, label: str = "",
                 lease_seconds: float = DEFAULT_LEASE_SECONDS, resume: bool = True) -> None:
        """Validate everything the run needs (storage, tracking URI); no side effects yet."""
        self.loaded, self.plugins, self.specs, self.verbose = loaded, plugins, specs, verbose
        self.label = label  # prefixes this worker's messages when several share a terminal
        self.output_dir = loaded.output_dir
        self.storage = storage or default_storage(self.output_dir)
        self.tracking_uri = tracking_uri_for(loaded.experiment.tracking_uri, self.output_dir, self.storage,
                                             loaded.where("tracking_uri"))
        self.lease_seconds = lease_seconds
        self.resume = resume  # False (--no-resume): runs ignore and delete their checkpoints
        progress_minutes()  # a bad $HARNESS_PROGRESS_MINUTES stops here (exit 2), not in every run
        self.worker = worker_id()
        self._task_data: dict[str, tuple[Task, TaskData]] = {}
        self._interrupts = Interrupts()
        self._lease_lost = False
        self._last_wait_message = ""
        self._disk_full: str | None = None  # the reason of a run that failed on a full disk

    # Side effects begin here: folders, ledger, MLflow. -------------------

    def open(self) -> None:
        # Read every task's data first: a bad file (exit 2, file:line) must stop the grid before
        # anything is created, not fail run after run. Loaded data is kept for the runs.
        for choice in {spec.task.label: spec.task for spec in self.specs}.values():
            self._load_task(choice)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        reserve_space(self.output_dir)
        self.ledger = open_ledger(self.storage)
        # A tracking server keeps artifacts itself, where every machine reaches them; a local
        # folder would be the folder of whichever machine happened to create the experiment.
        server = self.tracking_uri.startswith(("http://", "https://"))
        self.tracker = Tracker(self.tracking_uri, self.loaded.name, None if server else self.output_dir / "artifacts")
        # MLflow's SQL store logs each failed write with a traceback; the error also reaches the run,
        # which reports it in one line (disk_full: …).
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        self.ledger.plan(self.loaded.name, [
            {"key": s.key, "cell": s.cell.label, "task": s.task.label, "seed": s.seed, "spec": s.config}
            for s in self.specs
        ])
        # The runs FAILED when this driver started, with their attempts: it retries one only while they are
        # unchanged, so a run that failed during this invocation (it was PENDING, RUNNING or KILLED here), or
        # that another driver of this invocation retried already, is not retried again.
        self._failed_at_start = {r.key: r.attempts for r in self.ledger.rows(self.loaded.name) if r.status == FAILED}
        reference = self.loaded.experiment.reference
        if reference is not None:  # the report reads it from MLflow, like everything else
            self.tracker.set_experiment_tag("reference", reference.model_dump_json())
        self._reconcile()

    def run(self, *, wait: bool = True) -> GridSummary:
        """Claim and execute runs until none is left, then (``wait``) until other drivers' runs end.

        FAILED runs are taken too, once per invocation: a run this driver attempted is not claimed again, and a
        FAILED run only if it was FAILED at this driver's start, with the same attempts (see :meth:`_claim`).
        While waiting, runs whose driver died (lease expired) are reclaimed and executed here.
        """
        summary = GridSummary()
        by_key = {s.key: s for s in self.specs}
        done_before = sum(1 for r in self._grid_rows(by_key) if r.status == DONE)
        summary.skipped = done_before
        total = len(self.specs)
        attempted: set[str] = set()
        clock = GridClock()
        self._say(f"{self.loaded.name}: {total} runs, {done_before} already finished"
                  f" (ledger {self.storage.describe()})")
        with self._interrupts.installed():
            try:
                while self._interrupts.pending is None:
                    with self._interrupts.critical():
                        row = self._claim(by_key, attempted)
                        if row is not None:
                            attempted.add(row.key)
                            spec = by_key[row.key]
                            position = done_before + len(attempted)
                            self._say(f"[{position}/{total}] {spec.cell.label} × "
                                      f"{spec.task.label} × seed {spec.seed} (hidden {spec.hidden_size}, "
                                      f"attempt {row.attempts}); {clock.describe(total - position + 1)}")
                    if row is None:
                        if not wait or not self._wait_for_others(by_key):
                            break
                        continue
                    clock.start_run()
                    status = self._execute(spec)  # handles its own interruption: ends KILLED
                    clock.end_run()
                    if status == DONE:
                        summary.finished += 1
                    elif status == FAILED:
                        summary.failed += 1
                    if self._disk_full:
                        summary.stopped = self._disk_full
                        break
            except RunInterrupted:
                pass  # arrived between runs, when no run was claimed: nothing to close
            except Exception as error:  # noqa: BLE001 - only a failed write (the ledger's) is expected here
                summary.stopped = write_failure_reason(error, self.output_dir)
                if summary.stopped is None:
                    raise
        if summary.stopped:
            self._say(f"stopping the grid: {summary.stopped} (the next run would fail the same way); "
                      "free space and run the command again to finish the missing runs")
        return self._closing_summary(summary, by_key)

    def _claim(self, by_key: dict[str, RunSpec], attempted: set[str]) -> LedgerRow | None:
        """The next run for this driver. A FAILED run is claimed by compare-and-set on the attempts it had when
        this driver started: drivers started together retry it once in all, not once each."""
        return self.ledger.claim(self.loaded.name, self.worker, self.lease_seconds, keys=set(by_key),
                                 exclude=attempted, statuses=CLAIMABLE, failed_attempts=self._failed_at_start)

    def _closing_summary(self, summary: GridSummary, by_key: dict[str, RunSpec]) -> GridSummary:
        """The summary with the signal that interrupted the grid, if any, and the ledger's counts by state."""
        if self._interrupts.pending is not None:
            summary.interrupted_by = self._interrupts.pending.signal_number
        summary.grid = {}
        for row in self._grid_rows(by_key):
            summary.grid[row.status] = summary.grid.get(row.status, 0) + 1
        return summary

    def _grid_rows(self, by_key: dict[str, RunSpec]) -> list[LedgerRow]:
        return [r for r in self.ledger.rows(self.loaded.name) if r.key in by_key]

    def _wait_for_others(self, by_key: dict[str, RunSpec]) -> bool:
        """Nothing to claim: if other drivers hold runs, pause, reclaim dead ones, and say so (True)."""
        held = [r for r in self._grid_rows(by_key) if r.status == RUNNING]
        if not held:
            return False
        message = (f"waiting for {len(held)} run(s) held by other drivers: "
                   + ", ".join(f"{r.cell} × {r.task} × seed {r.seed} ({r.owner})" for r in held[:4])
                   + (" …" if len(held) > 4 else ""))
        if message != self._last_wait_message:  # once per change, not once per look
            self._say(message)
            self._last_wait_message = message
        time.sleep(min(MAX_POLL_SECONDS, self.lease_seconds / 4))  # a signal here ends the loop
        with self._interrupts.critical():
            self._reconcile()
        return True

    def _reconcile(self) -> None:
        """Runs whose worker died become KILLED (claimable again); close their MLflow runs too."""
        for row in self.ledger.reconcile(self.loaded.name):
            self._say(f"reclaimed {row.cell} × {row.task} × seed {row.seed}: {row.reason}")
            if row.mlflow_run_id:
                self.tracker.set_tags(row.mlflow_run_id, {"reconciled": 1})
                self._close_mlflow_run(row.mlflow_run_id, KILLED, row.reason)

    def _execute(self, spec: RunSpec) -> str:
        """Train one claimed run; it always ends DONE, FAILED or KILLED in both ledger and MLflow."""
        run_id = None
        self._lease_lost = False
        stop_heartbeat = self._start_heartbeat(spec.key)
        try:
            with self._interrupts.critical():
                run_id = self.tracker.start_run(spec.run_name, self._tags(spec), run_params(spec.config, spec.key))
                self.ledger.set_mlflow_run(spec.key, self.worker, run_id)
                self.tracker.log_text(run_id, json.dumps(spec.config, indent=2, sort_keys=True), "config.json")
            self._check_interrupt()
            result = self._train(spec, run_id)
            self._check_interrupt()
        except RunInterrupted as interrupted:
            self._interrupts.pending = self._interrupts.pending or interrupted
            return self._end(spec, run_id, KILLED, f"interrupted by {signal.Signals(interrupted.signal_number).name}")
        except LeaseLost as error:  # the ledger row is another worker's now: only MLflow is ours to close
            return self._end(spec, run_id, KILLED, f"lease lost: {error}")
        except NonFiniteLossError as error:
            return self._end(spec, run_id, FAILED, f"nonfinite: {error}")
        except BadInputError as error:
            return self._end(spec, run_id, FAILED, f"bad_input: {error}")
        except Exception as error:  # noqa: BLE001 - one broken run must not stop the grid
            return self._fail(spec, run_id, error)
        finally:
            stop_heartbeat()
        try:
            return self._record_success(spec, run_id, result)
        except Exception as error:  # noqa: BLE001 - e.g. MLflow's store on a full disk
            return self._fail(spec, run_id, error)

    def _fail(self, spec: RunSpec, run_id: str | None, error: Exception) -> str:
        """A run that raised ends FAILED with its reason; a full disk also stops the grid."""
        reason = write_failure_reason(error, self.output_dir)
        if reason is None:
            reason = f"error: {type(error).__name__}: {error}"
            if run_id is not None:
                best_effort(lambda: self.tracker.log_text(run_id, traceback.format_exc(), "error.txt"),
                            "save error.txt", self._say)
        elif reason.startswith("disk_full"):
            self._disk_full = reason
            release_reserve(self.output_dir)  # room to record FAILED in MLflow and the ledger
        return self._end(spec, run_id, FAILED, reason)

    def _record_success(self, spec: RunSpec, run_id: str, result: Any) -> str:
        with self._interrupts.critical():
            self._log_result(spec, run_id, result)
            shown = ", ".join(f"{k} {v:.4g}" for k, v in result.test_metrics.items() if "/" not in k)
            self._say(f"    done in {result.wall_time_s:.1f}s: {shown}")
            status = self._end(spec, run_id, DONE, "")
        discard_checkpoints(self.output_dir, spec.key)  # the run's model.pt artifact replaces them
        return status

    def _log_result(self, spec: RunSpec, run_id: str, result: Any) -> None:
        """A finished run's test metrics, costs, execution path and samples."""
        metrics = {**result.test_metrics, "wall_time_s": result.wall_time_s,
                   "train_tokens_per_s": result.train_tokens_per_s, "peak_memory_mb": result.peak_memory_mb,
                   "epochs": result.epochs, "model_param_count": result.model_param_count}
        self.tracker.log_metrics(run_id, metrics)
        self.tracker.set_tags(run_id, {"execution_path": result.execution_path,
                                       "memory_measure": result.memory_measure})
        if result.samples:
            task = self._load_task(spec.task)[0]  # its detokenize: characters join without spaces
            self.tracker.log_text(run_id, "\n".join(task.detokenize(s) for s in result.samples) + "\n",
                                  "samples.txt")

    def _log_network(self, spec: RunSpec, run_id: str, plan: Any, data: TaskData) -> None:
        """The built network's size (hidden size as a param, parameter counts) and the vocabularies."""
        self.tracker.log_resolved_hidden_size(run_id, spec.config, plan.hidden_size)
        self.tracker.set_tags(run_id, {"param_count": plan.param_count})
        self.tracker.log_metrics(run_id, {"stack_param_count": plan.stack_param_count})
        self._log_vocabularies(run_id, data)

    def _log_weights(self, run_id: str, task: Task, net: Any, plan: Any, data: TaskData) -> None:
        """``model.pt`` with its sha256, and the task's notes."""
        digest = save_network(self.tracker, run_id, net, plan, data)
        self.tracker.set_tags(run_id, {"model_sha256": digest,
                                       **{f"note.{key}": value for key, value in task.notes.items()}})

    def _train(self, spec: RunSpec, run_id: str) -> Any:
        task, data = self._load_task(spec.task)
        experiment = self.loaded.experiment
        plan, net = seeded_network(spec.cell.plugin_class, spec.cell.config, task, data, experiment.model, spec.seed)
        check_free_space(self.output_dir, net)
        self._log_network(spec, run_id, plan, data)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            with self._interrupts.critical():
                self.tracker.log_metrics(run_id, metrics, step=epoch)
                self.ledger.progress(spec.key, self.worker, epoch + 1)
            self._check_interrupt()

        # Data-parallel runs too: rank 0 writes the files, every rank resumes (harness.training.resume).
        checkpoints = run_checkpoints(
            self.output_dir, spec.key, run_id, data, every_minutes=experiment.checkpoint_minutes,
            fresh=not self.resume, say=self._say, on_resume=lambda resumed: self._record_resume(run_id, resumed))
        diagnostics = RunDiagnostics(experiment.diagnostics, task, data, experiment.training, spec.seed)
        diagnostics.probe(net, "init")
        try:
            result = train_run(net, task, data, experiment.training, seed=spec.seed, device=experiment.device,
                               hyperparameters=spec.config, on_epoch=on_epoch, verbose=self.verbose,
                               checkpoints=checkpoints, extra_callbacks=diagnostics.callbacks())
            diagnostics.probe(net, "trained")
        finally:  # also a diverged run's gradient norms, up to the step that diverged
            with self._interrupts.critical():
                diagnostics.log(self.tracker, run_id)
        with self._interrupts.critical():
            self._log_weights(run_id, task, net, plan, data)
        return result

    def _record_resume(self, run_id: str, resumed: Any) -> None:
        with self._interrupts.critical():
            record_resume(self.tracker, run_id, resumed)

    def _load_task(self, choice: ResolvedChoice) -> tuple[Task, TaskData]:
        return load_task(choice, self._task_data)

    def _log_vocabularies(self, run_id: str, data: TaskData) -> None:
        for name, vocab in (("input_vocab", data.input_vocab), ("output_vocab", data.output_vocab)):
            if vocab is not None:
                self.tracker.log_text(run_id, vocab.to_json(), f"{name}.json")
                self.tracker.set_tags(run_id, {f"{name}_hash": vocab.hash})

    def _end(self, spec: RunSpec, run_id: str | None, status: str, reason: str) -> str:
        """Close the run in MLflow and the ledger; each step is tried even when the other fails (a full disk)."""
        with self._interrupts.critical():
            if run_id is not None:
                best_effort(lambda: self._close_mlflow_run(run_id, status, reason), "close the MLflow run", self._say)
            if not best_effort(lambda: self.ledger.finish(spec.key, self.worker, status, reason),
                               "record the run in the ledger", self._say):
                self._disk_full = self._disk_full or f"disk_full: the ledger cannot be written ({reason})"
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
            "group_name": getattr(task_class, "group_name", "distance"),
            **spec.plugin_tags(),
            "git_commit": _git_commit(), "device": device_name(self.loaded.experiment.device),
            "experiment_file": str(self.loaded.path), "param_count": spec.stack_param_count, "worker": self.worker,
            **sweep_tags(spec.task.sweep),
        }

    # Signals: SIGINT/SIGTERM interrupt training, but never a bookkeeping step. --

    def _check_interrupt(self) -> None:
        self._interrupts.check()
        if self._lease_lost:
            raise LeaseLost(f"another worker reclaimed the run after {self.lease_seconds:g}s without a heartbeat")

    def _start_heartbeat(self, key: str) -> Any:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.lease_seconds / HEARTBEATS_PER_LEASE):
                try:
                    held = self.ledger.heartbeat(key, self.worker, self.lease_seconds)
                except Exception:  # noqa: BLE001 - e.g. a full disk: the run itself will fail on it
                    continue
                if not held:
                    self._lease_lost = True
                    return

        thread = threading.Thread(target=beat, name="ledger-heartbeat", daemon=True)
        thread.start()
        return stop.set

    def _say(self, message: str) -> None:
        if self.verbose:
            print(f"[{self.label}] {message}" if self.label else message, file=sys.stderr, flush=True)


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
