"""Fixtures for plugin tests: real third-party distributions, installed with the real pip.

Each fixture distribution is a temporary directory holding a five-line ``pyproject.toml``
with a ``[project.entry-points.harness]`` table (all the packaging a third party needs)
and one module copied from ``fixtures/``. ``pip install --no-deps --no-build-isolation
--no-index --target`` puts them into a private ``site`` directory (never the project's
virtual environment; setuptools from that environment builds them), and ``harness`` runs
as a subprocess with ``PYTHONPATH=<site>`` so ``importlib.metadata`` finds their entry
points exactly as it would after a user's ``pip install``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from forked_harness import HarnessProcess, harness_script

FIXTURES = Path(__file__).parent / "fixtures"

#: The five built-in cells, each registered by a built-in plugin of the same name.
BUILTIN_CELLS = ("gru", "gru_simple", "lstm", "peephole_lstm", "vanilla")
#: Every built-in plugin (cells and tasks): the entry points of this distribution.
BUILTIN_PLUGINS = frozenset(
    ep.name
    for ep in metadata.entry_points(group="harness")
    if ep.dist and ep.dist.name.replace("_", "-").lower() == "rnn-harness"
)

#: Every HARNESS_* switch, cleared so the caller's environment cannot change a test's outcome.
HARNESS_ENV = (
    "HARNESS_PLUGINS",
    "HARNESS_DISABLE_PLUGIN_AUTOLOAD",
    "HARNESS_STRICT_PLUGINS",
    "HARNESS_TRACE_PLUGINS",
)

#: A third party's whole pyproject.toml: no [build-system], so pip builds it with setuptools.
_PYPROJECT = """\
[project]
name = "{distribution}"
version = "{version}"
[project.entry-points.harness]
{entry_point} = "{module}"
"""


@dataclass(frozen=True)
class Distribution:
    """One fixture distribution: ``entry_point = "module"`` with the module's source in fixtures/."""

    name: str
    version: str
    entry_point: str
    fixture: str  # file name in fixtures/, installed as module ``module``
    module: str

    def write(self, root: Path, extra_files: Mapping[str, str] | None = None) -> Path:
        """Write the package directory under ``root`` (plus ``extra_files``) and return it."""
        package = root / self.name
        package.mkdir(parents=True)
        (package / "pyproject.toml").write_text(
            _PYPROJECT.format(
                distribution=self.name, version=self.version, entry_point=self.entry_point, module=self.module
            )
        )
        (package / f"{self.module}.py").write_text((FIXTURES / self.fixture).read_text())
        for relative, text in (extra_files or {}).items():
            (package / relative).parent.mkdir(parents=True, exist_ok=True)
            (package / relative).write_text(text)
        return package


def _fixture(entry_point: str, version: str = "1.0.0", *, fixture: str | None = None) -> Distribution:
    stem = fixture or entry_point
    return Distribution(
        name=f"harness-fx-{stem.replace('_', '-')}",
        version=version,
        entry_point=entry_point,
        fixture=f"{stem}.py",
        module=f"harness_fx_{stem}",
    )


HEALTHY = _fixture("gain_rnn", "1.4.2")
SENTINEL = _fixture("sentinel", "0.0.1")
#: Entry-point name → the distribution that breaks in that way. Keys are plugin names.
BROKEN = {
    "broken_import": _fixture("broken_import", "0.1.0"),
    "bad_argument": _fixture("bad_argument", "0.2.0"),
    "raises_in_hook": _fixture("raises_in_hook", "0.3.0"),
    "duplicate_cell": _fixture("duplicate_cell", "0.4.0"),
    "misspelt_hook": _fixture("misspelt_hook", "0.5.0"),
    "not_a_cell": _fixture("not_a_cell", "0.6.0"),
}
#: A third-party entry point named like a built-in plugin.
IMPOSTOR = _fixture("vanilla", "6.6.6", fixture="impostor")
THIRD_PARTY = (HEALTHY, SENTINEL, *BROKEN.values(), IMPOSTOR)


