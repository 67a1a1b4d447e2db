"""What each ``harness tune`` study searches, checked before anything starts.

One study per (cell, task). Its search space is the file's ``tuning.search_space`` (or, when
the file gives none, :func:`default_search_space`) with the cell's and task's own
``search_space`` class attributes merged underneath. Every key must name a setting that
exists (``model.<field>``, ``training.<field>``, ``cell.<option>``, ``task.<option>``) and
every bound or choice must be a value that setting accepts; errors name file:line and key.
This module decides nothing about storage, budgets or training (see :mod:`harness.tuning.tune`).
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from harness.experiment import (Experiment, LoadedExperiment, ModelSettings, ResolvedChoice, SearchParam,
                            TrainingSettings, resolve)
from harness.core.errors import ConfigError, PluginError

SECTIONS = ("model", "training", "cell", "task")
#: Settings a study may not search, and why.
NOT_SEARCHABLE = {
    "training.max_epochs": "it is the per-trial epoch budget, the same for every study",
    "training.early_stopping": "it is a block, not a value; set it in training:",
    "training.cpu_threads": "it changes speed, not results",
    "model.implementation": "every execution path computes the same function",
}
#: model.hidden_size and model.parameter_budget exclude each other: searching one clears the other.
SIZE_KEYS = {"model.hidden_size": "parameter_budget", "model.parameter_budget": "hidden_size"}


def default_search_space(model: ModelSettings) -> dict[str, SearchParam]:
    """The space searched when the file gives no ``search_space``.

    The settings Greff et al. (2017) found to matter most, learning rate then size, both
    log-uniform; the size range is a quarter to four times the file's own value, so cells
    matched by ``parameter_budget`` stay matched by budget. Plus dropout and the clipping norm.
    """
    size_key = "parameter_budget" if model.parameter_budget is not None else "hidden_size"
    size = getattr(model, size_key)
    return {
        "training.learning_rate": SearchParam(type="float", low=1e-4, high=1e-1, log=True),
        f"model.{size_key}": SearchParam(type="int", low=max(1, size // 4), high=max(2, size * 4), log=True),
        "model.dropout": SearchParam(type="float", low=0.0, high=0.5),
        "training.gradient_clip_norm": SearchParam(type="float", low=0.1, high=10.0, log=True),
    }


@dataclass(frozen=True)
class StudyPlan:
    """One (cell, task) study: what it searches and what it optimises."""

    experiment: str
    cell: ResolvedChoice
    task: ResolvedChoice
    space: dict[str, SearchParam]
    #: key → where the entry came from: "file", "default" or "plugin <name>".
    sources: dict[str, str]
    #: The validation metric optimised, without ``val_``.
    metric: str
    direction: str  # "minimize" | "maximize"

    @property
    def name(self) -> str:
        """The Optuna study name: experiment/cell/task."""
        return study_name(self.experiment, self.cell.label, self.task.label)

    @property
    def monitor(self) -> str:
        return f"val_{self.metric}"


def study_name(experiment: str, cell_label: str, task_label: str) -> str:
    return f"{experiment}/{cell_label}/{task_label}"


def plan_studies(loaded: LoadedExperiment, plugins: Any) -> list[StudyPlan]:
    """Every (cell, task) study of the file, validated; no side effects. Task-major order."""
    tuning = loaded.experiment.tuning
    if tuning is None:
        raise ConfigError(f"{loaded.path}: no tuning: block; add one (trials, search_space, ...) to tune, "
                          f"or train the grid as it is with `harness run {loaded.path}`")
    cells, tasks = resolve(loaded, plugins)
    plans = []
    for task in tasks:
        metric, direction = _objective(loaded, task)
        for cell in cells:
            space, sources = _space(loaded, plugins, cell, task)
            plans.append(StudyPlan(loaded.name, cell, task, space, sources, metric, direction))
    return plans


def apply_params(loaded: LoadedExperiment, plan: StudyPlan, params: Mapping[str, Any],
                 seeds: list[int]) -> LoadedExperiment:
    """The file narrowed to the plan's cell and task and these seeds, with ``params`` set.

    The result goes through the same schema and :func:`harness.runs.grid.expand_grid` as any
    experiment file, so a trial or a re-training run is an ordinary grid run.
    """
    data = _narrowed(loaded, plan, seeds)
    for key, value in params.items():
        _set(data, key, value)
    try:
        experiment = Experiment.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{loaded.where('tuning', 'search_space')}the values {dict(params)} give an invalid "
                          f"experiment: {error.errors()[0]['msg']}") from None
    return LoadedExperiment(experiment, loaded.path, loaded.lines, loaded.overrides)


def fixed_settings(loaded: LoadedExperiment, plan: StudyPlan) -> dict[str, Any]:
    """The study's settings that no trial changes (a fingerprint: a resumed study must match them)."""
    data = _narrowed(loaded, plan, [])
    for key in plan.space:
        section, name = key.split(".", 1)
        if section in ("cell", "task"):
            data[f"{section}s"][0]["options"].pop(name, None)
        else:
            data[section].pop(name, None)
    return {key: data[key] for key in ("cells", "tasks", "model", "training", "device")}


