"""Plugin discovery and loading, isolated per plugin.

Built-in and third-party plugins both come from the ``harness`` entry-point group;
built-ins are simply the entry points of this distribution. pluggy itself gives no
isolation (one failing ``ep.load()`` or hook aborts everything), so each plugin is
imported, validated and asked for its cells and tasks on its own, and a failure is
recorded against that plugin while the rest load.

Environment switches:
    HARNESS_PLUGINS=a,b              load only the plugins named (built-ins included)
    HARNESS_DISABLE_PLUGIN_AUTOLOAD=1  load built-ins only, no third-party entry points
    HARNESS_STRICT_PLUGINS=1         any broken plugin is fatal (like --strict-plugins)
    HARNESS_TRACE_PLUGINS=1          print every hook call to stderr
"""

from __future__ import annotations

import difflib
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from harness.core import hookspecs
from harness.core.errors import PluginError
from harness.core.provenance import NO_RECORD, record_sha256
from harness.core.registry import CellRegister, Registry, TaskRegister, _Register

ENTRY_POINT_GROUP = "harness"
DISTRIBUTION = "rnn-harness"

ENV_ALLOW = "HARNESS_PLUGINS"
ENV_NO_AUTOLOAD = "HARNESS_DISABLE_PLUGIN_AUTOLOAD"
ENV_STRICT = "HARNESS_STRICT_PLUGINS"
ENV_TRACE = "HARNESS_TRACE_PLUGINS"

_TRUE = {"1", "true", "yes", "on"}


@dataclass
class PluginInfo:
    """What ``harness plugins`` shows about one plugin."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    builtin: bool
    #: "built-in", "entry point", or "in-process" (passed to load_plugins directly).
    source: str = "entry point"
    #: sha256 of the distribution's RECORD when the plugin was loaded (:mod:`harness.core.provenance`).
    record_sha256: str = NO_RECORD
    hooks: list[str] = field(default_factory=list)
    cells: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def broken(self) -> bool:
        return bool(self.errors)

    def provenance(self) -> dict[str, str]:
        """Where the plugin's code came from, as every run records it (the ``plugin_provenance`` tag)."""
        return {"plugin": self.name, "distribution": self.distribution or "none",
                "version": self.version or "unknown", "record_sha256": self.record_sha256}

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "source": "built-in" if self.builtin else self.source,
            "hooks": self.hooks,
            "cells": self.cells,
            "tasks": self.tasks,
            "broken": self.broken,
            "errors": self.errors,
        }


@dataclass
class LoadedPlugins:
    """The result of loading: the manager, both registries and a report per plugin."""

    manager: pluggy.PluginManager
    cells: Registry[type]
    tasks: Registry[type]
    plugins: list[PluginInfo]

    @property
    def broken(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.broken]

    def versions(self) -> dict[str, str]:
        """``{plugin name: version}`` of every healthy plugin, for run keys and tags."""
        return {p.name: p.version or "unknown" for p in self.plugins if not p.broken}

    def plugin_of_cell(self, name: str) -> PluginInfo:
        return self._info(self.cells.entry(name).plugin)

    def plugin_of_task(self, name: str) -> PluginInfo:
        return self._info(self.tasks.entry(name).plugin)

    def _info(self, plugin: str) -> PluginInfo:
        return next(p for p in self.plugins if p.name == plugin)


def make_plugin_manager() -> pluggy.PluginManager:
    """A fresh manager with the harness hookspecs; nothing registered yet."""
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    if _env_flag(ENV_TRACE):
        manager.trace.root.setwriter(sys.stderr.write)
        manager.enable_tracing()
    return manager


def load_plugins(
    *,
    strict: bool | None = None,
    allow: Sequence[str] | None = None,
    autoload: bool | None = None,
    extra_plugins: Iterable[tuple[str, object]] = (),
) -> LoadedPlugins:
    """Discover, import and register every plugin, each in isolation.

    Args:
        strict: raise :class:`PluginError` if any plugin is broken
            (default: ``HARNESS_STRICT_PLUGINS``).
        allow: load only plugins with these names (default: ``HARNESS_PLUGINS``).
        autoload: load third-party entry points (default: not
            ``HARNESS_DISABLE_PLUGIN_AUTOLOAD``).
        extra_plugins: ``(name, module_or_object)`` pairs registered after the
            entry points, through the same path (used by tests and embedders).
    """
    strict = _env_flag(ENV_STRICT) if strict is None else strict
    if allow is None and os.environ.get(ENV_ALLOW, "").strip():
        allow = [n.strip() for n in os.environ[ENV_ALLOW].split(",") if n.strip()]
    autoload = (not _env_flag(ENV_NO_AUTOLOAD)) if autoload is None else autoload

    from harness.core.cells import RecurrentCell  # late: cells import torch
    from harness.core.tasks import Task

    loaded = LoadedPlugins(make_plugin_manager(), Registry("cell", RecurrentCell), Registry("task", Task), [])
    for entry_point in _entry_points():
        builtin = _is_builtin(entry_point)
        if (allow is not None and entry_point.name not in allow) or (not builtin and not autoload):
            continue
        distribution = entry_point.dist
        info = PluginInfo(
            name=entry_point.name,
            module=entry_point.value,
            distribution=distribution.metadata["Name"] if distribution else None,
            version=distribution.version if distribution else None,
            builtin=builtin,
            record_sha256=record_sha256(distribution),
        )
        _add_plugin(loaded, info, entry_point.load)
    for name, plugin in extra_plugins:
        if allow is not None and name not in allow:
            continue
        module = getattr(plugin, "__name__", type(plugin).__name__)
        _add_plugin(loaded, PluginInfo(name, module, None, None, builtin=False, source="in-process"),
                    lambda p=plugin: p)

    if strict and loaded.broken:
        details = "\n".join(f"  {p.name}: {'; '.join(p.errors)}" for p in loaded.broken)
        raise PluginError(
            f"{len(loaded.broken)} plugin(s) are broken and strict plugin loading is on:\n{details}\n"
            f"Fix or uninstall them, or run without --strict-plugins / {ENV_STRICT}."
        )
    return loaded


