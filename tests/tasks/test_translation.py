"""The translation task: readers, splits, vocabularies, caching, bad data, and sacreBLEU with its signature."""

from __future__ import annotations

import math

import pytest
import sacrebleu
from pydantic import ValidationError

from harness.core.errors import BadInputError, ConfigError
from harness.core.vocab import Vocabulary
from harness.plugins.tasks.translation import TranslationConfig, TranslationTask


def task(**options) -> TranslationTask:
    return TranslationTask(TranslationConfig(**options))


def write_pairs(path, count: int, *, header: str | None = None) -> None:
    lines = ([header] if header else []) + [f"Satz {i} ist hier.\tSentence {i} is here." for i in range(count)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def references(examples) -> list[str]:
    return [example.reference for example in examples]


# Readers --------------------------------------------------------------------


def test_multi30k_pairs_are_line_aligned_and_keep_the_raw_reference(real_data) -> None:
    real_data_dir = real_data("multi30k")
    translation = task(max_pairs=40, min_freq=1)
    data = translation.load()
    assert [len(data.train), len(data.validation), len(data.test)] == [40, 40, 40]
    first = data.train[0]
    assert first.reference == "Two young, White males are outside near many bushes."
    assert " ".join(data.output_vocab.decode(first.target)) == "two young , white males are outside near many bushes ."
    assert data.input_vocab.decode(first.inputs)[:4] == ["zwei", "junge", "weiße", "männer"]
    assert data.test[0].reference == (real_data_dir / "multi30k" / "test2016.en").read_text().split("\n")[0]
    assert "first 40 pairs of each split" in translation.notes["data"]
    assert "lower-cased" in translation.notes["tokenization"]


def test_tsv_pairs_ignore_extra_columns_and_a_header_says_which_column_is_which(tmp_path) -> None:
    pairs = tmp_path / "pairs.tsv"
    lines = ["id\ten\tde", *(f"{i}\tDog {i} barks.\tHund {i} bellt." for i in range(10))]
    pairs.write_text("\n".join(lines) + "\n")
    other = tmp_path / "plain.tsv"
    other.write_text("Ein Hund.\tA dog.\tignored\textra\n" * 3)
    data = task(pairs_files={"train": str(pairs), "validation": str(other), "test": str(other)}, min_freq=1).load()
    assert references(data.train) == [f"Dog {i} barks." for i in range(10)]
    assert data.input_vocab.decode(data.train[3].inputs) == ["hund", "3", "bellt", "."]
    assert references(data.validation) == ["A dog."] * 3


def test_a_single_pairs_file_is_split_the_same_way_for_the_same_seed(tmp_path) -> None:
    write_pairs(tmp_path / "pairs.tsv", 200, header="de\ten")
    first = task(pairs_file=str(tmp_path / "pairs.tsv")).load()
    again = task(pairs_file=str(tmp_path / "pairs.tsv")).load()
    other = task(pairs_file=str(tmp_path / "pairs.tsv"), split_seed=1).load()
    assert [len(first.train), len(first.validation), len(first.test)] == [160, 20, 20]
    for split in ("train", "validation", "test"):
        assert references(getattr(first, split)) == references(getattr(again, split))
    assert references(first.test) != references(other.test)
    every = references(first.train) + references(first.validation) + references(first.test)
    assert sorted(every) == sorted(f"Sentence {i} is here." for i in range(200))  # disjoint, nothing lost
    splitter = task(pairs_file=str(tmp_path / "pairs.tsv"))
    splitter.load()
    assert "split_seed 0" in splitter.notes["split"] and "200 training pairs" in splitter.notes["split"]


def test_aligned_files_without_validation_and_test_stems_draw_them_from_train(tmp_path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "all.fr").write_text("".join(f"Une phrase {i}.\n" for i in range(50)))
    (folder / "all.en").write_text("".join(f"A sentence {i}.\n" for i in range(50)))
    data = task(data_dir=str(tmp_path), subfolder="corpus", source_lang="fr", target_lang="en", train_stem="all",
                validation_stem=None, test_stem=None, validation_fraction=0.2, test_fraction=0.2).load()
    assert [len(data.train), len(data.validation), len(data.test)] == [30, 10, 10]


def test_a_hub_dataset_folder_is_processed_like_files(tmp_path) -> None:
    folder = tmp_path / "hub"
    folder.mkdir()
    rows = [f'"Cat {i} sleeps.","Katze {i} schläft."\n' for i in range(30)]
    (folder / "train.csv").write_text("en,de\n" + "".join(rows))
    (folder / "test.csv").write_text("en,de\n" + "".join(rows[:2]))
    hub = task(hub_dataset=str(folder), min_freq=1)
    data = hub.load()
    assert len(data.test) == 2 and len(data.validation) == 3 and len(data.train) == 27  # validation drawn
    assert data.input_vocab.decode(data.test[1].inputs) == ["katze", "1", "schläft", "."]
    assert "validation 10%" in hub.notes["split"]
    with pytest.raises(ConfigError, match="no 'fr' and 'en' columns .*found en, de"):
        task(hub_dataset=str(folder), source_lang="fr").load()


def test_vocabularies_keep_tokens_seen_min_freq_times_and_at_most_k(tmp_path) -> None:
    pairs = tmp_path / "p.tsv"
    pairs.write_text("a a a b b c\tx x x y y z\n" * 1 + "a\tx\n")
    data = task(pairs_files={s: str(pairs) for s in ("train", "validation", "test")}, min_freq=2).load()
    assert data.input_vocab.tokens == ["<PAD>", "<UNK>", "<BOS>", "<EOS>", "a", "b"]
    data = task(pairs_files={s: str(pairs) for s in ("train", "validation", "test")}, min_freq=1,
                max_vocab_size=1).load()
    assert data.output_vocab.tokens[4:] == ["x"] and data.output_vocab.encode(["z"]) == [data.output_vocab.unk_id]


def test_the_second_load_reads_the_cache_instead_of_tokenizing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    write_pairs(tmp_path / "pairs.tsv", 30)
    first = task(pairs_file=str(tmp_path / "pairs.tsv"), min_freq=1).load()

    def refuse(self, text, lang):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(TranslationTask, "_tokens", refuse)
    second = task(pairs_file=str(tmp_path / "pairs.tsv"), min_freq=1, beam_size=4).load()  # decoding: same key
    assert [e.inputs for e in second.train] == [e.inputs for e in first.train]
    with open(tmp_path / "pairs.tsv", "a") as handle:  # an edited file is processed afresh
        handle.write("Neu.\tNew.\n")
    with pytest.raises(AssertionError, match="tokenized again"):
        task(pairs_file=str(tmp_path / "pairs.tsv"), min_freq=1).load()


def test_the_source_tokenizer_lowercases_as_in_training_and_the_detokenizer_rejoins() -> None:
    translation = task()
    assert translation.tokenize("Zwei Männer, ein „Hund“.") == ["zwei", "männer", ",", "ein", '"', "hund", '"', "."]
    assert translation.detokenize(["<BOS>", "a", "dog", "'s", "ball", ",", "<UNK>", "."]) == "a dog's ball, <UNK>."
    assert task(lowercase=False).tokenize("Ein Hund") == ["Ein", "Hund"]


# Bad data -------------------------------------------------------------------


def test_source_and_target_files_of_different_lengths_name_both_files_and_counts(tmp_path) -> None:
    folder = tmp_path / "multi30k"
    folder.mkdir()
    for stem in ("train", "val", "test2016"):
        (folder / f"{stem}.de").write_text("Ein Hund.\nEine Katze.\n")
        (folder / f"{stem}.en").write_text("A dog.\nA cat.\n")
    (folder / "val.en").write_text("A dog.\nA cat.\nA bird.\n")
    with pytest.raises(BadInputError) as error:
        task(data_dir=str(tmp_path)).load()
    message = str(error.value)
    assert f"{folder / 'val.de'} has 2 lines but {folder / 'val.en'} has 3" in message
    assert error.value.exit_code == 2


def test_a_tsv_line_without_a_tab_names_file_and_line(tmp_path) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("Ein Hund.\tA dog.\nEine Katze. A cat.\n")
    with pytest.raises(BadInputError, match=rf"{pairs}:2: expected source<TAB>target, found no tab"):
        task(pairs_file=str(pairs)).load()


def test_invalid_utf8_names_file_and_line(tmp_path) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_bytes("Ein Hund.\tA dog.\n".encode() * 2 + b"Eine Katze\xff.\tA cat.\n")
    with pytest.raises(BadInputError, match=rf"{pairs}:3: invalid UTF-8"):
        task(pairs_file=str(pairs)).load()


def test_an_empty_split_and_an_empty_sentence_are_refused_with_their_file(tmp_path) -> None:
    good, empty = tmp_path / "good.tsv", tmp_path / "empty.tsv"
    write_pairs(good, 5)
    empty.write_text("")
    with pytest.raises(BadInputError, match=rf"the test split of .*{empty}.* has no sentence pairs"):
        task(pairs_files={"train": str(good), "validation": str(good), "test": str(empty)}).load()
    blank = tmp_path / "blank.tsv"
    blank.write_text("Ein Hund.\tA dog.\n \tA cat.\n")
    with pytest.raises(BadInputError, match=rf"{blank}:2: empty source sentence"):
        task(pairs_file=str(blank)).load()


def test_conflicting_or_incomplete_data_options_are_config_errors(tmp_path, monkeypatch) -> None:
    with pytest.raises(ValidationError, match="give one data source, not pairs_file and hub_dataset"):
        TranslationConfig(pairs_file="a.tsv", hub_dataset="bentrevett/multi30k")
    with pytest.raises(ValidationError, match="pairs_files needs exactly train, validation and test"):
        TranslationConfig(pairs_files={"train": "a.tsv"})
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    with pytest.raises(ConfigError, match="HARNESS_DATA_DIR"):
        task().load()
    with pytest.raises(ConfigError, match="does not exist"):
        task(pairs_file=str(tmp_path / "missing.tsv")).load()


# BLEU -----------------------------------------------------------------------


def test_bleu_is_sacrebleu_on_the_same_strings_and_records_its_signature() -> None:
    hypotheses = ["a man rides a bike.", "two dogs play in the snow.", "a woman is singing."]
    references_ = ["A man is riding a bike.", "Two dogs play in the snow.", "A woman sings on stage."]
    translation = task()
    scores = translation.bleu(hypotheses, references_)
    expected = sacrebleu.corpus_bleu(hypotheses, [references_], lowercase=True)
    assert scores["bleu"] == pytest.approx(expected.score) and 0 < scores["bleu"] < 100
    assert translation.notes["bleu_signature"] == "nrefs:1|case:lc|eff:no|tok:13a|smooth:exp|version:" + \
        sacrebleu.__version__
    cased = task(lowercase=False)
    assert cased.bleu(hypotheses, references_)["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(hypotheses, [references_]).score)
    assert "case:mixed" in cased.notes["bleu_signature"]


def test_evaluate_detokenizes_the_decoded_ids_before_scoring(tmp_path) -> None:
    pairs = tmp_path / "p.tsv"
    pairs.write_text("Ein Mann fährt ein Fahrrad.\tA man rides a bike.\nZwei Hunde spielen.\tTwo dogs play.\n")
    translation = task(pairs_files={s: str(pairs) for s in ("train", "validation", "test")}, min_freq=1)
    data = translation.load()
    vocab: Vocabulary = data.output_vocab
    perfect = translation.evaluate([e.target for e in data.test], data.test)
    assert perfect["bleu"] == pytest.approx(100.0)
    partial = [vocab.encode(["a", "man", "rides", "."]), vocab.encode(["two", "dogs", "play", "."])]
    expected = sacrebleu.corpus_bleu(["a man rides.", "two dogs play."], [references(data.test)], lowercase=True)
    assert translation.evaluate(partial, data.test)["bleu"] == pytest.approx(expected.score)
    assert math.isfinite(translation.evaluate([[], []], data.test)["bleu"])
