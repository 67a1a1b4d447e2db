"""The exception hierarchy: every error a user can cause derives from HarnessError.

Messages say what failed, where (file, line, key, plugin) and how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HarnessError(Exception):
    """Root of every error the harness raises on purpose."""

    #: Process exit code the CLI uses when this error ends a command.
    exit_code = 1


class BadInputError(HarnessError):
    """The user's input (a file, an option, a name) is wrong; exit code 2."""

    exit_code = 2


class ConfigError(BadInputError):
    """A configuration value is invalid."""


class UnknownNameError(BadInputError):
    """A cell or task name that no loaded plugin registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str], where: str = "", broken: str = "") -> None:
        known = sorted(known)
        self.kind, self.name, self.known = kind, name, known
        message = f"{where}unknown {kind} {name!r}."
        if broken:  # installed, but its plugin failed to load: say why instead of guessing a spelling
            message += f" {broken}."
        close = difflib.get_close_matches(name, known, n=1)
        if close and not broken:
            message += f" Did you mean {close[0]!r}?"
        message += f" Installed {kind}s: {', '.join(known) if known else '(none)'}."
        super().__init__(message)


class PluginError(HarnessError):
    """A plugin failed to import, validate or run its hooks."""

    exit_code = 3


class DuplicateNameError(PluginError):
    """Two plugins registered a cell or task under the same name."""

    def __init__(self, kind: str, name: str, first_plugin: str, second_plugin: str) -> None:
        self.kind, self.name = kind, name
        self.first_plugin, self.second_plugin = first_plugin, second_plugin
        super().__init__(
            f"{kind} {name!r} is registered by both plugin {first_plugin!r} and plugin "
            f"{second_plugin!r}; the one from {first_plugin!r} is kept. Rename one of them, or "
            f"leave one plugin out with HARNESS_PLUGINS."
        )
