"""`harness evaluate RUN`: a finished run's saved network scored again, or refused when the
task's rebuilt vocabulary is not the one the network was trained with.

One `harness run` (subprocess) trains a slice of SST-2 and a tiny generated agreement task;
every test evaluates those runs. SST-2 is read from ``$HARNESS_DATA_DIR/sst2/``; without it the tests skip saying how to
get it (fail with HARNESS_REQUIRE_DATA=1 or CI set; tests/real_data.py).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from forked_harness import harness_run
from real_data import real_data_root

from harness.cli.main import cli

SENTIMENT = {"max_examples": 200, "vocab_size": 800}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, str]]]:
    real_data_root("sst2")
    folder = tmp_path_factory.mktemp("evaluate")
    (folder / "small.yaml").write_text(
        "# A slice of SST-2 and a tiny agreement task, one epoch: harness run small.yaml\n"
        "cells: [lstm]\n"
        f"tasks: [{{name: sentiment, options: {json.dumps(SENTIMENT)}}},\n"
        "        {name: agreement, options: {train_size: 64, validation_size: 32, test_size: 32, max_distance: 6}}]\n"
        "seeds: [0]\n"
        "model: {hidden_size: 16, embedding_size: 16}\n"
        "training: {max_epochs: 1, batch_size: 32, learning_rate: 0.01, cpu_threads: 1}\n"
        "device: cpu\n"
    )
    result = harness("run", "small.yaml", "--quiet", cwd=folder)
    assert result.returncode == 0, result.stderr
    rows = {row["task"]: row for row in csv.DictReader((folder / "reports" / "small" / "results.csv").open())}
    return folder, rows


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HARNESS_CACHE_DIR": str(cwd / "cache")}
    return harness_run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def evaluate(folder: Path, *args: str) -> Result:
    """``harness evaluate ARGS`` in this process (the imports dominate a subprocess's time), run in ``folder``."""
    env = {"HARNESS_DATA_DIR": str(real_data_root("sst2")), "HARNESS_CACHE_DIR": str(folder / "cache")}
    with contextlib.chdir(folder):
        return CliRunner().invoke(cli, ["evaluate", *args], env=env)


def evaluate_json(folder: Path, *args: str) -> dict:
    result = evaluate(folder, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def mlflow_run(folder: Path, run_id: str):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{folder / 'runs' / 'small' / 'mlflow.db'}").get_run(run_id)


@pytest.mark.parametrize("task", ["sentiment", "agreement"])
def test_unchanged_options_reproduce_the_recorded_test_metrics(trained, task: str) -> None:
    folder, rows = trained
    row = rows[task]
    found = evaluate_json(folder, row["path"])
    assert found["split"] == "test" and found["changed"] == {}
    metrics = mlflow_run(folder, row["run_id"]).data.metrics
    recorded = {name.removeprefix("test_"): value for name, value in metrics.items() if name.startswith("test_")}
    assert set(found["metrics"]) == set(recorded)  # agreement: its per-distance accuracies too
    for name, value in found["metrics"].items():
        assert math.isclose(value, recorded[name], rel_tol=1e-6, abs_tol=1e-9), name


def test_the_validation_split_matches_the_last_epochs_validation_metrics(trained) -> None:
    folder, rows = trained
    row = rows["sentiment"]
    found = evaluate_json(folder, row["run_id"], "--split", "validation")  # by MLflow run id
    recorded = mlflow_run(folder, row["run_id"]).data.metrics
    assert found["examples"] == 200
    assert math.isclose(found["metrics"]["accuracy"], recorded["val_accuracy"], abs_tol=1e-9)
    assert math.isclose(found["metrics"]["loss"], recorded["val_loss"], rel_tol=1e-6)


def test_other_data_with_the_same_vocabulary_is_scored(trained) -> None:
    """Pointing the test split at the validation file keeps the vocabulary: its metrics are the validation ones."""
    folder, rows = trained
    path = rows["sentiment"]["path"]
    moved = evaluate_json(folder, path, "--set", "test_file=stsa.binary.dev")
    assert moved["changed"] == {"test_file": "stsa.binary.dev"}
    assert moved["metrics"] == evaluate_json(folder, path, "--split", "validation")["metrics"]
    text = evaluate(folder, path, "--set", "test_file=stsa.binary.dev")
    assert "options changed: test_file=stsa.binary.dev" in text.stdout and "test (200 examples): " in text.stdout


def test_a_changed_vocab_size_is_refused_with_both_hashes(trained) -> None:
    from harness.plugins.tasks.sentiment import SentimentConfig, SentimentTask

    folder, rows = trained
    row = rows["sentiment"]
    result = harness("evaluate", row["path"], "--set", "vocab_size=50", cwd=folder)  # the real command line
    assert result.returncode == 2, result.stderr
    saved = mlflow_run(folder, row["run_id"]).data.tags["harness.input_vocab_hash"]
    now = SentimentTask(SentimentConfig(data_dir=str(real_data_root("sst2")), **{**SENTIMENT, "vocab_size": 50})).load().input_vocab
    assert saved != now.hash
    assert f"input_vocab: saved {saved} (804 entries), now {now.hash} (54 entries)" in result.stderr
    assert "vocab_size=50" in result.stderr and result.stdout == ""


def test_bad_overrides_are_refused(trained) -> None:
    folder, rows = trained
    unknown = evaluate(folder, rows["sentiment"]["path"], "--set", "vocab_sise=50")
    assert unknown.exit_code == 2 and "no option 'vocab_sise'" in unknown.stderr and "vocab_size" in unknown.stderr
    invalid = evaluate(folder, rows["sentiment"]["path"], "--set", "vocab_size=-3")
    assert invalid.exit_code == 2 and "vocab_size" in invalid.stderr
    missing = evaluate(folder, "no-such-run")
    assert missing.exit_code == 2 and "no run 'no-such-run'" in missing.stderr
