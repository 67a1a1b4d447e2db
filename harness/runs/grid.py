"""The grid of an experiment: one :class:`RunSpec` per cell × task × seed, keyed by the hash of its
resolved config, built with no side effects; and the :class:`GridSummary` a grid ends with."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

import harness
from harness.experiment import LoadedExperiment, ResolvedChoice, content_hash, resolve
from harness.core.errors import ConfigError
from harness.runs.run_states import FAILED
from harness.core.loading import LoadedPlugins
from harness.training.trainer import plan_network


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
    #: ``{"cell": …, "task": …}``: each one's :meth:`PluginInfo.provenance`. Not in the config, so
    #: not in the key: reinstalling a plugin must not turn a finished grid into a new one.
    provenance: dict[str, dict[str, str]]

    @property
    def run_name(self) -> str:
        return f"{self.cell.label}-{self.task.label}-s{self.seed}"

    def plugin_tags(self) -> dict[str, str]:
        """The tags naming the code a run used; every path that opens a run's MLflow run sets them."""
        return {"plugin_versions": json.dumps(self.config["plugin_versions"], sort_keys=True),
                "plugin_provenance": json.dumps(self.provenance, sort_keys=True)}


@dataclass
class GridSummary:
    finished: int = 0  # by this process
    failed: int = 0  # by this process
    skipped: int = 0  # already finished when this process started
    interrupted_by: int | None = None
    #: Why the grid stopped early (a full disk fails every next run too), or None.
    stopped: str | None = None
    #: Status → count over the whole grid at the end (all workers).
    grid: dict[str, int] | None = None

    @property
    def exit_code(self) -> int:
        if self.interrupted_by is not None:
            return 128 + self.interrupted_by
        return 1 if self.failed or self.stopped or (self.grid or {}).get(FAILED) else 0

    def describe_grid(self) -> str:
        """``14 DONE, 2 FAILED`` over the whole grid (every worker's runs)."""
        return ", ".join(f"{count} {status}" for status, count in sorted((self.grid or {}).items()))


def expand_grid(loaded: LoadedExperiment, plugins: LoadedPlugins) -> list[RunSpec]:
    """Validate plugin options and family constraints, and build every RunSpec (no side effects)."""
    experiment = loaded.experiment
    cells, tasks = resolve(loaded, plugins)
    if experiment.device == "gpu" and experiment.executor == "local" and not torch.cuda.is_available():
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
    cell_plugin, task_plugin = plugins.plugin_of_cell(cell.name), plugins.plugin_of_task(task.name)
    versions = {
        "harness": harness.__version__,
        cell_plugin.name: cell_plugin.version or "unknown",
        task_plugin.name: task_plugin.version or "unknown",
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
    provenance = {"cell": cell_plugin.provenance(), "task": task_plugin.provenance()}
    return RunSpec(content_hash(config), cell, task, seed, plan.hidden_size, plan.stack_param_count, config,
                   provenance)
