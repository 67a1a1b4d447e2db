"""char_lm: the recorded contiguous split, the character vocabulary, bad data, the cache, the hub."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.core.errors import BadInputError, ConfigError
from harness.core.tasks import EmptySplitError
from harness.data.reading import ProcessedCache
from harness.core.vocab import UNK
from harness.plugins.tasks.char_lm import CharLMConfig, CharLMTask, split_boundaries


def text_file(root: Path, text: str | bytes, name: str = "input.txt") -> Path:
    folder = root / "tinyshakespeare"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def load(root: Path, **options) -> tuple[CharLMTask, object]:
    task = CharLMTask(CharLMConfig(data_dir=str(root), **options))
    task.cache = ProcessedCache(root / "cache")
    return task, task.load()


def text_of(data, split: str) -> str:
    return "".join(data.input_vocab.decode(data.splits()[split][0].inputs))


def test_split_arithmetic() -> None:
    assert split_boundaries(100, 0.8, 0.1) == (80, 90)
    assert split_boundaries(1_115_394, 0.9, 0.05) == (1_003_854, 1_059_624)
    assert split_boundaries(1_115_394, 0.95, 0.05) == (1_059_624, 1_115_394)  # char-rnn: nothing left for test


def test_contiguous_split_of_a_small_file(tmp_path) -> None:
    text = "".join("abcdef\n"[i % 7] for i in range(100))  # 100 characters, each one seen in training
    text_file(tmp_path, text)
    task, data = load(tmp_path, train_fraction=0.8, validation_fraction=0.1)
    assert text_of(data, "train") == text[:80]
    assert text_of(data, "validation") == text[80:90] and text_of(data, "test") == text[90:]
    assert data.contiguous and data.token_unit == "character"
    assert "train [0, 80), validation [80, 90), test [90, 100)" in task.notes["split"]
    assert data.info["split_boundaries"] == [0, 80, 90, 100]


def test_vocabulary_is_the_training_characters_plus_unk(tmp_path) -> None:
    text_file(tmp_path, "abab abba\nab" + "xyz!")  # 16 characters; train = first 12
    _, data = load(tmp_path, train_fraction=0.75, validation_fraction=0.125)
    vocab = data.input_vocab
    assert vocab.specials == (UNK,) and sorted(vocab.tokens[1:]) == sorted(set("abab abba\nab"))
    assert data.input_vocab.decode(data.test[0].inputs) == [UNK, UNK]  # "z!" never occurs in training


def test_real_tiny_shakespeare_default_and_char_rnn_splits(real_data) -> None:
    real_data("tinyshakespeare")
    task = CharLMTask()
    data = task.load()
    assert [len(data.splits()[s][0].inputs) for s in ("train", "validation", "test")] == [1_003_854, 55_770, 55_770]
    assert len(data.input_vocab) == 66  # 65 characters (DATASET.md) + <UNK>
    assert text_of(data, "train").startswith("First Citizen:\nBefore we proceed any further, hear me speak.\n")
    assert "validation [1,003,854, 1,059,624), test [1,059,624, 1,115,394)" in task.notes["split"]
    char_rnn = CharLMTask(CharLMConfig(train_fraction=0.95, validation_fraction=0.05))
    split = char_rnn.load()
    assert split.test[0].inputs == split.validation[0].inputs and len(split.test[0].inputs) == 55_770
    assert "test the validation split again" in char_rnn.notes["split"]


def test_line_endings_are_normalised_and_the_final_newline_kept(tmp_path) -> None:
    text_file(tmp_path, b"ab\r\nba\r\nab\nba\n")
    _, data = load(tmp_path, train_fraction=0.5, validation_fraction=0.25)
    assert text_of(data, "train") + text_of(data, "validation") + text_of(data, "test") == "ab\nba\nab\nba\n"


def test_bad_data_is_a_clear_error(tmp_path) -> None:
    path = text_file(tmp_path, b"fine\nstill fine\nbad \xff here\n")
    with pytest.raises(BadInputError, match=rf"{path}:3: invalid UTF-8 \(byte 0xff at column 5\)"):
        load(tmp_path)
    text_file(tmp_path, "abcdefghij")  # 10 characters: 5% is not even one character
    with pytest.raises(EmptySplitError, match=r"the validation split of .*input\.txt has 0 characters \(of 10\)"):
        load(tmp_path)
    with pytest.raises(ConfigError, match=r"data file .*missing\.txt does not exist"):
        load(tmp_path, file="missing.txt")
    with pytest.raises(ValidationError, match="exceeds 1"):
        CharLMConfig(train_fraction=0.9, validation_fraction=0.2)


def test_the_second_load_is_served_from_the_cache(tmp_path) -> None:
    text_file(tmp_path, "to be or not to be\n" * 20)
    cache = ProcessedCache(tmp_path / "cache")
    loads = []
    for _ in range(2):
        task = CharLMTask(CharLMConfig(data_dir=str(tmp_path)))
        task.cache = cache
        loads.append(task.load())
    assert (cache.builds, cache.hits) == (1, 1)
    assert loads[0].train[0].inputs == loads[1].train[0].inputs
    assert loads[0].input_vocab.hash == loads[1].input_vocab.hash


def test_a_hub_dataset_is_joined_into_one_text(tmp_path) -> None:
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "train.csv").write_text('text\n"to be or not"\n"not to be"\n')
    (hub / "test.csv").write_text('text\n"or not to be"\n')
    _, data = load(tmp_path, hub_dataset=str(hub), train_fraction=0.5, validation_fraction=0.25)
    joined = "to be or not\nnot to be\nor not to be\n"  # rows in split order, each ending a line
    assert text_of(data, "train") + text_of(data, "validation") + text_of(data, "test") == joined


def test_tokenize_is_characters_and_detokenize_joins() -> None:
    task = CharLMTask()
    assert task.tokenize("To be,\n") == ["T", "o", " ", "b", "e", ",", "\n"]
    assert task.detokenize(task.tokenize("To be,\n")) == "To be,\n"
