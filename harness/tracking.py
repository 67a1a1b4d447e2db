"""MLflow tracking: where runs are stored and what each one records.

Layout (the report reads only this):

* one MLflow experiment per experiment file, named after it;
* one MLflow run per grid run attempt, named ``<cell>-<task>-s<seed>``;
* tags ``harness.<name>`` (see :data:`TAGS`): run key, cell (display label), cell
  name, task, family, seed, execution path, parameter count, hidden size, plugin
  versions (JSON), git commit, device, primary metric and its direction, the final
  status and the failure reason;
* params: the resolved config flattened to dotted keys, plus ``config_hash``;
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
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TAG_PREFIX = "harness."
TAGS = (
    "run_key", "cell", "cell_name", "task", "family", "seed", "execution_path", "param_count", "hidden_size",
    "plugin_versions", "git_commit", "device", "primary_metric", "higher_is_better", "status", "failure_reason",
    "experiment_file", "memory_measure",
)


def default_tracking_uri(output_dir: Path) -> str:
    return f"sqlite:///{(output_dir / 'mlflow.db').resolve()}"


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


class Tracker:
    """A thin layer over ``MlflowClient`` that owns the layout above."""

    def __init__(self, tracking_uri: str, experiment_name: str, artifact_root: Path | None = None) -> None:
        _quiet_mlflow()
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is None:
            location = artifact_root.resolve().as_uri() if artifact_root is not None else None
            self.experiment_id = self.client.create_experiment(experiment_name, artifact_location=location)
        else:
            self.experiment_id = experiment.experiment_id

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
        """Close a run as FINISHED, FAILED or KILLED, recording why in tags."""
        tags = {"status": status}
        if reason:
            tags["failure_reason"] = reason[:4000]
        self.set_tags(run_id, tags)
        self.client.set_terminated(run_id, status=status)

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


def _quiet_mlflow() -> None:
    # Alembic prints every migration step when MLflow creates a SQLite store.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("alembic", "alembic.runtime.migration", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
