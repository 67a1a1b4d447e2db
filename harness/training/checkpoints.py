"""A trained network saved with its run, and loaded back to sample from it.

At the end of a finished run the runner stores, as artifacts of its MLflow run:
``model.pt`` (the network's ``state_dict``; loaded with ``weights_only=True``, never
unpickled as code), ``model.pt.sha256`` (its digest, checked before loading), and
``network.json`` (the sizes needed to rebuild the network), next to ``config.json``
and the vocabularies.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import torch
from torch import nn

from harness.experiment import ModelSettings
from harness.core.errors import BadInputError
from harness.core.file_hash import sha256_of
from harness.core.safe_files import check_sidecar, load_weights_only
from harness.core.tasks import Task, TaskData
from harness.training.trainer import NetworkPlan, build_network
from harness.core.vocab import Vocabulary

MODEL_FILE = "model.pt"
NETWORK_FILE = "network.json"


def save_network(tracker: Any, run_id: str, net: nn.Module, plan: NetworkPlan, data: TaskData) -> str:
    """Store the weights and what is needed to rebuild them; returns the weights' sha256."""
    with tempfile.TemporaryDirectory() as folder:
        folder_path = Path(folder)
        weights = folder_path / MODEL_FILE
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, weights)
        digest = sha256_of(weights)
        (folder_path / f"{MODEL_FILE}.sha256").write_text(digest + "\n")
        (folder_path / NETWORK_FILE).write_text(json.dumps({
            "hidden_size": plan.hidden_size, "stack_input_size": plan.input_size,
            "stack_param_count": plan.stack_param_count, "input_size": data.input_size,
        }, indent=2))
        for name in (MODEL_FILE, f"{MODEL_FILE}.sha256", NETWORK_FILE):
            tracker.client.log_artifact(run_id, str(folder_path / name))
    return digest


@dataclass
class TrainedRun:
    """A network rebuilt from a run's artifacts, with its task and vocabularies."""

    config: dict[str, Any]
    task: Task
    data: TaskData  # vocabularies and sizes only; the splits are empty
    net: nn.Module


def run_directory(reference: str, tracking_uri: str | None = None) -> Path:
    """The artifact folder of a run: a path (or file:// URI) to it, or an MLflow run id."""
    parsed = urlparse(reference)
    path = Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(reference)
    if path.is_dir():
        return path
    uris = [tracking_uri] if tracking_uri else [f"sqlite:///{db.resolve()}" for db in Path("runs").glob("*/mlflow.db")]
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    for uri in uris:
        try:
            artifact_uri = MlflowClient(uri).get_run(reference).info.artifact_uri
        except MlflowException:
            continue
        return Path(unquote(urlparse(artifact_uri).path))
    raise BadInputError(
        f"no run {reference!r}: give the run's artifact folder (the `path` column of results.csv) "
        "or an MLflow run id with --tracking-uri"
    )


def load_trained_run(folder: Path, plugins: Any) -> TrainedRun:
    """Rebuild the network of a finished run from its artifact folder, refusing tampered weights."""
    required = ("config.json", NETWORK_FILE, MODEL_FILE, f"{MODEL_FILE}.sha256")
    missing = [name for name in required if not (folder / name).exists()]
    if missing:
        raise BadInputError(f"{folder}: not a finished run's artifact folder (missing {', '.join(missing)})")
    config = _read_json(folder / "config.json")
    network = _read_json(folder / NETWORK_FILE)
    check_sidecar(folder / MODEL_FILE)
    weights = load_weights_only(folder / MODEL_FILE)  # before building anything: a refused file runs nothing
    cell_class = plugins.cells.get(config["cell"]["name"])
    task_class = plugins.tasks.get(config["task"]["name"])
    task = task_class(task_class.Config(**config["task"]["options"]))
    data = TaskData([], [], [], input_vocab=_vocab(folder, "input_vocab"), input_size=network["input_size"],
                    output_vocab=_vocab(folder, "output_vocab"))
    try:
        plan = NetworkPlan(int(network["hidden_size"]), int(network["stack_input_size"]),
                           int(network["stack_param_count"]))
        model = ModelSettings(**config["model"])
        net = build_network(cell_class, cell_class.Config(**config["cell"]["options"]), task, data, model, plan)
        net.load_state_dict(weights)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BadInputError(f"{folder / NETWORK_FILE}: does not match the weights in {MODEL_FILE} "
                            f"({type(error).__name__}: {first[:300]})") from None
    net.eval()
    return TrainedRun(config, task, data, net)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInputError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise BadInputError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value


def _vocab(folder: Path, name: str) -> Vocabulary | None:
    path = folder / f"{name}.json"
    return Vocabulary.from_json(path.read_text()) if path.exists() else None

