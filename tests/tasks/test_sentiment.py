"""The sentiment task: both file layouts, every bad-data error with file:line, the cache, the
hub path, and one real `harness run` on a slice of SST-2.

The real SST-2 files are read from ``$HARNESS_DATA_DIR/sst2/``; without them those tests skip
saying how to get them (fail with HARNESS_REQUIRE_DATA=1 or CI set; tests/real_data.py).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import pytest
from forked_harness import harness_run
from pydantic import ValidationError

from harness.core.errors import BadInputError, ConfigError
from harness.core.tasks import EmptySplitError
from harness.plugins.tasks.sentiment import SentimentConfig, SentimentTask, read_labelled_file


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own processed-data cache, so none sees another's entries."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def data_dir(real_data) -> Path:
    """The folder that contains the full SST-2 (skips without it; tests/real_data.py)."""
    return real_data("sst2")


def make_data(root: Path, train: str, dev: str = "1 fine\n", test: str = "0 dull\n", *,
              names: tuple[str, str, str] = ("train.txt", "dev.txt", "test.txt"), raw: bytes | None = None) -> Path:
    """``root/sst/`` with three split files; returns the train file's path."""
    folder = root / "sst"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in zip(names, (train, dev, test)):
        (folder / name).write_text(text, encoding="utf-8")
    if raw is not None:
        (folder / names[0]).write_bytes(raw)
    return folder / names[0]


def task_for(root: Path, names: tuple[str, str, str] = ("train.txt", "dev.txt", "test.txt"),
             **options) -> SentimentTask:
    return SentimentTask(SentimentConfig(data_dir=str(root), subfolder="sst", train_file=names[0],
                                         validation_file=names[1], test_file=names[2], **options))


# ---------------------------------------------------------------------------
# Reading the real files
# ---------------------------------------------------------------------------


def test_sst2_sentence_split_is_read_whole(data_dir: Path) -> None:
    task = SentimentTask()
    data = task.load()
    assert (len(data.train), len(data.validation), len(data.test)) == (6920, 872, 1821)
    # DATASET.md's label counts.
    assert data.info["train_label_counts"] == [3310, 3610]
    assert data.info["test_label_counts"] == [912, 909]
    first = data.train[0]
    assert data.input_vocab.decode(first.inputs)[:4] == ["a", "stirring", ",", "funny"] and first.target == 1
    assert data.output_vocab.tokens == ["0", "1"]
    # Default K exceeds the 14,828 training types: every training word has its own id.
    assert len(data.input_vocab) == 14828 + 4
    assert "sentences only" in task.notes["training_data"] and "include_phrases: false" in task.notes["training_data"]


def test_vocabulary_is_the_k_most_frequent_training_tokens(data_dir: Path) -> None:
    data = SentimentTask(SentimentConfig(vocab_size=50)).load()
    vocab = data.input_vocab
    assert len(vocab) == 50 + 4 and vocab.tokens[:4] == ["<PAD>", "<UNK>", "<BOS>", "<EOS>"]
    assert {"the", ",", ".", "a", "and"} <= set(vocab.tokens)
    rare = data.train[0].inputs[data.input_vocab.decode(data.train[0].inputs).index("<UNK>")]
    assert rare == vocab.unk_id  # "stirring" is not among the 50 most frequent


def test_the_phrase_file_is_tsv_with_crlf_endings_and_is_read_exactly(data_dir: Path) -> None:
    rows = read_labelled_file(data_dir / "sst2" / "phrases" / "train.tsv", "auto", num_classes=2, lowercase=False)
    assert len(rows) == 67349
    assert sum(label for _, label in rows) == 37569  # DATASET.md: 37,569 positive
    assert not any(token.endswith("\r") for tokens, _ in rows[:2000] for token in tokens)
    assert rows[0] == (["hide", "new", "secretions", "from", "the", "parental", "units"], 0)


def test_include_phrases_adds_them_without_any_evaluation_sentence(data_dir: Path) -> None:
    task = SentimentTask(SentimentConfig(include_phrases=True))
    data = task.load()
    assert len(data.train) > 60000
    held_out = {tuple(e.inputs) for e in data.validation + data.test}
    assert not held_out & {tuple(e.inputs) for e in data.train[6920:]}
    assert task.notes["training_data"].startswith("sentences and phrases")
    assert "1 equal to a validation/test sentence" in task.notes["training_data"]  # DATASET.md: 1 test sentence


