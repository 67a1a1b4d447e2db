"""A finished language-model run keeps its weights; `harness sample` rebuilds it and samples."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from forked_harness import harness_run


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return harness_run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("lm")
    (folder / "lm.yaml").write_text(
        "# A tiny bracket language model: harness run lm.yaml\n"
        "cells: [lstm]\n"
        "tasks: [{name: brackets, options: {train_size: 200, validation_size: 40, test_size: 40}}]\n"
        "seeds: [0]\n"
        "model: {hidden_size: 16, embedding_size: 8}\n"
        "training: {max_epochs: 2, batch_size: 32, learning_rate: 0.01, cpu_threads: 1}\n"
    )
    result = harness("run", "lm.yaml", "--quiet", cwd=folder)
    assert result.returncode == 0, result.stderr
    (row,) = csv.DictReader((folder / "reports" / "lm" / "results.csv").open())
    return folder, row


def test_sample_from_the_artifact_folder_and_from_the_run_id(trained) -> None:
    folder, row = trained
    by_path = harness("sample", row["path"], "--count", "4", "--length", "12", "--seed", "3", cwd=folder)
    assert by_path.returncode == 0, by_path.stderr
    lines = by_path.stdout.splitlines()
    assert len(lines) == 4
    assert all(set(line.split()) <= set("()[]") and len(line.split()) <= 12 for line in lines)
    # The run id is found in ./runs/*/mlflow.db; the same seed gives the same samples.
    by_id = harness("sample", row["run_id"], "--count", "4", "--length", "12", "--seed", "3", cwd=folder)
    assert by_id.stdout == by_path.stdout


def test_prime_is_kept_and_unknown_prime_tokens_are_refused(trained) -> None:
    folder, row = trained
    primed = harness("sample", row["path"], "--count", "2", "--prime", "( [", "--temperature", "0.5", cwd=folder)
    assert primed.returncode == 0, primed.stderr
    assert all(line.startswith("( [") for line in primed.stdout.splitlines())
    bad = harness("sample", row["path"], "--prime", "x", cwd=folder)
    assert bad.returncode == 2 and "not in the vocabulary: x" in bad.stderr


def test_tampered_weights_are_refused(trained, tmp_path) -> None:
    import shutil

    folder, row = trained
    copy = tmp_path / "artifacts"
    shutil.copytree(Path(unquote(urlparse(row["path"]).path)), copy)
    weights = copy / "model.pt"
    content = bytearray(weights.read_bytes())
    content[len(content) // 2] ^= 0xFF  # flip one byte
    weights.write_bytes(bytes(content))
    result = harness("sample", str(copy), cwd=folder)
    assert result.returncode == 2
    assert "does not match the recorded" in result.stderr


def test_unknown_run_is_bad_input(trained) -> None:
    folder, _ = trained
    result = harness("sample", "no-such-run", cwd=folder)
    assert result.returncode == 2 and "no run 'no-such-run'" in result.stderr
