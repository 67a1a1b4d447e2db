"""The committed fixtures (tests/fixtures/data) are exactly what their generator writes, and each task's
reader reads them in every layout it supports: the formats the end-to-end tests rely on."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from harness.core.vocab import EOS
from harness.plugins.tasks.char_lm import CharLMConfig, CharLMTask
from harness.plugins.tasks.music import MusicConfig, MusicTask
from harness.plugins.tasks.ner import NerConfig, NerTask
from harness.plugins.tasks.sentiment import SentimentConfig, SentimentTask
from harness.plugins.tasks.translation import TranslationConfig, TranslationTask
from harness.plugins.tasks.word_lm import WordLMConfig, WordLMTask

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DATA = str(FIXTURES / "data")


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


def test_the_generator_rewrites_the_committed_files_byte_for_byte(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    written = generator.make_all(tmp_path)
    committed = sorted(path for path in (FIXTURES / "data").rglob("*") if path.is_file())
    assert [p.relative_to(tmp_path) for p in written] == [p.relative_to(FIXTURES / "data") for p in committed]
    for new, old in zip(written, committed):
        assert new.read_bytes() == old.read_bytes(), f"{old}: run python tests/fixtures/make_fixtures.py"
    assert sum(path.stat().st_size for path in committed) < 400_000  # small: kilobytes per file


def test_word_lm_reads_the_ptb_and_the_wikitext_layouts() -> None:
    ptb = WordLMTask(WordLMConfig(data_dir=DATA)).load()
    lines = (FIXTURES / "data" / "ptb" / "ptb.test.txt").read_text().splitlines()
    assert len(ptb.test[0].inputs) - 1 == sum(len(line.split()) + 1 for line in lines)  # after the leading <EOS>
    assert ptb.input_vocab.specials[0] == "<UNK>"  # the corpus' own <unk> is ours
    wiki = WordLMTask(WordLMConfig(data_dir=DATA, layout="wikitext")).load()
    tokens = wiki.input_vocab.decode(wiki.test[0].inputs)
    assert tokens[:3] == [EOS, EOS, "="] and "@-@" in tokens[:8]  # a blank line (<EOS>), then the heading


def test_char_lm_reads_the_text_whole() -> None:
    data = CharLMTask(CharLMConfig(data_dir=DATA)).load()
    text = (FIXTURES / "data" / "tinyshakespeare" / "input.txt").read_text()
    assert sum(len(split[0].inputs) for split in (data.train, data.validation, data.test)) == len(text)


def test_ner_skips_docstart_breaks_at_whitespace_only_lines_and_detects_iob1() -> None:
    info = NerTask(NerConfig(data_dir=DATA)).load().info
    for split, name in (("train", "eng.train"), ("validation", "eng.testa"), ("test", "eng.testb")):
        lines = (FIXTURES / "data" / "conll2003" / name).read_text().split("\n")[:-1]
        breaks = [line for line in lines if not line.strip()]
        assert any(line for line in breaks), "the fixture has whitespace-only separator lines"
        documents = sum(line.startswith("-DOCSTART-") for line in lines)
        assert info[f"{split}_sentences"] == len(breaks) - documents  # each -DOCSTART- has its own blank line
        assert info[f"{split}_tokens"] == len(lines) - len(breaks) - documents
    assert info["tag_scheme_in_data"] == "IOB1"


def test_sentiment_lines_tsv_and_phrases_hold_the_same_labelled_sentences() -> None:
    lines = SentimentTask(SentimentConfig(data_dir=DATA)).load()
    tsv = SentimentTask(SentimentConfig(data_dir=DATA, train_file="train.tsv", validation_file="dev.tsv",
                                        test_file="test.tsv")).load()
    for split in ("train", "validation", "test"):
        assert [(e.inputs, e.target) for e in getattr(lines, split)] == [(e.inputs, e.target)
                                                                       for e in getattr(tsv, split)]
    phrases = SentimentTask(SentimentConfig(data_dir=DATA, include_phrases=True))
    assert len(phrases.load().train) > len(lines.train)  # the CRLF phrase file adds its rows
    assert "phrases/train.tsv" in phrases.notes["training_data"]


def test_translation_aligned_files_and_headed_tsv_pairs_are_the_same_pairs() -> None:
    aligned = TranslationTask(TranslationConfig(data_dir=DATA)).load()
    tsv = TranslationTask(TranslationConfig(data_dir=DATA, pairs_files={
        "train": "train.tsv", "validation": "val.tsv", "test": "test2016.tsv"})).load()
    for split in ("train", "validation", "test"):
        assert [e.reference for e in getattr(aligned, split)] == [e.reference for e in getattr(tsv, split)]
    first = (FIXTURES / "data" / "multi30k" / "train.en").read_text(encoding="utf-8").splitlines()[0]
    assert aligned.train[0].reference == first


def test_music_reads_the_piano_roll_json() -> None:
    data = MusicTask(MusicConfig(data_dir=DATA)).load()
    document = json.loads((FIXTURES / "data" / "polyphonic-music" / "JSB_Chorales.json").read_text())
    assert [len(data.train), len(data.validation), len(data.test)] == [len(document[k])
                                                                      for k in ("train", "valid", "test")]
    assert data.test[0].inputs[0] == [note - 21 for note in document["test"][0][0]]
