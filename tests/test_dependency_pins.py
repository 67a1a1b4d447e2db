"""T17: the dependency pins keep out PyPI's malicious Lightning releases and every torch below 2.6.

lightning and pytorch-lightning 2.6.2 and 2.6.3 on PyPI were malicious; the harness needs torch
2.6 or later. The project has no lock file, so what pip may resolve is what ``pyproject.toml``'s
specifiers allow: every requirement (the extras' too) is read with ``packaging`` and checked, the
check itself is shown to catch loosened pins, and the installed versions must satisfy the pins.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
MALICIOUS = {"lightning": ("2.6.2", "2.6.3"), "pytorch-lightning": ("2.6.2", "2.6.3")}
#: Every torch release line below 2.6, its pre-releases of 2.6 and local builds included.
TORCH_BELOW_2_6 = (*(f"1.{minor}.{micro}" for minor in range(14) for micro in range(4)),
                   *(f"2.{minor}.{micro}" for minor in range(6) for micro in range(10)),
                   "0.4.1", "2.5.1+cpu", "2.5.1+cu124", "2.5.99", "2.6.0a0", "2.6.0rc1")


def pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    extras = project.get("optional-dependencies", {}).values()
    return [Requirement(line) for line in [*project["dependencies"], *(r for extra in extras for r in extra)]]


def pin_problems(requirements: Iterable[Requirement]) -> list[str]:
    """Each requirement that allows a malicious Lightning release or a torch below 2.6."""
    problems = []
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        bad = MALICIOUS.get(name, TORCH_BELOW_2_6 if name == "torch" else ())
        allowed = [version for version in bad if requirement.specifier.contains(version, prereleases=True)]
        if allowed:
            problems.append(f"{requirement} allows {name} {', '.join(allowed[:3])}")
    return problems


def test_pyproject_keeps_out_malicious_lightning_and_torch_below_2_6() -> None:
    requirements = pyproject_requirements()
    names = {canonicalize_name(r.name) for r in requirements}
    assert {"torch", "pytorch-lightning"} <= names, names
    assert pin_problems(requirements) == []


@pytest.mark.parametrize("line", ["pytorch-lightning>=2.6", "pytorch-lightning", "lightning>=2.5", "lightning==2.6.3",
                                  "pytorch_lightning>=2.0,!=2.6.2", "torch>=2.5", "torch", "torch>=2.0,!=2.5.1",
                                  "torch~=2.5", "torch>=2.6.0a0", "torch>=1.13; python_version < '3.12'"])
def test_the_check_catches_a_loosened_pin(line: str) -> None:
    assert pin_problems([Requirement(line)]), line


@pytest.mark.parametrize("line", ["pytorch-lightning>=2.6.4", "lightning>=2.6.4", "torch>=2.6", "torch>=2.10",
                                  "pytorch-lightning>=2.5,!=2.6.2,!=2.6.3", "torch>=2.6,<3"])
def test_the_check_accepts_a_safe_pin(line: str) -> None:
    assert pin_problems([Requirement(line)]) == []


def test_the_installed_torch_and_lightning_satisfy_the_pins() -> None:
    checked = []
    for requirement in pyproject_requirements():
        name = canonicalize_name(requirement.name)
        if name not in ("torch", *MALICIOUS):
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # e.g. an extra's lightning that is not installed
        assert requirement.specifier.contains(installed, prereleases=True), (str(requirement), installed)
        assert installed not in MALICIOUS.get(name, ()), (name, installed)
        checked.append(name)
    assert {"torch", "pytorch-lightning"} <= set(checked), checked
