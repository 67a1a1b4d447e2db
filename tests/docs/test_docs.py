"""The documentation site: generated pages match the code, the strict build passes, and the
examples the pages show run (experiment files validate, plugin examples register and pass)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from harness.core.cells import RecurrentCell
from harness.conformance import CellContract
from harness.experiment import load_experiment
from harness.core.loading import LoadedPlugins, load_plugins
from harness.core.registry import Registry
from harness.runs.grid import expand_grid
from harness.core.tasks import Task

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def generator() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "tools" / "docs_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)


def as_module(name: str, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)  # noqa: S102 - our own docs' example
    return module


@pytest.mark.parametrize("page", sorted(generator().PAGES))
def test_the_generated_reference_page_matches_the_code(page: str) -> None:
    committed = (DOCS / "reference" / page).read_text(encoding="utf-8")
    assert committed == generator().PAGES[page](), (
        f"docs/reference/{page} is out of date: run `python tools/docs_reference.py` and commit it")


def test_the_site_builds_with_strict_checks(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING" not in result.stderr, result.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "hooks" / "index.html").exists()


def experiment_blocks() -> list[tuple[str, str]]:
    found = [(f"{page.relative_to(DOCS)}#{index}", block)
             for page in sorted(DOCS.rglob("*.md"))
             for index, block in enumerate(code_blocks(page, "yaml"))
             if re.search(r"^cells:", block, re.M)]
    assert found, "no experiment file in the docs"
    return found


@pytest.mark.parametrize("where, block", experiment_blocks(), ids=[w for w, _ in experiment_blocks()])
def test_every_experiment_file_in_the_docs_validates(where: str, block: str, tmp_path: Path) -> None:
    path = tmp_path / "shown.yaml"
    path.write_text(block, encoding="utf-8")
    assert expand_grid(load_experiment(path), plugins_shown_with(where)), where


def plugins_shown_with(where: str) -> LoadedPlugins:
    """The installed plugins, plus the task guide's example task for the task guide's files."""
    if not where.startswith("writing-a-task.md"):
        return load_plugins()
    example = ROOT / "examples" / "task_plugin" / "harness_parity.py"
    return load_plugins(extra_plugins=[("parity", as_module("harness_parity", example.read_text(encoding="utf-8")))])


def guide_plugin() -> types.ModuleType:
    (source,) = [b for b in code_blocks(DOCS / "writing-a-cell-plugin.md", "python") if "class MGUCell" in b]
    return as_module("harness_mgu", source)


def test_the_cell_guides_plugin_registers_its_cell() -> None:
    module = guide_plugin()
    loaded = load_plugins(allow=["mgu"], extra_plugins=[("mgu", module)])
    assert loaded.cells.get("mgu") is module.MGUCell and not loaded.broken


class TestTheCellGuidesMGU(CellContract):
    """The guide's cell passes the same contract the built-ins pass."""

    cell_name = "mgu"

    @pytest.fixture
    def cell_registry(self) -> Registry[type]:
        registry: Registry[type] = Registry("cell", RecurrentCell)
        registry.add(guide_plugin().MGUCell, plugin="guide")
        return registry


@pytest.mark.parametrize("hook", ["register_cells", "register_tasks"])
def test_each_hook_references_example_registers_what_it_defines(hook: str) -> None:
    page = DOCS / "reference" / "hooks.md"
    (source,) = [b for b in code_blocks(page, "python") if f"def {hook}(register)" in b]
    module = as_module(f"example_{hook}", source)
    loaded = load_plugins(allow=["example"], extra_plugins=[("example", module)])
    registry = loaded.cells if hook == "register_cells" else loaded.tasks
    (info,) = loaded.plugins
    assert not info.broken and info.hooks == [hook]
    names = info.cells if hook == "register_cells" else info.tasks
    assert len(names) == 1 and issubclass(registry.get(names[0]), RecurrentCell if hook == "register_cells" else Task)


def python_blocks() -> list[tuple[str, str]]:
    blocks = []
    for page in sorted(DOCS.rglob("*.md")):
        for index, block in enumerate(code_blocks(page, "python")):
            blocks.append((f"{page.relative_to(DOCS)}#{index}", block))
    return blocks


@pytest.mark.parametrize(("where", "block"), python_blocks(), ids=[w for w, _ in python_blocks()])
def test_every_python_example_in_the_docs_runs(where: str, block: str) -> None:
    """Each block runs as a module: imports resolve, classes and hooks define, declarations validate.
    Signature blocks are stubs (``...`` bodies); annotations stay unevaluated, as in a .pyi file."""
    import __future__

    module = types.ModuleType("docs_example_" + re.sub(r"\W", "_", where))
    code = compile(block, where, "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True)
    exec(code, module.__dict__)  # noqa: S102 - our own docs' example
