"""Typed registries of cells and tasks, stamped with the plugin that supplied each entry."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar

from harness.core.errors import DuplicateNameError, PluginError, UnknownNameError

T = TypeVar("T", bound=type)

_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered item and the plugin that registered it."""

    name: str
    item: T
    plugin: str


class Registry(Generic[T]):
    """Name → class, refusing duplicates loudly and checking each entry's type."""

    def __init__(self, kind: str, base: type | None = None) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, Entry[T]] = {}
        #: Names a broken plugin would have supplied (its items, and its own name) → why it is broken.
        self._unavailable: dict[str, str] = {}

    def add(self, item: T, *, plugin: str) -> None:
        """Record ``item`` (a class with a ``name``) as supplied by ``plugin``."""
        if not isinstance(item, type):
            raise PluginError(
                f"plugin {plugin!r} registered {item!r} as a {self.kind}; register the class itself."
            )
        if self.base is not None and not issubclass(item, self.base):
            raise PluginError(
                f"plugin {plugin!r} registered {item.__qualname__} as a {self.kind}, but it does not "
                f"subclass {self.base.__module__}.{self.base.__qualname__}."
            )
        name = getattr(item, "name", None)
        if not isinstance(name, str) or not _NAME_PATTERN.match(name):
            raise PluginError(
                f"plugin {plugin!r} registered {item.__qualname__} with name {name!r}; a {self.kind} "
                "needs a class attribute `name` of lowercase letters, digits and underscores."
            )
        if name in self._entries:
            raise DuplicateNameError(self.kind, name, self._entries[name].plugin, plugin)
        self._entries[name] = Entry(name, item, plugin)

    def get(self, name: str, *, where: str = "") -> T:
        """The class registered as ``name``; an unknown name lists the installed ones."""
        try:
            return self._entries[name].item
        except KeyError:
            raise UnknownNameError(self.kind, name, self._entries, where, self._unavailable.get(name, "")) from None

    def entry(self, name: str) -> Entry[T]:
        self.get(name)
        return self._entries[name]

    def withdraw(self, plugin: str, reason: str) -> list[str]:
        """Drop every entry of a broken ``plugin``; asking for one later says why it is missing."""
        names = self.by_plugin(plugin)
        for name in names:
            del self._entries[name]
        for name in (*names, plugin):
            if name not in self._entries:
                self._unavailable.setdefault(name, reason)
        return names

    def names(self) -> list[str]:
        return list(self._entries)

    def by_plugin(self, plugin: str) -> list[str]:
        return [e.name for e in self._entries.values() if e.plugin == plugin]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)


class _Register(Generic[T]):
    """The callable a contribution hook receives: ``register(SomeClass)``."""

    def __init__(self, registry: Registry[T], plugin: str) -> None:
        self._registry = registry
        self.plugin = plugin
        self.errors: list[str] = []

    def __call__(self, item: T) -> None:
        try:
            self._registry.add(item, plugin=self.plugin)
        except PluginError as error:
            # Keep going: one bad entry must not hide the plugin's other entries.
            self.errors.append(str(error))


class CellRegister(_Register[type]):
    """Passed to ``register_cells``; call it with each RecurrentCell subclass."""


class TaskRegister(_Register[type]):
    """Passed to ``register_tasks``; call it with each Task subclass."""