# ---------------------------------------------------------------------------
# Layouts: label<space>sentence and TSV with the columns in either order
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "label\tsentence\r\n1\ta good film\r\n0\ta dull one\r\n",
    "sentence\tlabel\r\na good film\t1\r\na dull one\t0\r\n",
    "Text\tid\tSentiment\na good film\t7\t1\na dull one\t8\t0\n",
], ids=["label-first-crlf", "sentence-first-crlf", "other-names-extra-column"])
def test_tsv_columns_in_either_order(tmp_path: Path, text: str) -> None:
    path = tmp_path / "train.tsv"
    path.write_bytes(text.encode())
    assert read_labelled_file(path, "auto", num_classes=2, lowercase=False) == [
        (["a", "good", "film"], 1), (["a", "dull", "one"], 0)]


def test_auto_detects_a_tsv_header_in_a_file_without_the_suffix_and_lowercase_applies(tmp_path: Path) -> None:
    make_data(tmp_path, "label\tsentence\n1\tA Good Film\n0\tNot Fine\n", "1 Fine\n", "0 Dull\n")
    data = task_for(tmp_path, lowercase=True).load()
    assert data.input_vocab.decode(data.train[0].inputs) == ["a", "good", "film"]
    assert data.input_vocab.decode(data.validation[0].inputs) == ["fine"]  # label_sentence, lower-cased too


# ---------------------------------------------------------------------------
# Bad data: every error names the file and the line, exit code 2
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("content, line, message", [
    ("1 good\nx bad film\n", 2, "label 'x' is not an integer"),
    ("1 good\n0 fine\n7 odd film\n", 3, "label 7 is not one of 0..1"),
    ("1 good\n0\n", 2, "label 0 but no sentence"),
    ("1 good\n\n0 bad\n", 2, "empty line"),
    ("label\tfoo\n1\tgood\n", 1, "has no sentence column"),
    ("idx\tsentence\n1\tgood\n", 1, "has no label column"),
    ("label\tsentence\n1\tgood\n0\tbad\textra\n", 3, "3 tab-separated fields, but the header has 2"),
    ("label\tsentence\n1\tgood\n-1\thidden\n", 3, "-1 marks a hidden label"),
], ids=["label-not-integer", "unknown-label", "no-sentence", "empty-line", "tsv-no-sentence-column",
        "tsv-no-label-column", "tsv-field-count", "hidden-label"])
def test_bad_rows_name_file_and_line(tmp_path: Path, content: str, line: int, message: str) -> None:
    train = make_data(tmp_path, content)
    with pytest.raises(BadInputError) as error:
        task_for(tmp_path).load()
    assert f"{train}:{line}: " in str(error.value) and message in str(error.value)
    assert error.value.exit_code == 2


def test_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    train = make_data(tmp_path, "", raw=b"1 good\n0 caf\xe9 bad\n")
    with pytest.raises(BadInputError, match=rf"{train}:2: invalid UTF-8"):
        task_for(tmp_path).load()


@pytest.mark.parametrize("test_text", ["", "label\tsentence\n"], ids=["empty-file", "header-only"])
def test_an_empty_split_is_refused_naming_its_file(tmp_path: Path, test_text: str) -> None:
    names = ("train.txt", "dev.txt", "test.tsv")
    make_data(tmp_path, "1 good\n", test=test_text, names=names)
    with pytest.raises(EmptySplitError) as error:
        task_for(tmp_path, names).load()
    assert "the test split" in str(error.value) and str(tmp_path / "sst" / "test.tsv") in str(error.value)
    assert error.value.exit_code == 2


def test_missing_data_folder_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    with pytest.raises(ConfigError, match="HARNESS_DATA_DIR"):
        SentimentTask().load()
    make_data(tmp_path, "1 good\n")
    with pytest.raises(ConfigError, match="does not exist"):
        task_for(tmp_path, ("train.txt", "dev.txt", "nope.txt")).load()


# ---------------------------------------------------------------------------
# Cache and hub
# ---------------------------------------------------------------------------


