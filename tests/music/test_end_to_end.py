"""One tiny run on a slice of JSB through `harness run`, then `harness sample` on it (subprocesses).

The run skips without ``$HARNESS_DATA_DIR/polyphonic-music`` (tests/real_data.py).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from forked_harness import harness_run
from real_data import real_data_root

from harness.data.midi import read_midi
from harness.plugins.tasks.music import MusicConfig, MusicTask

HARNESS = [sys.executable, "-m", "harness.cli.main"]
PRESET = Path(__file__).parents[2] / "experiments" / "reproduce" / "chung2014.yaml"


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return harness_run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    real_data_root("polyphonic-music")  # the subprocesses read it through the inherited HARNESS_DATA_DIR
    folder = tmp_path_factory.mktemp("music")
    (folder / "jsb.yaml").write_text(
        "# A tiny JSB slice: harness run jsb.yaml\n"
        "cells: [gru]\n"
        "tasks: [{name: music, label: jsb_chorales, options: {max_sequences: 6, max_steps: 16}}]\n"
        "seeds: [0]\n"
        "model: {hidden_size: 8}\n"
        "training: {optimizer: rmsprop, learning_rate: 0.01, max_epochs: 2, batch_size: 4, cpu_threads: 1,\n"
        "           weight_noise: 0.075, early_stopping: {patience: 2}}\n"
        "device: cpu\n"
    )
    result = harness("run", "jsb.yaml", "--quiet", cwd=folder)
    assert result.returncode == 0, result.stderr
    (row,) = csv.DictReader((folder / "reports" / "jsb" / "results.csv").open())
    return folder, row


def test_the_run_reports_nll_per_step_on_test_and_train(trained) -> None:
    _, row = trained
    assert row["status"] == "FINISHED" and row["family"] == "multilabel_sequence"
    nll, train_nll = float(row["test_nll"]), float(row["test_train_nll"])
    # 88 independent keys: an untrained net is near 88 ln 2 = 61 nats per step; two epochs go below it.
    assert 0 < nll < 88 * 0.6931 and 0 < train_nll < 88 * 0.6931
    assert float(row["test_loss"]) == nll
    assert row["hidden_size"] == "8"


def test_sample_writes_a_midi_file_of_the_requested_length_with_the_prime_kept(trained) -> None:
    folder, row = trained
    result = harness("sample", row["path"], "--length", "12", "--prime-steps", "4", "--seed", "1",
                     "--output", "samples/jsb.mid", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["samples/jsb.mid", "samples/jsb.png"]
    midi = read_midi(folder / "samples" / "jsb.mid")
    assert midi.ticks_per_beat == 480 and midi.end_tick == (4 + 12) * 480  # JSB: a quarter note per step
    roll = midi.piano_roll(480)
    config = MusicConfig(data_dir=str(real_data_root("polyphonic-music")), max_sequences=6, max_steps=16)
    first_test_piece = MusicTask(config).load().test[0]
    assert [[k for k in range(88) if step[k]] for step in roll[:4]] == first_test_piece.inputs[:4]
    assert (folder / "samples" / "jsb.png").read_bytes()[:4] == b"\x89PNG"


def test_language_model_options_are_refused_for_music(trained) -> None:
    folder, row = trained
    result = harness("sample", row["path"], "--prime", "C4", cwd=folder)
    assert result.returncode == 2 and "--prime-steps" in result.stderr


def test_the_preset_carries_the_published_table() -> None:
    from harness.experiment import load_experiment

    reference = load_experiment(PRESET).experiment.reference
    assert reference.metrics == ["test_train_nll", "test_nll"]
    assert reference.results["jsb_chorales"]["gru"] == [6.94, 8.54]
    assert reference.results["nottingham"]["vanilla"] == [3.22, 3.13]
    assert set(reference.results) == {"jsb_chorales", "nottingham", "musedata", "piano_midi"}


def test_the_preset_is_valid_and_matches_their_hidden_sizes() -> None:
    from harness.core.loading import load_plugins
    from harness.experiment import load_experiment
    from harness.runs.grid import expand_grid

    specs = expand_grid(load_experiment(PRESET), load_plugins())
    assert len(specs) == 5 * 4 * 3
    hidden = {s.cell.label: s.hidden_size for s in specs}
    assert hidden == {"vanilla": 99, "gru": 46, "lstm": 37, "gru_simple": 61, "peephole_lstm": 37}
    assert {s.cell.options()["variant"] for s in specs if s.cell.name == "peephole_lstm"} == {"gers"}
    assert {s.config["training"]["weight_noise"] for s in specs} == {0.075}
