"""MLflow tracking: where runs are stored and what each one records.

Layout (the report reads only this):

* one MLflow experiment per experiment file, named after it;
* one MLflow run per grid run attempt, named ``<cell>-<task>-s<seed>``;
* tags ``harness.<name>`` (see :data:`TAGS`), one per fact: who the run is (run key, cell
  label and name, task label and name, seed, family), how it ran (execution path, parameter
  count, plugin versions and provenance as JSON, git commit, device, worker ``host:pid:id``),
  how it is judged (primary metric and its direction) and how it ended (status FINISHED, FAILED,
  KILLED or, for a pruned tuning trial, PRUNED; the failure reason; ``reconciled=1`` on an
  attempt closed as KILLED because its worker died);
* params (:func:`run_params`): the settings, i.e. the resolved config flattened to dotted keys
  without what the tags already say, with ``model.hidden_size`` the hidden size actually built
  (also when a ``parameter_budget`` chose it), plus ``config_hash``;
* metrics: per epoch (step = epoch) ``train_loss``, ``val_loss``, ``val_<metric>``;
  once (step 0) ``test_<metric>`` (grouped ones as ``test_accuracy/<group>``),
  ``wall_time_s``, ``train_tokens_per_s``, ``peak_memory_mb``, ``epochs``;
* artifacts: ``config.json``, the vocabularies, ``samples.txt`` for language models,
  ``error.txt`` for failed runs.

The default store is MLflow on SQLite inside the output folder, artifacts beside it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Iterable
from contextlib import closing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.core.errors import ConfigError
from harness.experiment.storage_url import StorageChoice

TAG_PREFIX = "harness."
TAGS = (
    "run_key", "cell", "cell_name", "task", "task_name", "family", "seed", "execution_path", "param_count",
    "plugin_versions", "plugin_provenance", "git_commit", "device", "primary_metric", "higher_is_better", "status",
    "failure_reason", "experiment_file", "memory_measure", "worker", "reconciled", "group_name",
)


#: Config keys that are tags (``harness.cell`` …), so never repeated as params.
TAGGED_CONFIG_KEYS = {"cell.name": "cell_name", "cell.label": "cell", "task.name": "task_name",
                      "task.label": "task", "seed": "seed"}
TAGGED_CONFIG_PREFIXES = ("plugin_versions.",)  # the tag harness.plugin_versions holds them all
#: The status tag of a pruned tuning trial (its MLflow run ends FINISHED: it stopped on purpose).
PRUNED = "PRUNED"


def run_params(config: dict[str, Any], key: str) -> dict[str, Any]:
    """The params of a run: its flattened config less the tagged facts, plus ``config_hash``.

    A ``model.hidden_size`` of None (a parameter budget decides it) is left out here and logged
    once known, by :meth:`Tracker.log_resolved_hidden_size`: MLflow params cannot change.
    """
    flat = {k: v for k, v in flatten(config).items()
            if k not in TAGGED_CONFIG_KEYS and not k.startswith(TAGGED_CONFIG_PREFIXES)}
    if flat.get("model.hidden_size") is None:
        flat.pop("model.hidden_size", None)
    return {**flat, "config_hash": key}


def default_tracking_uri(output_dir: Path) -> str:
    return f"sqlite:///{(output_dir / 'mlflow.db').resolve()}"


def tracking_uri_for(tracking_uri: str | None, output_dir: Path, storage: StorageChoice, where: str) -> str:
    """The MLflow store runs go to: the file's ``tracking_uri``, else SQLite in the output folder.

    With a database server as storage, workers run on several machines and each would
    write its own local SQLite store, so the report would miss runs: a shared tracking
    URI is required then.
    """
    if tracking_uri:
        return tracking_uri
    if storage.is_server:
        raise ConfigError(
            f"{where}storage is the database server {storage.describe()}, shared by drivers on several machines, "
            "but no tracking_uri is set, so each machine would record its runs in its own "
            f"{output_dir / 'mlflow.db'}. Set tracking_uri to an MLflow tracking server (http://host:5000) or a "
            "database of its own (postgresql://user@host:5432/mlflow); for one machine, "
            f"tracking_uri: sqlite:///{(output_dir / 'mlflow.db').resolve()} is fine too"
        )
    return default_tracking_uri(output_dir)


@dataclass
class RunRecord:
    """One MLflow run as the report sees it."""

    run_id: str
    status: str
    start_time: int
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    artifact_uri: str

    def tag(self, name: str, default: str = "") -> str:
        return self.tags.get(TAG_PREFIX + name, default)

    @property
    def hidden_size(self) -> str:
        """The hidden size built: the ``model.hidden_size`` param (older stores: the ``hidden_size`` tag)."""
        value = self.params.get("model.hidden_size", "")
        return value if value not in ("", "None") else self.tag("hidden_size")


class Tracker:
    """A thin layer over ``MlflowClient`` that owns the layout above."""

    def __init__(self, tracking_uri: str, experiment_name: str, artifact_root: Path | None = None) -> None:
        _quiet_mlflow()
        from mlflow.tracking import MlflowClient

        from harness.experiment.storage_url import with_default_driver
        from harness.runs.storage import database_has_row, initialization_lock, sqlite_database
        from harness.runs.store_template import seed_sqlite_store

        self.tracking_uri = tracking_uri = with_default_driver(tracking_uri)
        # Workers starting together on a new store: one creates its tables and the experiment,
        # the others wait (else "table already exists"). The experiment is the last step, so once
        # it is there, workers start side by side.
        creating = not database_has_row(tracking_uri, "experiments", name=experiment_name)
        with initialization_lock(tracking_uri) if creating else nullcontext():
            if creating and (database := sqlite_database(tracking_uri)) is not None:
                seed_sqlite_store(database)  # MLflow's migrations take seconds; a copy of their result does not
            self.client: Any = RetryingClient(MlflowClient(tracking_uri))
            self.experiment_id = self._experiment_id(experiment_name, artifact_root)
            _use_wal(tracking_uri)

    def _experiment_id(self, name: str, artifact_root: Path | None) -> str:
        """Get or create the experiment; a worker that loses the race to create it uses the winner's."""
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = artifact_root.resolve().as_uri() if artifact_root is not None else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(name).experiment_id

    def start_run(self, run_name: str, tags: dict[str, Any], params: dict[str, Any]) -> str:
        from mlflow.entities import Param, RunTag

        run = self.client.create_run(
            self.experiment_id, run_name=run_name, tags={TAG_PREFIX + k: str(v) for k, v in tags.items()}
        )
        run_id = run.info.run_id
        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=items[start : start + 100])
        self.client.log_batch(run_id, tags=[RunTag(TAG_PREFIX + "status", "RUNNING")])
        return run_id

    def log_resolved_hidden_size(self, run_id: str, config: dict[str, Any], hidden_size: int) -> None:
        """Log ``model.hidden_size`` when the config left it to a parameter budget (see :func:`run_params`)."""
        if config.get("model", {}).get("hidden_size") is None:
            self.client.log_param(run_id, "model.hidden_size", str(hidden_size))

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[start : start + 1000])

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(TAG_PREFIX + k, str(v)) for k, v in tags.items()])

    def set_experiment_tag(self, name: str, value: str) -> None:
        self.client.set_experiment_tag(self.experiment_id, TAG_PREFIX + name, value)

    def experiment_tag(self, name: str) -> str | None:
        return self.client.get_experiment(self.experiment_id).tags.get(TAG_PREFIX + name)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def end_run(self, run_id: str, status: str, reason: str = "") -> None:
        """Close a run as FINISHED, FAILED, KILLED or PRUNED, recording why in tags.

        MLflow has no pruned state: a PRUNED run ends FINISHED (it stopped on purpose, as
        Optuna's own MLflow callback records it), with ``harness.status`` PRUNED and the
        pruner's reason in ``harness.pruned_reason``.
        """
        tags = {"status": status}
        if reason:
            tags["pruned_reason" if status == PRUNED else "failure_reason"] = reason[:4000]
        self.set_tags(run_id, tags)
        self.client.set_terminated(run_id, status="FINISHED" if status == PRUNED else status)

    def runs(self) -> list[RunRecord]:
        """Every run of the experiment, oldest first."""
        records, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=1000, page_token=token,
                                           order_by=["attributes.start_time ASC"])
            records.extend(_record(run) for run in page)
            token = page.token
            if not token:
                return records

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]


