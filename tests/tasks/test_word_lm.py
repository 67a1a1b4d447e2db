"""word_lm: the PTB and WikiText readers, the stream and its vocabulary, bad data, the cache, the hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.errors import BadInputError, ConfigError
from harness.core.tasks import EmptySplitError
from harness.data.reading import ProcessedCache
from harness.core.vocab import EOS, UNK
from harness.plugins.tasks.word_lm import WordLMConfig, WordLMTask


def write_corpus(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def ptb_like(root: Path, train: str = " the cat sat \n the dog <unk> \n", valid: str = " the cat \n",
             test: str = " a dog sat \n") -> Path:
    return write_corpus(root / "ptb", {"ptb.train.txt": train, "ptb.valid.txt": valid, "ptb.test.txt": test})


def load(root: Path, **options) -> tuple[WordLMTask, object]:
    task = WordLMTask(WordLMConfig(data_dir=str(root), **options))
    task.cache = ProcessedCache(root / "cache")
    return task, task.load()


def words(data, split: str) -> list[str]:
    return data.input_vocab.decode(data.splits()[split][0].inputs)


def test_real_ptb_has_the_published_sizes_and_a_10000_word_softmax(real_data) -> None:
    real_data("ptb")
    task = WordLMTask()
    data = task.load()
    vocab = data.input_vocab
    assert len(vocab) == 10_000 and vocab.specials == (UNK, EOS)  # 9,998 words + <unk> + <eos>
    assert "<unk>" not in vocab and "<eos>" not in vocab and "<PAD>" not in vocab
    # Words + one <EOS> per line (the quoted 929k / 73k / 82k), after the leading <EOS> context.
    assert [len(data.splits()[s][0].inputs) - 1 for s in ("train", "validation", "test")] == [929_589, 73_760, 82_430]
    assert data.contiguous and data.output_vocab is vocab
    first = words(data, "train")[:12]
    assert first == [EOS, "aer", "banknote", "berlitz", "calloway", "centrust", "cluett", "fromstein", "gitano",
                     "guterman", "hydro-quebec", "ipo"]
    assert "82,430" in task.notes["perplexity"] and "10,000 types" in task.notes["vocabulary"]


def test_ptb_layout_stream_maps_the_corpus_specials_to_ours(tmp_path) -> None:
    ptb_like(tmp_path)
    _, data = load(tmp_path)
    assert words(data, "train") == [EOS, "the", "cat", "sat", EOS, "the", "dog", UNK, EOS]
    assert words(data, "validation") == [EOS, "the", "cat", EOS]
    assert words(data, "test") == [EOS, UNK, "dog", "sat", EOS]  # "a" never occurs in training
    assert data.input_vocab.tokens == [UNK, EOS, "the", "cat", "dog", "sat"]  # by frequency, ties alphabetical


def test_only_the_specials_the_data_needs(tmp_path) -> None:
    root = tmp_path / "clean"
    ptb_like(root, train="b a\na c\n", valid="a\n", test="c b\n")
    _, data = load(root)
    assert data.input_vocab.specials == (EOS,) and len(data.input_vocab) == 4  # no <UNK>, <PAD> or <BOS>
    _, cut = load(root, vocab_size=2)  # K = 2 of 3 training words: now <UNK> is needed
    assert cut.input_vocab.tokens == [UNK, EOS, "a", "b"]
    assert words(cut, "test") == [EOS, UNK, "b", EOS]


def test_wikitext_layout_keeps_blank_lines_and_headings(tmp_path) -> None:
    write_corpus(tmp_path / "wikitext-2", {
        "wiki.train.tokens": " \n = Valkyria = \n \n The game @-@ play <unk> . \n",
        "wiki.valid.tokens": " = Game = \n The play . \n",
        "wiki.test.tokens": " The game . \n",
    })
    task, data = load(tmp_path, layout="wikitext")
    assert words(data, "train") == [EOS, EOS, "=", "Valkyria", "=", EOS, EOS, "The", "game", "@-@", "play", UNK,
                                    ".", EOS]
    assert words(data, "test") == [EOS, "The", "game", ".", EOS]
    assert "wiki.test.tokens (1 lines, 4 tokens)" in task.notes["data"]


def test_max_lines_slices_every_split_and_the_vocabulary_follows(tmp_path) -> None:
    ptb_like(tmp_path, train="a b\nc d\ne f\n", valid="a\nb\n", test="c\nd\n")
    task, data = load(tmp_path, max_lines=1)
    assert words(data, "train") == [EOS, "a", "b", EOS]
    assert words(data, "validation") == [EOS, "a", EOS] and words(data, "test") == [EOS, UNK, EOS]
    assert "first 1 lines of each split only" in task.notes["data"]


def test_invalid_utf8_names_the_file_and_line(tmp_path) -> None:
    folder = ptb_like(tmp_path)
    (folder / "ptb.valid.txt").write_bytes(b" the cat \n the \xe9t\xe9 \n")
    with pytest.raises(BadInputError, match=r"ptb\.valid\.txt:2: invalid UTF-8 \(byte 0xe9 at column 6\)"):
        load(tmp_path)


def test_an_empty_split_is_refused_naming_the_file(tmp_path) -> None:
    ptb_like(tmp_path, test="")
    with pytest.raises(EmptySplitError, match=r"the test split \(.*ptb\.test\.txt\) has no lines"):
        load(tmp_path)


def test_missing_files_and_folders_are_config_errors(tmp_path, monkeypatch) -> None:
    folder = ptb_like(tmp_path)
    (folder / "ptb.test.txt").unlink()
    with pytest.raises(ConfigError, match=r"data file .*ptb\.test\.txt does not exist"):
        load(tmp_path)
    (folder / "other.train.txt").write_text("x\n")
    with pytest.raises(ConfigError, match=r"exactly one <name>\.train\.txt .*found: other\.train\.txt, ptb\.train\.txt"):
        load(tmp_path)
    with pytest.raises(ConfigError, match="must contain wikitext-2/"):
        load(tmp_path, layout="wikitext")
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    with pytest.raises(ConfigError, match="HARNESS_DATA_DIR"):
        WordLMTask().load()


def test_the_second_load_is_served_from_the_cache(tmp_path) -> None:
    ptb_like(tmp_path)
    cache = ProcessedCache(tmp_path / "cache")
    first = WordLMTask(WordLMConfig(data_dir=str(tmp_path)))
    first.cache = cache
    data = first.load()
    second = WordLMTask(WordLMConfig(data_dir=str(tmp_path)))
    second.cache = cache
    again = second.load()
    assert (cache.builds, cache.hits) == (1, 1)
    assert again.train[0].inputs == data.train[0].inputs and again.input_vocab.hash == data.input_vocab.hash
    assert second.notes == first.notes
    (tmp_path / "ptb" / "ptb.train.txt").write_text(" the cat sat \n")  # a changed file is processed afresh
    third = WordLMTask(WordLMConfig(data_dir=str(tmp_path)))
    third.cache = cache
    third.load()
    assert cache.builds == 2


def test_a_hub_dataset_is_processed_exactly_like_the_files(tmp_path) -> None:
    folder = ptb_like(tmp_path)
    hub = tmp_path / "hub"
    hub.mkdir()
    for split, name in (("train", "train"), ("validation", "valid"), ("test", "test")):
        rows = (folder / f"ptb.{name}.txt").read_text().splitlines()
        (hub / f"{split}.csv").write_text("text\n" + "".join(f'"{row}"\n' for row in rows))
    _, from_files = load(tmp_path)
    _, from_hub = load(tmp_path, hub_dataset=str(hub))
    for split in ("train", "validation", "test"):
        assert words(from_hub, split) == words(from_files, split)
    with pytest.raises(ConfigError, match="has no column 'sentence'"):
        load(tmp_path, hub_dataset=str(hub), text_column="sentence")


def test_tokenize_maps_the_corpus_unk_and_adds_no_eos() -> None:
    assert WordLMTask().tokenize(" the <unk> cat ") == ["the", UNK, "cat"]