def _add_plugin(loaded: LoadedPlugins, info: PluginInfo, load: Callable[[], object]) -> None:
    loaded.plugins.append(info)
    if loaded.manager.has_plugin(info.name) or any(p.name == info.name for p in loaded.plugins[:-1]):
        first = next(p for p in loaded.plugins[:-1] if p.name == info.name)
        info.errors.append(
            f"a plugin named {info.name!r} is already loaded (from {first.distribution or first.module}); "
            "plugin names must be unique across installed distributions."
        )
        return
    try:
        plugin = load()
    except BaseException as error:  # noqa: BLE001 - a plugin's import may raise anything
        if isinstance(error, KeyboardInterrupt):
            raise
        info.errors.append(f'Error importing plugin "{info.name}": {_describe(error)}')
        _withdraw(loaded, info)
        return
    if loaded.manager.is_registered(plugin):
        # pluggy raises a bare ValueError here, which would abort every later plugin.
        info.errors.append(
            f'Invalid plugin "{info.name}": {info.module} is already loaded as plugin '
            f"{loaded.manager.get_name(plugin)!r}; give each entry point its own module or object."
        )
        return
    try:
        loaded.manager.register(plugin, name=info.name)
        loaded.manager.check_pending()
    except pluggy.PluginValidationError as error:
        if loaded.manager.is_registered(plugin):
            loaded.manager.unregister(plugin)
        info.errors.append(f'Invalid plugin "{info.name}": {error}{_hook_hint(plugin)}')
        _withdraw(loaded, info)
        return
    info.hooks = sorted(
        caller.name for caller in loaded.manager.get_hookcallers(plugin) or () if caller.name
    )
    _call_contribution_hook(loaded, info, plugin, "register_cells", CellRegister(loaded.cells, info.name))
    _call_contribution_hook(loaded, info, plugin, "register_tasks", TaskRegister(loaded.tasks, info.name))
    if info.errors:  # all or nothing: a broken plugin's cells and tasks must not train
        loaded.manager.unregister(plugin)
        _withdraw(loaded, info)
        return
    info.cells = loaded.cells.by_plugin(info.name)
    info.tasks = loaded.tasks.by_plugin(info.name)


def _withdraw(loaded: LoadedPlugins, info: PluginInfo) -> None:
    """Take back whatever a broken plugin registered, and remember why for 'unknown cell' messages."""
    first_line = info.errors[0].splitlines()[0] if info.errors else "it failed to load"
    reason = f"plugin {info.name!r} is installed but broken ({first_line}); see `harness plugins`"
    loaded.cells.withdraw(info.name, reason)
    loaded.tasks.withdraw(info.name, reason)


def _call_contribution_hook(
    loaded: LoadedPlugins, info: PluginInfo, plugin: object, hook_name: str, register: _Register[Any]
) -> None:
    """Call one plugin's implementation of one hook, never letting it take others down."""
    caller = getattr(loaded.manager.hook, hook_name)
    # The implementation is called directly, bypassing pluggy's hook-call monitoring, so
    # trace it here for HARNESS_TRACE_PLUGINS (a no-op unless a trace writer is set).
    hooktrace = loaded.manager.trace.root.get("hook")
    for implementation in caller.get_hookimpls():
        if implementation.plugin is not plugin:
            continue
        hooktrace(hook_name, f"plugin={info.name}")
        try:
            implementation.function(register=register)
        except (Exception, SystemExit) as error:  # noqa: BLE001 - report, keep loading the rest
            info.errors.append(f"plugin {info.name!r} raised in {hook_name}: {_describe(error)}")
    info.errors.extend(register.errors)


def _entry_points() -> list[metadata.EntryPoint]:
    points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    # Built-ins first, so a third-party plugin cannot take over a built-in name.
    return sorted(points, key=lambda ep: (not _is_builtin(ep), ep.name))


def _is_builtin(entry_point: metadata.EntryPoint) -> bool:
    distribution = entry_point.dist
    return distribution is not None and _normalise(distribution.metadata["Name"]) == DISTRIBUTION


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _describe(error: BaseException) -> str:
    """``Type: message (file:line)``, the line being in the plugin's code, never importlib's."""
    if isinstance(error, SyntaxError) and error.filename:  # the traceback ends inside importlib
        return f"{type(error).__name__}: {error.msg} ({error.filename}:{error.lineno})"
    frames = [f for f in traceback.extract_tb(error.__traceback__) if not f.filename.startswith("<frozen ")]
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


def _hook_hint(plugin: object) -> str:
    """Did-you-mean for a misspelt hook name."""
    specs = [name for name in dir(hookspecs) if name.startswith("register_")]
    hints = []
    for attribute in dir(plugin):
        if attribute.startswith("register") and attribute not in specs:
            close = difflib.get_close_matches(attribute, specs, n=1)
            if close:
                hints.append(f" Did you mean {close[0]!r} instead of {attribute!r}?")
    return "".join(hints)