def suggest(trial: Any, space: Mapping[str, SearchParam]) -> dict[str, Any]:
    """Ask an Optuna trial for one value per entry (a retried trial gets its stored values back)."""
    values = {}
    for key, param in space.items():
        if param.type == "categorical":
            values[key] = trial.suggest_categorical(key, list(param.choices or []))
        elif param.type == "int":
            values[key] = trial.suggest_int(key, int(param.low), int(param.high), step=int(param.step or 1),
                                            log=param.log)
        else:
            values[key] = trial.suggest_float(key, param.low, param.high, step=param.step, log=param.log)
    return values


# ---------------------------------------------------------------------------
# Building and checking one study's space.
# ---------------------------------------------------------------------------


def _space(loaded: LoadedExperiment, plugins: Any, cell: ResolvedChoice,
           task: ResolvedChoice) -> tuple[dict[str, SearchParam], dict[str, str]]:
    tuning = loaded.experiment.tuning
    assert tuning is not None
    if tuning.search_space is None:
        base, origin = default_search_space(loaded.experiment.model), "default"
    else:
        base, origin = dict(tuning.search_space), "file"
    space, sources = dict(base), dict.fromkeys(base, origin)
    if tuning.plugin_search_space:
        for section, choice, registry in (("cell", cell, plugins.cells), ("task", task, plugins.tasks)):
            plugin = registry.entry(choice.name).plugin
            for option, raw in getattr(choice.plugin_class, "search_space", {}).items():
                key = f"{section}.{option}"
                if key not in space:
                    space[key] = _plugin_entry(section, choice, plugin, option, raw)
                    sources[key] = f"plugin {plugin}"
    if not space:
        raise ConfigError(f"{loaded.where('tuning', 'search_space')}the search space is empty; "
                          "give at least one entry, e.g. training.learning_rate: {type: float, low: 1e-4, "
                          "high: 1e-1, log: true}")
    for key, param in space.items():
        where = loaded.where("tuning", "search_space", key) if sources[key] == "file" else \
            f"{loaded.where('tuning')}{sources[key]} search_space entry {key!r}: "
        _check_entry(loaded, where, key, param, cell, task)
    return space, sources


def _plugin_entry(section: str, choice: ResolvedChoice, plugin: str, option: str, raw: Any) -> SearchParam:
    try:
        return SearchParam.model_validate(raw)
    except ValidationError as error:
        raise PluginError(f"{section} {choice.name!r} (plugin {plugin!r}): search_space[{option!r}] is invalid: "
                          f"{error.errors()[0]['msg']}; fix the plugin's search_space class attribute") from None


