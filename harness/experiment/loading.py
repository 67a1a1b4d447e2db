"""Experiment files: YAML validated against a typed schema before anything starts.

Every error names the file, the line and the key path (``cells[1].options.reset``)
and says how to fix it; unknown cell and task names get a did-you-mean. Validation
has two stages: the schema (no plugins needed), then each cell's and task's own
options against the plugin's Config class (:func:`resolve`).

The line numbers are our own on purpose: pydantic reports key paths but not where they
are in the file, and PyYAML's composed nodes (``yaml.compose``) are the only place that
still knows each key's line, so :func:`_line_numbers` maps one to the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from harness.core.errors import ConfigError
from harness.experiment.schema import Experiment


@dataclass(frozen=True)
class LoadedExperiment:
    """A validated experiment file and where it came from."""

    experiment: Experiment
    path: Path
    lines: dict[tuple[Any, ...], int]
    overrides: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.experiment.name or self.path.stem

    @property
    def output_dir(self) -> Path:
        return Path(self.experiment.output_dir or f"runs/{self.name}")

    @property
    def report_dir(self) -> Path:
        return Path(self.experiment.reports_dir) / self.name

    def where(self, *key_path: Any) -> str:
        """``file:line: key.path: `` for messages, using the closest key that has a line."""
        path = tuple(key_path)
        for override in reversed(self.overrides):
            # A value that came from --set has no line in the file: blame the --set, not a parent's line.
            key = tuple(_split_key(override.partition("=")[0]))
            if path[: len(key)] == key:
                return f"{self.path}: --set {override}: {format_key_path(path)}: "
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.lines:
                return f"{self.path}:{self.lines[path[:cut]]}: {format_key_path(path)}: "
        return f"{self.path}: {format_key_path(path)}: "


def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> LoadedExperiment:
    """Read, override (``key.path=value``) and validate an experiment file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment file") from None
    except UnicodeDecodeError as error:
        raise ConfigError(_where_not_utf8(path, error)) from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the experiment file: {error}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f"{mark.line + 1}" if mark else "?"
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}:{line}: YAML syntax error: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: an experiment file must be a mapping with cells, tasks and seeds")
    lines = _line_numbers(root) if root is not None else {}
    for override in overrides:
        _apply_override(data, override, path)
        key = tuple(_split_key(override.partition("=")[0]))
        lines = {k: v for k, v in lines.items() if k[: len(key)] != key}
    try:
        experiment = Experiment.model_validate(data)
    except ValidationError as error:
        loaded = LoadedExperiment(Experiment.model_construct(), path, lines, tuple(overrides))
        raise ConfigError(describe_validation(error, loaded)) from None
    return LoadedExperiment(experiment, path, lines, tuple(overrides))


def _where_not_utf8(path: Path, error: UnicodeDecodeError) -> str:
    """``file:line:column`` of the first byte that is not UTF-8 (columns count bytes from 1)."""
    data = error.object
    line = data.count(b"\n", 0, error.start) + 1
    column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
    return (f"{path}:{line}:{column}: not UTF-8 (byte 0x{data[error.start]:02x}); "
            "save the experiment file as UTF-8")


def format_key_path(path: Sequence[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def describe_validation(error: ValidationError, loaded: LoadedExperiment, prefix: tuple[Any, ...] = (),
                         options: type[BaseModel] | None = None) -> str:
    """One line per problem; with ``options`` (a plugin's Config), a value out of range also gets the range."""
    messages = []
    for problem in error.errors():
        location = prefix + tuple(p for p in problem["loc"] if p not in ("function-after", "function-before"))
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            parent = location[:-1]
            message = f"unknown key {location[-1]!r}"
            known = _known_keys(loaded, parent)
            if known:
                message += f"; valid keys here: {', '.join(known)}"
        elif "input" in problem and problem["type"] not in ("missing",):
            message += f" (got {problem['input']!r})"
            message += _allowed(options, problem["loc"])
        messages.append(f"{loaded.where(*location)}{message}")
    return "\n".join(messages)


def _allowed(options: type[BaseModel] | None, location: tuple[Any, ...]) -> str:
    from harness.core.plugin_options import allowed_values

    field = options.model_fields.get(location[0]) if options is not None and location else None
    allowed = allowed_values(field) if field is not None else ""
    return f"; allowed: {allowed}" if allowed else ""


def _known_keys(loaded: LoadedExperiment, parent: tuple[Any, ...]) -> list[str]:
    model: Any = Experiment
    for part in parent:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        args = getattr(annotation, "__args__", ())
        model = next((a for a in (annotation, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _line_numbers(node: yaml.Node, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*path, key_node.value)
            lines.update(_line_numbers(value_node, key))
            lines[key] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_line_numbers(item, (*path, index)))
    return lines


def _split_key(key: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in key.strip().split(".")]


def _apply_override(data: dict[str, Any], override: str, path: Path) -> None:
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. --set training.max_epochs=2")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {override!r}: the value is not valid YAML: {error}") from None
    parts = _split_key(key)
    target: Any = data
    for depth, part in enumerate(parts[:-1]):
        try:
            target = target[part]
        except (KeyError, IndexError, TypeError):
            if isinstance(target, dict) and isinstance(part, str):
                target = target.setdefault(part, {})
                continue
            raise ConfigError(
                f"--set {override!r}: {format_key_path(parts[: depth + 1])} does not exist in {path}"
            ) from None
    try:
        target[parts[-1]] = value
    except (IndexError, TypeError):
        raise ConfigError(f"--set {override!r}: cannot set {format_key_path(parts)} in {path}") from None
