"""T9/T16 and issue #18 points 3-4: bad numbers, non-UTF-8 files and damaged or hostile model files
each end in one line and exit 2, and create nothing (no output folder, no file a pickle would write).

``harness`` runs in process through click (the real command, without a process start per case);
the model files are a real finished run's, tampered with on disk.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

EXPERIMENT: dict[str, Any] = {
    "cells": ["vanilla"],
    "tasks": [{"name": "copy", "options": {"train_size": 32, "validation_size": 16, "test_size": 16,
                                           "delay": 2, "copy_length": 2}}],
    "seeds": [0],
    "model": {"hidden_size": 4, "embedding_size": 4},
    "training": {"max_epochs": 1, "batch_size": 16},
    "device": "cpu",
    "output_dir": "out",
    "reports_dir": "reports",
}


def invoke(*args: str) -> Any:
    from click.testing import CliRunner

    from harness.cli.main import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _one_line_exit_2(result: Any) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(("where", "value", "expected"), [
    (("training", "max_epochs"), 1e29, "training.max_epochs"),
    (("seeds",), [0, 1e23], "seeds[1]"),
    (("seeds",), [2**32], "seeds[0]"),
    (("seeds",), [-1], "seeds[0]"),
    (("model", "embedding_size"), 1e12, "model.embedding_size"),
    (("model", "hidden_size"), 10**9, "model.hidden_size"),
    (("training", "batch_size"), 10**9, "training.batch_size"),
])
def test_an_out_of_bounds_number_exits_2_naming_the_line_and_creates_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: tuple[str, ...], value: Any, expected: str) -> None:
    monkeypatch.chdir(tmp_path)
    data = yaml.safe_load(yaml.safe_dump(EXPERIMENT))
    target = data
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    line = _one_line_exit_2(invoke("run", "exp.yaml"))
    assert line.startswith("Error: exp.yaml:") and expected in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]  # no out/, mlflow.db, ledger.db


def test_a_non_utf8_experiment_file_reports_its_line_and_column(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    text = yaml.safe_dump(EXPERIMENT, sort_keys=False).encode()
    (tmp_path / "exp.yaml").write_bytes(text.replace(b"vanilla", b"vanill\xe9", 1))
    line_number = text[: text.index(b"vanilla")].count(b"\n") + 1
    column = text.index(b"vanilla") - text.rfind(b"\n", 0, text.index(b"vanilla")) + len("vanill")
    line = _one_line_exit_2(invoke("run", "exp.yaml"))
    assert line.startswith(f"Error: exp.yaml:{line_number}:{column}: not UTF-8 (byte 0xe9)"), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The artifact folder of a real one-epoch run (model.pt, its sidecar, network.json, config.json)."""
    directory = tmp_path_factory.mktemp("finished")
    old = Path.cwd()
    os.chdir(directory)
    try:
        (directory / "exp.yaml").write_text(yaml.safe_dump(EXPERIMENT, sort_keys=False))
        result = invoke("run", "--quiet", "exp.yaml")
        assert result.exit_code == 0, result.output
    finally:
        os.chdir(old)
    return next((directory / "out" / "artifacts").rglob("model.pt")).parent


class _Malicious:
    """Unpickling it would run ``touch <sentinel>`` (os.system, i.e. posix.system)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> Any:
        return os.system, (f"touch {self.sentinel}",)


def _tampered(finished: Path, tmp_path: Path, case: str) -> Path:
    folder = tmp_path / "run"
    shutil.copytree(finished, folder)
    model, sidecar = folder / "model.pt", folder / "model.pt.sha256"

    def reseal() -> None:  # a sidecar that matches the tampered file: only the loader can refuse it
        import hashlib

        sidecar.write_text(hashlib.sha256(model.read_bytes()).hexdigest() + "\n")

    if case == "sha256_mismatch":
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
    elif case == "truncated":
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
        reseal()
    elif case == "empty":
        model.write_bytes(b"")
        reseal()
    elif case == "not_a_zip":
        model.write_text("this is not a torch file\n")
        reseal()
    elif case == "malicious":
        torch.save({"weight": _Malicious(tmp_path / "sentinel")}, model)
        reseal()
    elif case == "network_mismatch":
        network = folder / "network.json"
        network.write_text(network.read_text().replace('"hidden_size": 4', '"hidden_size": 5'))
    elif case == "network_not_json":
        (folder / "network.json").write_text("{not json")
    return folder


CASES = {
    "sha256_mismatch": "does not match the recorded",
    "truncated": "not a torch zip archive",
    "empty": "the file is empty",
    "not_a_zip": "not a torch zip archive",
    "malicious": "it contains code (posix.system)",
    "network_mismatch": "network.json: does not match the weights in model.pt",
    "network_not_json": "network.json: not valid JSON",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_damaged_model_file_is_refused_by_evaluate_in_one_line(finished_run: Path, tmp_path: Path,
                                                                  case: str) -> None:
    folder = _tampered(finished_run, tmp_path, case)
    line = _one_line_exit_2(invoke("evaluate", str(folder)))
    assert CASES[case] in line, line
    if case == "malicious":
        assert line.startswith(f"Error: refusing to load {folder / 'model.pt'}: it contains code (posix.system)")
    assert not (tmp_path / "sentinel").exists()


@pytest.mark.parametrize("command", [["sample"], ["score", "a b"], ["translate", "a b"]])
def test_every_command_that_reads_a_model_refuses_a_malicious_pickle(finished_run: Path, tmp_path: Path,
                                                                      command: list[str]) -> None:
    folder = _tampered(finished_run, tmp_path, "malicious")
    line = _one_line_exit_2(invoke(command[0], str(folder), *command[1:]))
    assert "it contains code (posix.system)" in line, line
    assert not (tmp_path / "sentinel").exists()


def test_on_a_torch_before_2_10_evaluate_warns_then_refuses(finished_run: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """CVE-2026-24747: the warning comes first, once; with the installed torch the tests above see none."""
    from harness.core.torch_advisory import unsafe_torch_load_warning, warn_if_torch_load_is_unsafe

    folder = _tampered(finished_run, tmp_path, "malicious")
    monkeypatch.setattr(torch, "__version__", "2.9.1")
    warn_if_torch_load_is_unsafe.cache_clear()  # as in a new process
    try:
        result = invoke("evaluate", str(folder))
    finally:
        warn_if_torch_load_is_unsafe.cache_clear()
    assert result.exit_code == 2, result.output
    warning, error = result.stderr.strip().splitlines()
    assert warning == unsafe_torch_load_warning("2.9.1")
    assert error.startswith(f"Error: refusing to load {folder / 'model.pt'}: it contains code"), error
    assert not (tmp_path / "sentinel").exists()