def _check_entry(loaded: LoadedExperiment, where: str, key: str, param: SearchParam, cell: ResolvedChoice,
                 task: ResolvedChoice) -> None:
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        raise ConfigError(f"{where}a search-space key is <section>.<setting> with section one of "
                          f"{', '.join(SECTIONS)} (e.g. training.learning_rate, cell.forget_bias)")
    if key in NOT_SEARCHABLE:
        raise ConfigError(f"{where}{key} cannot be searched: {NOT_SEARCHABLE[key]}")
    if section in ("cell", "task"):
        choice = cell if section == "cell" else task
        config_class = choice.plugin_class.Config
        known = [f for f in config_class.model_fields]
        if name not in known:
            hint = ("; an entry applies to every cell of the file, and a cell whose plugin declares the option "
                    "in its own search_space is searched over it anyway") if section == "cell" else ""
            raise ConfigError(f"{where}{section} {choice.label!r} has no option {name!r}{_did_you_mean(name, known)}; "
                              f"its options: {', '.join(known) or '(none)'}{hint}")
        field = config_class.model_fields[name]
        check = lambda value: config_class(**{**choice.config.model_dump(), name: value})  # noqa: E731
    else:
        settings_class: type[BaseModel] = ModelSettings if section == "model" else TrainingSettings
        known = [f for f in settings_class.model_fields if f"{section}.{f}" not in NOT_SEARCHABLE]
        if name not in settings_class.model_fields:
            raise ConfigError(f"{where}{section} has no setting {name!r}{_did_you_mean(name, known)}; "
                              f"searchable {section} settings: {', '.join(known)}")
        field = settings_class.model_fields[name]
        check = lambda value: _validate_setting(loaded, section, name, value)  # noqa: E731
    if param.type == "float" and not _accepts_float(field.annotation):
        raise ConfigError(f"{where}{key} takes whole numbers: use type: int")
    values = list(param.choices or []) if param.type == "categorical" else [param.low, param.high]
    for value in values:
        value = int(value) if param.type == "int" else value
        try:
            check(value)
        except ValidationError as error:
            raise ConfigError(f"{where}{value!r} is not a valid {key}: {error.errors()[0]['msg']}") from None


def _validate_setting(loaded: LoadedExperiment, section: str, name: str, value: Any) -> None:
    data = loaded.experiment.model_dump(mode="json")[section]
    data[name] = value
    if f"{section}.{name}" in SIZE_KEYS:
        data[SIZE_KEYS[f"{section}.{name}"]] = None
    (ModelSettings if section == "model" else TrainingSettings).model_validate(data)


def _accepts_float(annotation: Any) -> bool:
    options = typing.get_args(annotation) or (annotation,)
    return any(option is float or option is typing.Any for option in options)


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _objective(loaded: LoadedExperiment, task: ResolvedChoice) -> tuple[str, str]:
    tuning = loaded.experiment.tuning
    assert tuning is not None
    task_class = task.plugin_class
    metric = tuning.metric or task_class.primary_metric
    if tuning.direction is not None:
        return metric, tuning.direction
    if metric == task_class.primary_metric:
        return metric, "maximize" if task_class.higher_is_better else "minimize"
    if metric == "loss":
        return metric, "minimize"
    raise ConfigError(f"{loaded.where('tuning', 'metric')}{metric!r} is not the primary metric of task "
                      f"{task.label!r} ({task_class.primary_metric}), so its direction is unknown; "
                      "add tuning.direction: minimize or maximize")


def _narrowed(loaded: LoadedExperiment, plan: StudyPlan, seeds: list[int]) -> dict[str, Any]:
    data = loaded.experiment.model_dump(mode="json", exclude={"tuning"})  # a trial searches nothing itself
    data["cells"] = [{**plan.cell.choice.model_dump(mode="json"), "label": plan.cell.label}]
    data["tasks"] = [{**plan.task.choice.model_dump(mode="json"), "label": plan.task.label}]
    data["seeds"] = list(seeds)
    return data


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    section, name = key.split(".", 1)
    if section in ("cell", "task"):
        data[f"{section}s"][0].setdefault("options", {})[name] = value
        return
    data[section][name] = value
    if key in SIZE_KEYS:
        data[section][SIZE_KEYS[key]] = None
