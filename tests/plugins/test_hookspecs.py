"""Meta-tests that keep the plugin surface honest (in the style of datasette's).

Every hookspec in harness/core/hookspecs.py has full type hints and a docstring with a
summary, ``Args:`` for each argument and a ``Returns`` line; every hook has a
``test_hook_<name>`` test; and README.md repeats each hook's exact signature.
"""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import pytest

from harness.core import hookspecs, registry
from harness.core.loading import make_plugin_manager

ROOT = Path(__file__).resolve().parents[2]


def _hookspecs() -> dict[str, typing.Any]:
    """``{hook name: spec function}`` as pluggy sees them."""
    manager = make_plugin_manager()
    callers = [getattr(manager.hook, name) for name in dir(manager.hook) if not name.startswith("_")]
    return {caller.name: caller.spec.function for caller in callers if caller.spec is not None}


HOOKSPECS = _hookspecs()
HOOK_NAMES = sorted(HOOKSPECS)


def signature_line(name: str) -> str:
    """The exact ``def`` line a hook's documentation must show, from the spec itself.

    ``def register_cells(register: CellRegister) -> None``
    """
    spec = make_plugin_manager().hook.__dict__[name].spec
    annotations = inspect.get_annotations(HOOKSPECS[name])  # strings: the module defers annotations
    arguments = ", ".join(f"{arg}: {annotations[arg]}" for arg in spec.argnames)
    return f"def {name}({arguments}) -> {annotations['return']}"


def test_the_contribution_hooks_exist() -> None:
    assert {"register_cells", "register_tasks"} <= set(HOOK_NAMES)
    # Every spec function in the module is registered as a spec, and nothing else is.
    in_module = {n for n, f in vars(hookspecs).items() if inspect.isfunction(f) and hasattr(f, "harness_spec")}
    assert in_module == set(HOOK_NAMES)


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_hookspec_has_full_type_hints(name: str) -> None:
    function = HOOKSPECS[name]
    parameters = inspect.signature(function).parameters
    annotations = inspect.get_annotations(function)
    assert set(parameters) | {"return"} == set(annotations), f"{name}: unannotated {set(parameters) - set(annotations)}"
    # The hints must resolve (names imported under TYPE_CHECKING come from harness.core.registry).
    hints = typing.get_type_hints(function, globalns={**vars(registry), **vars(hookspecs)})
    assert all(isinstance(hints[p], type) or typing.get_origin(hints[p]) for p in parameters), hints
    for parameter in parameters.values():
        assert parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and parameter.default is parameter.empty


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_hookspec_docstring_has_summary_args_and_returns(name: str) -> None:
    function = HOOKSPECS[name]
    doc = inspect.getdoc(function)
    assert doc, f"{name} has no docstring"
    lines = doc.splitlines()
    assert lines[0].strip() and lines[0].endswith(".") and (len(lines) == 1 or not lines[1].strip()), lines[0]
    assert "Args:" in lines, f"{name}: no 'Args:' section"
    args_section = lines[lines.index("Args:") + 1 :]
    documented = {m.group(1) for line in args_section if (m := re.match(r"^    (\w+):", line))}
    assert documented == set(inspect.signature(function).parameters), f"{name}: Args documents {documented}"
    assert any(line.startswith("Returns") for line in lines), f"{name}: no 'Returns' line"


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_hook_has_a_test(name: str) -> None:
    tests = "\n".join(path.read_text() for path in (ROOT / "tests").rglob("test_*.py"))
    assert re.search(rf"^def test_hook_{name}\(", tests, re.MULTILINE), f"write a test_hook_{name} test"


@pytest.mark.parametrize("name", HOOK_NAMES)
def test_every_hook_is_documented_in_the_readme_with_its_exact_signature(name: str) -> None:
    readme = ROOT / "README.md"
    expected = signature_line(name)
    assert readme.exists(), f"README.md is missing; it must document `{expected}`"
    assert expected in readme.read_text(), f"README.md does not show the signature `{expected}`"


def test_signature_line_is_built_from_the_spec() -> None:
    assert signature_line("register_cells") == "def register_cells(register: CellRegister) -> None"
