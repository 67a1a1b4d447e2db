"""word_lm and char_lm end to end: `harness run` on slices of the real data, then `harness score` and `sample`.

The real-data tests skip without ``$HARNESS_DATA_DIR/ptb`` or ``/tinyshakespeare`` (tests/real_data.py).

CI runs these on a few hundred PTB lines and 20k tiny-shakespeare characters, one epoch, tiny
models; the full presets are benchmarks, not tests.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch
from forked_harness import harness_run
from real_data import real_data_root

from harness.core.loading import load_plugins
from harness.training.checkpoints import load_trained_run
from harness.training.scoring import score_tokens


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return harness_run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def train(folder: Path, name: str, yaml: str) -> dict[str, str]:
    (folder / f"{name}.yaml").write_text(yaml)
    result = harness("run", f"{name}.yaml", "--quiet", cwd=folder)
    assert result.returncode == 0, result.stderr
    (row,) = csv.DictReader((folder / "reports" / name / "results.csv").open())
    assert row["status"] == "FINISHED"
    return row


def artifacts(row: dict[str, str]) -> Path:
    return Path(unquote(urlparse(row["path"]).path))


@pytest.fixture(scope="module")
def ptb_run(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    real_data_root("ptb")  # the subprocesses read it through the inherited HARNESS_DATA_DIR
    folder = tmp_path_factory.mktemp("ptb")
    row = train(folder, "ptb", (
        "# A PTB slice: harness run ptb.yaml\n"
        "cells: [lstm]\n"
        "tasks: [{name: word_lm, options: {max_lines: 300}}]\n"
        "seeds: [0]\n"
        "model: {hidden_size: 32, embedding_size: 32}\n"
        "training: {max_epochs: 1, batch_size: 10, eval_batch_size: 1, bptt_steps: 20, learning_rate: 0.01,\n"
        "           cpu_threads: 1}\n"
        "device: cpu\n"))
    return folder, row


def test_ptb_slice_trains_and_reports_perplexity_over_every_test_token(ptb_run) -> None:
    _, row = ptb_run
    vocab = json.loads((artifacts(row) / "input_vocab.json").read_text())
    size = len(vocab["specials"]) + len(vocab["tokens"])
    assert vocab["specials"] == ["<UNK>", "<EOS>"]
    perplexity = float(row["test_perplexity"])
    # Finite, and better than the uniform distribution over the vocabulary (an untrained model's V).
    assert math.isfinite(perplexity) and 1 < perplexity < size
    assert float(row["test_loss"]) == pytest.approx(math.log(perplexity))
    assert float(row["test_bits_per_token"]) == pytest.approx(math.log2(perplexity))
    # Eval batch 1: every word and line end of the first 300 test lines is predicted once.
    lines = (real_data_root("ptb") / "ptb" / "ptb.test.txt").read_text().splitlines()[:300]
    assert int(float(row["test_tokens"])) == sum(len(line.split()) + 1 for line in lines)


def test_evaluate_reproduces_the_recorded_stream_metrics(ptb_run) -> None:
    folder, row = ptb_run
    result = harness("evaluate", row["path"], "--json", cwd=folder)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    # Same windows, same batch of 1, same carried state: the same summed NLL over the same tokens.
    assert metrics["tokens"] == float(row["test_tokens"])
    assert metrics["perplexity"] == pytest.approx(float(row["test_perplexity"]), rel=1e-5)


def test_score_is_the_sum_of_the_conditionals_of_a_step_by_step_pass(ptb_run) -> None:
    folder, row = ptb_run
    trained = load_trained_run(artifacts(row), load_plugins())
    vocab, net = trained.data.input_vocab, trained.net
    sentence = "the company said it expects zzyzx results"
    scored = score_tokens(net, vocab, trained.task.tokenize(sentence))
    # One token at a time with the carried state, from <EOS> (the word stream's context).
    ids = vocab.encode(["<EOS>", *sentence.split(), "<EOS>"])
    total, state = 0.0, None
    with torch.no_grad():
        for previous, token in itertools.pairwise(ids):
            logits, state = net(torch.tensor([[previous]]), None, state)
            total += torch.log_softmax(logits[0, -1].double(), -1)[token].item()
    assert scored.log_prob == pytest.approx(total, rel=1e-5)
    assert len(scored.tokens) == 8 and scored.unknown == ["zzyzx"]
    result = harness("score", row["path"], sentence, "the company", "--per-token", cwd=folder)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{scored.log_prob:.4f} nats  log10 {scored.log_prob / math.log(10):.4f}  (8 tokens)")
    assert lines[0].endswith("[scored as <UNK>: zzyzx]")
    assert "'zzyzx' as <UNK>" in result.stdout
    per_token = [float(line.split()[0]) for line in lines[1:9]]
    assert sum(per_token) == pytest.approx(scored.log_prob, abs=1e-3)


def test_sampling_a_word_stream_starts_after_eos_and_keeps_the_prime(ptb_run) -> None:
    folder, row = ptb_run
    result = harness("sample", row["path"], "--count", "3", "--length", "10", "--prime", "the company",
                     "--reject-unk", cwd=folder)
    assert result.returncode == 0, result.stderr
    samples = result.stdout.splitlines()
    assert len(samples) == 3 and all(s.startswith("the company") for s in samples)
    assert all("<UNK>" not in s and "<EOS>" not in s and len(s.split()) <= 12 for s in samples)


def test_char_lm_slice_reports_bits_per_character_and_samples_text(tmp_path) -> None:
    real_data_root("tinyshakespeare")
    row = train(tmp_path, "chars", (
        "# A tiny-shakespeare slice: harness run chars.yaml\n"
        "cells: [gru]\n"
        "tasks: [{name: char_lm, options: {max_chars: 20000}}]\n"
        "seeds: [0]\n"
        "model: {hidden_size: 32, embedding_size: 16}\n"
        "training: {max_epochs: 1, batch_size: 16, bptt_steps: 50, learning_rate: 0.01, cpu_threads: 1}\n"
        "device: cpu\n"))
    vocab = json.loads((artifacts(row) / "input_vocab.json").read_text())
    bits = float(row["test_bits_per_character"])
    # Finite, and better than uniform over the characters, log2 V bits.
    assert math.isfinite(bits) and 0 < bits < math.log2(len(vocab["tokens"]) + 1)
    assert bits == pytest.approx(float(row["test_loss"]) / math.log(2))
    assert int(float(row["test_tokens"])) == 16 * (1000 // 16 - 1)  # 5% of 20,000 characters in 16 columns
    result = harness("sample", row["path"], "--count", "2", "--length", "40", "--prime", "ROMEO:", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    samples = result.stdout.split("----- sample ")[1:] if "-----" in result.stdout else result.stdout.splitlines()
    assert len(samples) == 2
    texts = [s.split("-----\n", 1)[1] if "-----" in result.stdout else s for s in samples]
    assert all(text.startswith("ROMEO:") and " O M E" not in text for text in texts)  # characters joined
    assert all(len(text.rstrip("\n")) <= len("ROMEO:") + 40 for text in texts)
    scored = harness("score", row["path"], "To be", cwd=tmp_path)
    assert scored.returncode == 0 and "(5 tokens)" in scored.stdout  # five characters, no <EOS>


def test_the_pear_salad_is_likelier_than_the_pair_salad(tmp_path) -> None:
    corpus = tmp_path / "data" / "ptb"
    corpus.mkdir(parents=True)
    lines = ["the apple and pear salad", "a pair of shoes", "the pear is ripe", "he bought a pair of gloves",
             "the apple is red", "she made a salad"]
    (corpus / "toy.train.txt").write_text("".join(f" {line} \n" for line in lines * 30))
    (corpus / "toy.valid.txt").write_text("".join(f" {line} \n" for line in lines * 2))
    (corpus / "toy.test.txt").write_text("".join(f" {line} \n" for line in lines * 2))
    row = train(tmp_path, "toy", (
        "# Apple and pear: harness run toy.yaml\n"
        "cells: [lstm]\n"
        f"tasks: [{{name: word_lm, options: {{data_dir: '{tmp_path / 'data'}'}}}}]\n"
        "seeds: [0]\n"
        "model: {hidden_size: 24, embedding_size: 16}\n"
        "training: {max_epochs: 6, batch_size: 4, bptt_steps: 10, learning_rate: 0.02, cpu_threads: 1}\n"
        "device: cpu\n"))
    result = harness("score", row["path"], "the apple and pear salad", "the apple and pair salad", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    pear, pair = (float(line.split()[0]) for line in result.stdout.splitlines())
    assert pear > pair + 1.0  # log P in nats: "pair salad" never occurs, "pear salad" 30 times