def latest_per_key(records: Iterable[RunRecord]) -> list[RunRecord]:
    """The newest attempt of every run key (a killed attempt is superseded by its rerun)."""
    latest: dict[str, RunRecord] = {}
    for record in records:
        key = record.tag("run_key") or record.run_id
        if key not in latest or record.start_time >= latest[key].start_time:
            latest[key] = record
    return list(latest.values())


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"hidden_size": 8}} → {"model.hidden_size": 8}."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return flat


def _record(run: Any) -> RunRecord:
    return RunRecord(
        run_id=run.info.run_id,
        status=run.info.status,
        start_time=run.info.start_time or 0,
        tags=dict(run.data.tags),
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        artifact_uri=run.info.artifact_uri,
    )


#: How long one MLflow call may keep retrying a locked database before giving up.
LOCK_RETRY_SECONDS = 120.0
#: The back-off: the first sleep, its doubling cap, and the jitter factor's range; no retry
#: sleeps less than FIRST_RETRY_DELAY * RETRY_JITTER[0] (which bounds the count in a given time).
FIRST_RETRY_DELAY, MAX_RETRY_DELAY, RETRY_JITTER = 0.05, 2.0, (0.5, 1.5)
_TRANSIENT = ("database is locked", "database table is locked", "deadlock detected",
              "could not serialize access")


