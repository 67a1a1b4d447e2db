"""The second stage of validation, once plugins are loaded: each cell's and task's options checked
against its plugin's Config, sweeps expanded into task variants, and the content hash that keys a run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from harness.core.errors import ConfigError, UnknownNameError
from harness.experiment.loading import LoadedExperiment, describe_validation
from harness.experiment.settings import PluginChoice


@dataclass(frozen=True)
class SweepPoint:
    """Where a task variant sits in its sweep: the listed task's label, the option and this value."""

    task: str
    option: str
    value: Any
    #: The value's place in the listed sweep: 0 is the first (by convention the easiest) value.
    position: int = 0


@dataclass(frozen=True)
class ResolvedChoice:
    """A cell or task choice with its plugin class and validated Config instance."""

    choice: PluginChoice
    plugin_class: type
    config: BaseModel
    #: Set on the variants of a swept task.
    sweep: SweepPoint | None = None

    @property
    def name(self) -> str:
        return self.choice.name

    @property
    def label(self) -> str:
        return self.choice.display

    def options(self) -> dict[str, Any]:
        """All options, defaults included: what the run really used."""
        return self.config.model_dump(mode="json")


def resolve(loaded: LoadedExperiment, plugins: Any) -> tuple[list[ResolvedChoice], list[ResolvedChoice]]:
    """Look up every cell and task and validate its options against the plugin's Config.

    A swept task becomes one task per swept value (:func:`_resolve_sweep`), in the listed order.
    """
    experiment = loaded.experiment
    cells = [_resolve_choice(loaded, plugins.cells, "cells", i, c) for i, c in enumerate(experiment.cells)]
    tasks = []
    for index, task in enumerate(experiment.tasks):
        if task.sweep:
            tasks += _resolve_sweep(loaded, plugins.tasks, index, task)
        else:
            tasks.append(_resolve_choice(loaded, plugins.tasks, "tasks", index, task))
    labels = [t.label for t in tasks]
    for index, task in enumerate(experiment.tasks):
        if task.sweep and len(set(labels)) != len(labels):
            twice = sorted({x for x in labels if labels.count(x) > 1})
            raise ConfigError(f"{loaded.where('tasks', index, 'sweep')}the task variant(s) {', '.join(twice)} "
                              "are listed twice; give one of the entries a different label")
    return cells, tasks


def _resolve_sweep(loaded: LoadedExperiment, registry: Any, index: int, task: PluginChoice) -> list[ResolvedChoice]:
    """One ResolvedChoice per swept value, labelled ``label[option=value]``, each variant validated.

    A problem with the swept value names ``tasks[i].sweep.<option>[j]``; one with another option
    names ``tasks[i].options.<key>`` (a required option may be given by the sweep alone).
    """
    try:
        plugin_class = registry.get(task.name, where=loaded.where("tasks", index, "name"))
    except UnknownNameError as error:
        raise ConfigError(str(error)) from None
    ((option, values),) = task.sweep.items()
    fields = plugin_class.Config.model_fields
    if option not in fields:
        raise ConfigError(f"{loaded.where('tasks', index, 'sweep', option)}task {task.name!r} has no option "
                          f"{option!r} to sweep; its options: {', '.join(fields) or '(none)'}")
    variants = []
    for position, value in enumerate(values):
        options = {**task.options, option: value}
        try:
            config = plugin_class.Config(**options)
        except ValidationError as error:
            raise ConfigError(_describe_sweep_error(error, loaded, index, option, position, value, task.name)) from None
        label = f"{task.display}[{option}={value}]"
        choice = task.model_copy(update={"options": options, "sweep": None, "label": label})
        variants.append(ResolvedChoice(choice, plugin_class, config, sweep=SweepPoint(task.display, option, value,
                                                                                       position)))
    return variants


def _describe_sweep_error(error: ValidationError, loaded: LoadedExperiment, index: int, option: str, position: int,
                          value: Any, task: str) -> str:
    problems = error.errors()
    about_value = [p["msg"] for p in problems if not p["loc"] or p["loc"][0] == option]
    if about_value or len(problems) == 0:
        return (f"{loaded.where('tasks', index, 'sweep', option, position)}{option}={value!r} is not a valid value "
                f"for task {task!r}: {'; '.join(about_value or [str(error)])}")
    return describe_validation(error, loaded, ("tasks", index, "options"))


def _resolve_choice(loaded: LoadedExperiment, registry: Any, section: str, index: int, choice: PluginChoice) -> ResolvedChoice:
    try:
        plugin_class = registry.get(choice.name, where=loaded.where(section, index, "name"))
    except UnknownNameError as error:
        raise ConfigError(str(error)) from None
    try:
        config = plugin_class.Config(**choice.options)
    except ValidationError as error:
        plugin = registry.entry(choice.name).plugin
        message = describe_validation(error, loaded, (section, index, "options"), plugin_class.Config)
        known = ", ".join(plugin_class.Config.model_fields) or "(none)"
        raise ConfigError(f"{message} ({choice.name} is from plugin {plugin!r}; its options: {known}; "
                          f"see `harness {section} show {choice.name}`)") from None
    return ResolvedChoice(choice, plugin_class, config)


def content_hash(payload: Any) -> str:
    """A stable short hash of JSON-able content (sorted keys)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
