"""T16: on a torch before 2.10 (CVE-2026-24747, a ``weights_only=True`` bypass) reading a model
file or checkpoint warns once per process; on the installed torch nothing is printed.

An old torch cannot be installed here, so the decision is tested on version strings, and the
warning itself by giving the real loader a ``torch.__version__`` of 2.9.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from harness.core.safe_files import load_weights_only
from harness.core.torch_advisory import unsafe_torch_load_warning, warn_if_torch_load_is_unsafe


@pytest.fixture
def new_process() -> Iterator[None]:
    """As in a fresh process: the warning has not been printed yet (and is forgotten afterwards)."""
    warn_if_torch_load_is_unsafe.cache_clear()
    yield
    warn_if_torch_load_is_unsafe.cache_clear()


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    torch.save({"weight": torch.ones(2, 2)}, path)
    return path


@pytest.mark.parametrize("version", ["2.9.1", "2.9.1+cpu", "2.6.0", "1.13.1", "2.10.0a0+git2f1b0e9", "2.10.0rc3",
                                     "not-a-version"])
def test_a_torch_before_2_10_gets_one_line_naming_the_cve_and_the_upgrade(version: str) -> None:
    line = unsafe_torch_load_warning(version)
    assert line is not None and "\n" not in line
    assert line.startswith(f"Warning: torch {version} has CVE-2026-24747")
    assert "weights_only=True" in line and "upgrade torch to 2.10.0 or later" in line


@pytest.mark.parametrize("version", ["2.10.0", "2.10.0+cpu", "2.10.1+cu128", "2.13.0", "2.13.0+cpu", "3.0.0"])
def test_a_torch_with_the_fix_gets_no_warning(version: str) -> None:
    assert unsafe_torch_load_warning(version) is None


def test_the_installed_torch_reads_a_model_file_without_a_warning(
        new_process: None, weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert unsafe_torch_load_warning(str(torch.__version__)) is None, torch.__version__
    assert torch.equal(load_weights_only(weights)["weight"], torch.ones(2, 2))
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "")


def test_an_old_torch_warns_once_per_process_when_a_file_is_read(
        new_process: None, weights: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "__version__", "2.9.1+cpu")
    assert capsys.readouterr().err == ""  # nothing until a file is read
    load_weights_only(weights)
    load_weights_only(weights)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [unsafe_torch_load_warning("2.9.1+cpu")]