def pip_install(target: Path, packages: Sequence[Path]) -> None:
    """Install package directories into ``target`` with the real pip, offline, in one call."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.fail("setuptools is needed to build the fixture distributions: add setuptools>=68 to the test extra")
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
        "--no-index", "--no-compile", "--disable-pip-version-check", "--target", str(target),
        *(str(p) for p in packages),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"pip failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"


def subprocess_env(site: Path | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The current environment without any HARNESS_* variable, with ``site`` as PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_") and k != "PYTHONPATH"}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    env.update(extra or {})
    return env


def harness_command() -> list[str]:
    """The installed ``harness`` console script next to this interpreter."""
    return [harness_script()]


@dataclass
class Finished:
    """A finished subprocess (``harness ...`` or ``pytest ...``)."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> list[dict[str, Any]]:
        assert self.returncode == 0, self.explain()
        return json.loads(self.stdout)

    def plugins(self) -> dict[str, dict[str, Any]]:
        """``harness plugins --json`` keyed by plugin name (first entry wins, as in the host)."""
        keyed: dict[str, dict[str, Any]] = {}
        for plugin in self.json():
            keyed.setdefault(plugin["name"], plugin)
        return keyed

    def summary(self) -> str:
        """The last line of output: pytest's ``N passed, M failed`` line."""
        return self.stdout.strip().splitlines()[-1] if self.stdout.strip() else ""

    def explain(self) -> str:
        return f"{' '.join(self.args)} exited {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


class Started:
    """A running subprocess; ``result()`` waits for it. Start several, then wait: 2 cores, ~2 s each."""

    def __init__(self, command: Sequence[str], env: Mapping[str, str], cwd: Path | None) -> None:
        self.args = [Path(command[0]).name, *command[1:]]
        options: dict[str, Any] = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(env), cwd=cwd)
        self._process = HarnessProcess(command[1:], **options) if command[0] == harness_script() else \
            subprocess.Popen(list(command), **options)
        self._result: Finished | None = None

    def result(self) -> Finished:
        if self._result is None:
            try:
                stdout, stderr = self._process.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                self._process.kill()
                stdout, stderr = self._process.communicate()
            self._result = Finished(self.args, self._process.returncode, stdout, stderr)
        return self._result


def start_harness(
    site: Path | None, *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Started:
    """Start ``harness ARGS`` with ``site`` on PYTHONPATH and a clean HARNESS_* environment."""
    return Started([*harness_command(), *args], subprocess_env(site, env), cwd)


@pytest.fixture(scope="session")
def third_party_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site directory with every fixture distribution of test_cli_plugins/test_loading installed."""
    root = tmp_path_factory.mktemp("third_party")
    pip_install(root / "site", [dist.write(root / "src") for dist in THIRD_PARTY])
    return root / "site"


@pytest.fixture(autouse=True)
def _clean_harness_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process tests: no HARNESS_* switch leaks in from the caller's shell."""
    for name in HARNESS_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def third_party_on_path(third_party_site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Put the fixture distributions on sys.path in-process; forget their modules afterwards."""
    monkeypatch.syspath_prepend(str(third_party_site))
    yield third_party_site
    for name in [m for m in sys.modules if m.startswith("harness_fx_")]:
        del sys.modules[name]


@pytest.fixture(scope="session")
def builtin_plugins() -> frozenset[str]:
    """Names of every built-in plugin (the entry points of rnn-harness)."""
    assert set(BUILTIN_CELLS) <= BUILTIN_PLUGINS
    return BUILTIN_PLUGINS


@pytest.fixture(scope="session")
def run_harness() -> Callable[..., Finished]:
    """``run_harness(site, *args, env=..., cwd=...)``: run the ``harness`` CLI as a subprocess."""
    return lambda *args, **kwargs: start_harness(*args, **kwargs).result()


@pytest.fixture(scope="session")
def plugin_kit() -> types.SimpleNamespace:
    """Helpers for tests that build and run their own distributions."""
    return types.SimpleNamespace(
        Distribution=Distribution,
        pip_install=pip_install,
        subprocess_env=subprocess_env,
        start_harness=start_harness,
        start=Started,  # Started(command, env, cwd): any other subprocess
    )
