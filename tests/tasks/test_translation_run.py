"""One tiny Multi30k run through `harness run` (subprocess), then `harness translate` on it; and the T2 preset.

The run skips without ``$HARNESS_DATA_DIR/multi30k`` (tests/real_data.py).
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
from forked_harness import harness_run
from real_data import real_data_root

HARNESS = [sys.executable, "-m", "harness.cli.main"]
PRESET = Path(__file__).parents[2] / "experiments" / "reproduce" / "cho2014_multi30k_gru.yaml"


def harness(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return harness_run(args, cwd=cwd, capture_output=True, text=True, timeout=600,
                       input=stdin)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    real_data_root("multi30k")  # the subprocesses read it through the inherited HARNESS_DATA_DIR
    folder = tmp_path_factory.mktemp("translation")
    (folder / "mt.yaml").write_text(
        "# A tiny Multi30k slice: harness run mt.yaml\n"
        "cells: [gru]\n"
        "tasks: [{name: translation, options: {max_pairs: 300, beam_size: 2, max_decode_length: 20}}]\n"
        "seeds: [0]\n"
        "model: {hidden_size: 16, embedding_size: 16, decoder_context: every_step}\n"
        "training: {max_epochs: 1, batch_size: 32, learning_rate: 0.01, cpu_threads: 1}\n"
        "device: cpu\n"
    )
    result = harness("run", "mt.yaml", "--quiet", cwd=folder)
    assert result.returncode == 0, result.stderr
    (row,) = csv.DictReader((folder / "reports" / "mt" / "results.csv").open())
    return folder, row


def test_the_run_reports_finite_bleu_and_perplexity_with_the_signature(trained) -> None:
    folder, row = trained
    assert row["status"] == "FINISHED" and row["family"] == "seq2seq"
    bleu, perplexity = float(row["test_bleu"]), float(row["test_perplexity"])
    assert math.isfinite(bleu) and 0 <= bleu <= 100
    assert math.isfinite(perplexity) and perplexity > 1
    from mlflow.tracking import MlflowClient

    run = MlflowClient(f"sqlite:///{folder / 'runs' / 'mt' / 'mlflow.db'}").get_run(row["run_id"])
    signature = run.data.tags["harness.note.bleu_signature"]
    assert signature.startswith("nrefs:1|case:lc|eff:no|tok:13a|smooth:exp|version:")
    assert "val_bleu" in run.data.metrics and "harness.output_vocab_hash" in run.data.tags
    report = (folder / "reports" / "mt" / "report.md").read_text()
    assert "bleu_signature: " + signature.replace("|", "\\|") in report  # Markdown escapes the pipes
    assert "beam search, K = 2" in report


def test_translate_prints_one_line_per_sentence_greedy_or_beam(trained) -> None:
    folder, row = trained
    sentences = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee."]
    greedy = harness("translate", row["path"], *sentences, "--beam", "1", cwd=folder)
    assert greedy.returncode == 0, greedy.stderr
    lines = greedy.stdout.splitlines()
    assert len(lines) == 2 and all(lines)
    beam = harness("translate", row["run_id"], sentences[0], "--beam", "3", "--max-length", "5", cwd=folder)
    assert beam.returncode == 0, beam.stderr
    (line,) = beam.stdout.splitlines()
    assert len(line.split()) <= 5
    from_stdin = harness("translate", row["path"], "--beam", "1", cwd=folder, stdin="\n".join(sentences) + "\n")
    assert from_stdin.stdout == greedy.stdout


def test_translate_refuses_an_empty_sentence(trained) -> None:
    folder, row = trained
    result = harness("translate", row["path"], "   ", cwd=folder)
    assert result.returncode == 2 and "sentence 1 has no tokens" in result.stderr


def test_the_preset_is_the_t2_setup_with_its_published_bleu() -> None:
    from harness.core.loading import load_plugins
    from harness.experiment import load_experiment
    from harness.runs.grid import expand_grid

    loaded = load_experiment(PRESET)
    reference = loaded.experiment.reference
    assert reference.metrics == ["test_bleu"] and reference.results["multi30k_de_en"]["gru"] == [20.61]
    specs = expand_grid(loaded, load_plugins())
    assert [s.seed for s in specs] == [0, 1, 2]
    spec = specs[0]
    assert spec.cell.options()["reset"] == "after" and spec.config["model"]["init_scale"] == 0.01
    assert spec.hidden_size == 512 and spec.config["model"]["decoder_context"] == "every_step"
    assert spec.task.options()["max_decode_length"] == 25 and spec.task.options()["beam_size"] == 1