class RetryingClient:
    """An ``MlflowClient`` whose calls retry a locked database, with exponential backoff and jitter.

    SQLite admits one writer at a time, and a transaction that read before another process
    wrote fails at once with "database is locked" (the busy timeout cannot help), so workers
    sharing one ``mlflow.db`` need retries (docs/reliability.md §0.5). Each retry is counted
    in :attr:`lock_retries`; a call still failing after :data:`LOCK_RETRY_SECONDS` raises.
    A failed SQL transaction was rolled back, so running it again cannot record anything twice.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self.lock_retries = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            delay, deadline = FIRST_RETRY_DELAY, time.monotonic() + LOCK_RETRY_SECONDS
            while True:
                try:
                    return attribute(*args, **kwargs)
                except Exception as error:
                    if not _is_transient(error) or time.monotonic() > deadline:
                        raise
                self.lock_retries += 1
                time.sleep(delay * random.uniform(*RETRY_JITTER))
                delay = min(delay * 2, MAX_RETRY_DELAY)

        return call


def _is_transient(error: BaseException | None) -> bool:
    while error is not None:
        if any(text in str(error) for text in _TRANSIENT):
            return True
        error = error.__cause__ or error.__context__
    return False


class _DropRetriedLockErrors(logging.Filter):
    """MLflow logs each locked-database error with a traceback before raising it; we retry those."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in _TRANSIENT)


def _use_wal(tracking_uri: str) -> None:
    """Put a SQLite MLflow store in WAL mode (persistent): readers then never block the writer."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    import sqlite3

    with closing(sqlite3.connect(tracking_uri[len("sqlite:///"):], timeout=60)) as connection:
        if connection.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            connection.execute("PRAGMA journal_mode=WAL")


def _quiet_mlflow() -> None:
    # Alembic prints every migration step when MLflow creates a SQLite store.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("alembic", "alembic.runtime.migration", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("mlflow.store.db.utils", "mlflow.store.tracking.sqlalchemy_store"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropRetriedLockErrors) for f in logger.filters):
            logger.addFilter(_DropRetriedLockErrors())