def test_second_load_is_served_from_the_cache_and_an_edit_rebuilds(tmp_path: Path) -> None:
    make_data(tmp_path, "1 a good film\n0 a dull film\n")
    first = task_for(tmp_path)
    loaded = first.load()
    assert (first.cache.builds, first.cache.hits) == (3, 0)
    second = task_for(tmp_path)
    again = second.load()
    assert (second.cache.builds, second.cache.hits) == (0, 3)  # nothing re-tokenized
    assert again.train == loaded.train and again.input_vocab.hash == loaded.input_vocab.hash
    (tmp_path / "sst" / "test.txt").write_text("1 a good one\n")
    third = task_for(tmp_path)
    assert third.load().test[0].target == 1
    assert (third.cache.builds, third.cache.hits) == (1, 2)


def write_hub_folder(root: Path, test_rows: str = "a fine film,1\n") -> Path:
    folder = root / "hub"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\na good film,1\na dull film,0\nfine,1\n")
    (folder / "validation.csv").write_text("text,label\nsolid,1\n")
    (folder / "test.csv").write_text("text,label\n" + test_rows)
    return folder


def test_hub_dataset_is_processed_like_files_and_cached(tmp_path: Path) -> None:
    folder = write_hub_folder(tmp_path)
    task = SentimentTask(SentimentConfig(hub_dataset=str(folder), text_column="text"))
    data = task.load()
    assert (len(data.train), len(data.validation), len(data.test)) == (3, 1, 1)
    assert data.input_vocab.decode(data.train[0].inputs) == ["a", "good", "film"] and data.train[0].target == 1
    again = SentimentTask(SentimentConfig(hub_dataset=str(folder), text_column="text"))
    again.load()
    assert again.cache.hits == 1 and again.cache.builds == 0


def test_hub_errors_name_the_dataset_split_and_row(tmp_path: Path) -> None:
    folder = write_hub_folder(tmp_path, test_rows="fine,1\nhidden,-1\n")
    with pytest.raises(ConfigError, match="has no column 'sentence'"):
        SentimentTask(SentimentConfig(hub_dataset=str(folder))).load()
    with pytest.raises(BadInputError, match="split test, row 1: label -1 is not one of 0..1"):
        SentimentTask(SentimentConfig(hub_dataset=str(folder), text_column="text")).load()
    with pytest.raises(ValidationError, match="cannot be combined with hub_dataset"):
        SentimentConfig(hub_dataset=str(folder), include_phrases=True)


# ---------------------------------------------------------------------------
# End to end: `harness run` on a slice of SST-2
# ---------------------------------------------------------------------------


def test_harness_run_on_a_slice_of_sst2(tmp_path: Path, data_dir: Path) -> None:
    (tmp_path / "sst2.yaml").write_text(
        "# A slice of SST-2, one epoch: harness run sst2.yaml\n"
        "cells: [lstm]\n"
        "tasks: [{name: sentiment, options: {max_examples: 300, vocab_size: 1000}}]\n"
        "seeds: [0]\n"
        "model: {hidden_size: 16, embedding_size: 16, bidirectional: true, pooling: max}\n"
        "training: {max_epochs: 1, batch_size: 32, learning_rate: 0.01, cpu_threads: 1}\n"
        "device: cpu\n"
    )
    env = {**os.environ, "HARNESS_DATA_DIR": str(data_dir), "HARNESS_CACHE_DIR": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    result = harness_run(["run", "sst2.yaml", "--quiet"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (row,) = csv.DictReader((tmp_path / "reports" / "sst2" / "results.csv").open())
    assert row["status"] == "FINISHED" and row["family"] == "classification"
    accuracy = float(row["test_accuracy"])
    assert math.isfinite(accuracy) and 0.0 <= accuracy <= 1.0
    assert math.isfinite(float(row["test_loss"]))
    report = (tmp_path / "reports" / "sst2" / "report.md").read_text()
    assert "training_data: sentences only: 300 labelled training sentences" in report
    from mlflow.tracking import MlflowClient

    run = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'sst2' / 'mlflow.db'}").get_run(row["run_id"])
    assert run.data.params["model.pooling"] == "max"
    assert run.data.tags["harness.note.vocabulary"].startswith("the 1,000 most frequent of ")
