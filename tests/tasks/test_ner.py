"""The ner task: CoNLL reader, tag schemes, seqeval strict scoring by hand, cache, hub rows, a real run."""

from __future__ import annotations

import csv
import math
import os
import sqlite3
from pathlib import Path

import pytest
from forked_harness import harness_run

from harness.core.errors import BadInputError, ConfigError
from harness.core.loading import load_plugins
from harness.core.tasks import EmptySplitError
from harness.plugins.tasks.ner import (
    NerConfig,
    NerTask,
    Sentence,
    check_scheme,
    detect_scheme,
    read_conll,
    score_entities,
    to_iob2,
)

PRESET = Path(__file__).parents[2] / "experiments" / "reproduce" / "ma_hovy2016_conll_bilstm.yaml"

#: Columns: token, POS, gold tag (IOB1), predicted tag (IOB1). Entities counted by hand:
#:   gold      PER "John Smith", PER "Mary" (B- after I-PER: a second entity), LOC "New York",
#:             ORG "Reuters", PER "Paris", LOC "London" (I-LOC after I-PER: a new entity)   = 6
#:   predicted PER "John Smith Mary" (wrong span), LOC "New", ORG "York" (I-ORG after I-LOC),
#:             ORG "Reuters" ✓, PER "Paris" ✓, LOC "London" ✓, MISC "today"               = 7, 3 right
HAND_COUNTED = """-DOCSTART- -X- O O

John NNP I-PER I-PER
Smith NNP I-PER I-PER
Mary NNP B-PER I-PER
visited VBD O O
New NNP I-LOC I-LOC
York NNP I-LOC I-ORG
. . O O
   \t
Reuters NNP I-ORG I-ORG
said VBD O O
Paris NNP I-PER I-PER
London NNP I-LOC I-LOC
today NN O I-MISC
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def conll_folder(root: Path, train: str, validation: str | None = None, test: str | None = None) -> Path:
    """``root/conll2003/eng.{train,testa,testb}``; returns ``root`` (the task's data_dir)."""
    folder = root / "conll2003"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("eng.train", train), ("eng.testa", validation or train), ("eng.testb", test or train)):
        write(folder / name, text)
    return root


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def conll(real_data) -> Path:
    """The folder that contains the full CoNLL-2003 (skips without it; tests/real_data.py)."""
    return real_data("conll2003")


def test_registered_as_a_tagging_task_ranked_by_f1() -> None:
    assert load_plugins().tasks.get("ner") is NerTask
    assert NerTask.family == "tagging" and NerTask.primary_metric == "f1" and NerTask.higher_is_better


# Reader ---------------------------------------------------------------------


def test_reader_skips_docstart_and_breaks_sentences_at_whitespace_only_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "eng.train", HAND_COUNTED)
    sentences = read_conll(path, tag_column=2)
    assert [s.tokens for s in sentences] == [["John", "Smith", "Mary", "visited", "New", "York", "."],
                                             ["Reuters", "said", "Paris", "London", "today"]]
    assert sentences[0].tags == ["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-LOC", "O"]
    assert read_conll(path)[1].tags == ["I-ORG", "O", "I-PER", "I-LOC", "I-MISC"]  # default: the last column
    assert [sentences[0].where(0), sentences[1].where(4)] == [f"{path}:3", f"{path}:15"]


def test_tab_separated_two_column_files_read_the_same(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "EU\tB-ORG\nrejects\tO\n\n\nGerman\tB-MISC\n")
    assert [(s.tokens, s.tags) for s in read_conll(path)] == [(["EU", "rejects"], ["B-ORG", "O"]),
                                                              (["German"], ["B-MISC"])]


@pytest.mark.parametrize(("text", "options", "line", "message"), [
    pytest.param("EU NNP I-NP I-ORG\nrejects VBZ I-VP\n", {}, 2, "3 columns where line 1 has 4: is the tag column",
                 id="tag-column-missing"),
    pytest.param("EU NNP I-ORG\nrejects\n", {}, 2, "no tag column", id="one-column"),
    pytest.param("EU NNP I-NP I-ORG\n", {"tag_column": 4}, 1, "no tag column (tag_column 4", id="tag-column-beyond"),
    pytest.param("\n\nEU NNP I-NP PER\n", {}, 3, "invalid tag 'PER'", id="invalid-tag"),
    pytest.param("EU NNP I-NP I-ORG\nrejects VBZ I-VP X-ORG\n", {}, 2, "invalid tag 'X-ORG'", id="bad-prefix"),
])
def test_bad_lines_name_file_and_line(tmp_path: Path, text: str, options: dict, line: int, message: str) -> None:
    path = write(tmp_path / "eng.train", text)
    with pytest.raises(BadInputError) as error:
        read_conll(path, **options)
    assert f"{path}:{line}: " in str(error.value) and message in str(error.value)
    assert error.value.exit_code == 2


def test_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "eng.train"
    path.write_bytes(b"EU NNP I-NP I-ORG\n\nM\xfcller NNP I-NP I-PER\n")
    with pytest.raises(BadInputError, match=rf"{path}:3: invalid UTF-8"):
        read_conll(path)


def test_an_empty_split_is_an_error_naming_the_file(tmp_path: Path, cache_dir: Path) -> None:
    root = conll_folder(tmp_path, HAND_COUNTED, validation="-DOCSTART- -X- O O\n\n  \n")
    with pytest.raises(EmptySplitError, match=r"eng.testa has no sentences for the validation split"):
        NerTask(NerConfig(data_dir=str(root), tag_column=2)).load()


def test_missing_data_folder_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    with pytest.raises(ConfigError, match="HARNESS_DATA_DIR"):
        NerTask().load()
    with pytest.raises(ConfigError, match="must contain conll2003/"):
        NerTask(NerConfig(data_dir=str(tmp_path))).load()


# Tag schemes ----------------------------------------------------------------


def sentence(*tags: str) -> Sentence:
    return Sentence([f"w{i}" for i in range(len(tags))], list(tags), lambda i: f"here:{i + 1}")


def test_scheme_detection() -> None:
    assert detect_scheme([sentence("B-PER", "I-PER", "O", "B-LOC")]) == "IOB2"
    assert detect_scheme([sentence("B-PER", "I-PER"), sentence("O", "I-LOC")]) == "IOB1"  # I- after O
    assert detect_scheme([sentence("I-PER", "O")]) == "IOB1"  # I- at the sentence start
    assert detect_scheme([sentence("B-PER", "I-LOC")]) == "IOB1"  # I- of another type
    assert detect_scheme([sentence("B-PER", "E-PER", "S-LOC")]) == "IOBES"


def test_iob1_to_iob2_by_hand() -> None:
    assert to_iob2(["I-PER", "I-PER", "B-PER"], "IOB1") == ["B-PER", "I-PER", "B-PER"]  # two entities
    assert to_iob2(["I-PER", "I-LOC", "O", "I-ORG", "I-ORG"], "IOB1") == ["B-PER", "B-LOC", "O", "B-ORG", "I-ORG"]
    assert to_iob2(["O", "I-MISC", "B-MISC", "I-MISC"], "IOB1") == ["O", "B-MISC", "B-MISC", "I-MISC"]
    assert to_iob2(["S-PER", "B-LOC", "I-LOC", "E-LOC", "O"], "IOBES") == ["B-PER", "B-LOC", "I-LOC", "I-LOC", "O"]
    assert to_iob2(["B-PER", "I-PER", "O"], "IOB2") == ["B-PER", "I-PER", "O"]


@pytest.mark.parametrize(("scheme", "tags", "at", "message"), [
    ("IOB2", ("B-PER", "O", "I-PER"), 3, "I-PER begins an entity after O, which IOB2 does not allow (the file looks"),
    ("IOB2", ("I-PER",), 1, "I-PER begins an entity after the sentence start"),
    ("IOB1", ("B-PER", "E-PER"), 2, "E-PER is an IOBES tag"),
    ("IOBES", ("B-PER", "O"), 1, "B-PER is not followed by I-/E-PER"),
    ("IOBES", ("O", "E-LOC"), 2, "E-LOC does not continue a B-/I-LOC"),
])
def test_a_declared_scheme_the_tags_break_names_the_line(scheme: str, tags: tuple, at: int, message: str) -> None:
    with pytest.raises(BadInputError, match=rf"^here:{at}: {message}".replace("(", r"\(")):
        check_scheme([sentence(*tags)], scheme)


def test_declaring_iob2_for_conll_style_iob1_files_is_refused_at_the_line(tmp_path: Path, cache_dir: Path) -> None:
    root = conll_folder(tmp_path, HAND_COUNTED)
    with pytest.raises(BadInputError, match=r"eng.train:3: I-PER begins an entity"):
        NerTask(NerConfig(data_dir=str(root), scheme="IOB2")).load()


# Scoring ----------------------------------------------------------------------


def test_strict_scores_equal_the_hand_count_including_iob1_cases(tmp_path: Path) -> None:
    path = write(tmp_path / "eng.testb", HAND_COUNTED)
    gold = [to_iob2(s.tags, "IOB1") for s in read_conll(path, tag_column=2)]
    predicted = [to_iob2(s.tags, "IOB1") for s in read_conll(path, tag_column=3)]
    assert gold == [["B-PER", "I-PER", "B-PER", "O", "B-LOC", "I-LOC", "O"], ["B-ORG", "O", "B-PER", "B-LOC", "O"]]
    metrics = score_entities(gold, predicted)
    precision, recall = 3 / 7, 3 / 6  # 3 right of 7 predicted, of 6 gold entities
    assert metrics["precision"] == pytest.approx(precision)
    assert metrics["recall"] == pytest.approx(recall)
    assert metrics["f1"] == pytest.approx(2 * precision * recall / (precision + recall))  # 6/13
    # per type (right / predicted / gold): PER 1/2/3, LOC 1/2/2, ORG 1/2/1, MISC 0/1/0
    assert metrics["f1/PER"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert metrics["f1/LOC"] == pytest.approx(1 / 2)
    assert metrics["f1/ORG"] == pytest.approx(2 * (1 / 2) * 1 / (1 / 2 + 1))
    assert metrics["f1/MISC"] == 0.0
    assert metrics["f1_conlleval"] == pytest.approx(metrics["f1"])  # valid IOB2 both ways: the modes agree


def test_an_i_tag_after_o_is_no_entity_in_strict_mode_but_one_in_conlleval() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    predicted = [["O", "I-PER", "O", "B-LOC"]]
    metrics = score_entities(gold, predicted)
    # strict: predicted {LOC}: P 1/1, R 1/2; conlleval also predicts PER "w1": P 1/2, R 1/2.
    assert (metrics["precision"], metrics["recall"]) == (1.0, 0.5)
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["f1_conlleval"] == pytest.approx(1 / 2)


def test_task_evaluate_decodes_tag_ids_and_records_how_it_scored(tmp_path: Path, cache_dir: Path) -> None:
    root = conll_folder(tmp_path, HAND_COUNTED)
    task = NerTask(NerConfig(data_dir=str(root), tag_column=2))
    data = task.load()
    assert data.output_vocab.tokens == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert task.evaluate([e.target for e in data.test], data.test)["f1"] == 1.0
    wrong = [list(e.target) for e in data.test]
    wrong[1][3] = data.output_vocab.id("O")  # drop "London": 5 of 6 found, none wrong
    assert task.evaluate(wrong, data.test)["f1"] == pytest.approx(2 * 5 / 6 / (1 + 5 / 6))
    assert task.notes["tags"].startswith("IOB1 in the data (detected), converted to IOB2; scored with seqeval "
                                         "strict mode, scheme IOB2")
    assert "begins no entity" in task.notes["invalid_predictions"]
    assert data.info["train_entities"] == 6 and data.info["tag_scheme_in_data"] == "IOB1"


# Vocabulary, normalisation, cache ---------------------------------------------------


def test_vocabulary_is_the_k_most_frequent_training_words(tmp_path: Path, cache_dir: Path) -> None:
    train = "a O\na O\na O\nb O\nb O\nc O\n\nAb1 B-PER\n"
    root = conll_folder(tmp_path, train, test="zz O\nAB7 B-PER\n")
    task = NerTask(NerConfig(data_dir=str(root), vocab_size=2))
    data = task.load()
    assert data.input_vocab.tokens == ["<PAD>", "<UNK>", "<BOS>", "<EOS>", "a", "b"]
    assert data.input_vocab.decode(data.train[0].inputs) == ["a", "a", "a", "b", "b", "<UNK>"]
    assert "100.0% of test tokens are <UNK>" in task.notes["vocabulary"]
    normalised = NerTask(NerConfig(data_dir=str(root), lowercase=True, digits_to_zero=True))
    folded = normalised.load()
    assert folded.input_vocab.decode(folded.test[0].inputs) == ["<UNK>", "ab0"]  # "AB7" read as "ab0"
    assert normalised.tokenize("Ab1 AB7") == ["ab0", "ab0"]
    assert "lowercased, digits as 0" in normalised.notes["vocabulary"]


def test_the_second_load_is_served_from_the_cache_and_an_edit_rebuilds(tmp_path: Path, cache_dir: Path) -> None:
    root = conll_folder(tmp_path, HAND_COUNTED)
    first = NerTask(NerConfig(data_dir=str(root), tag_column=2))
    loaded = first.load()
    assert (first.cache.builds, first.cache.hits) == (1, 0)
    second = NerTask(NerConfig(data_dir=str(root), tag_column=2))
    again = second.load()
    assert (second.cache.builds, second.cache.hits) == (0, 1)
    assert [e.inputs for e in again.train] == [e.inputs for e in loaded.train]
    assert [e.target for e in again.test] == [e.target for e in loaded.test]
    write(root / "conll2003" / "eng.testb", HAND_COUNTED.replace("today NN O", "today NN I-MISC"))
    third = NerTask(NerConfig(data_dir=str(root), tag_column=2))
    assert third.load().info["test_entities"] == 7 and third.cache.builds == 1


# Hub rows -----------------------------------------------------------------------------


def test_hub_rows_with_classlabel_ids_give_the_same_data_as_the_files(tmp_path: Path, cache_dir: Path) -> None:
    import datasets

    files = NerTask(NerConfig(data_dir=str(conll_folder(tmp_path / "files", HAND_COUNTED)), tag_column=2)).load()
    names = ["O", "I-PER", "B-PER", "I-LOC", "I-ORG"]
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    rows = {"tokens": [["John", "Smith", "Mary", "visited", "New", "York", "."],
                       ["Reuters", "said", "Paris", "London", "today"]],
            "ner_tags": [[1, 1, 2, 0, 3, 3, 0], [4, 0, 1, 3, 0]]}
    folder = tmp_path / "hub"
    folder.mkdir()
    for split in ("train", "validation", "test"):
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / f"{split}.parquet"))
    task = NerTask(NerConfig(hub_dataset=str(folder)))
    hub = task.load()
    assert task.notes["tags"].startswith("IOB1 in the data (detected)")
    assert hub.output_vocab.tokens == files.output_vocab.tokens
    assert [e.target for e in hub.test] == [e.target for e in files.test]
    assert hub.input_vocab.tokens == files.input_vocab.tokens
    with pytest.raises(ConfigError, match="no column 'labels'.*hub_tag_column"):
        NerTask(NerConfig(hub_dataset=str(folder), hub_tag_column="labels")).load()


# Real data -----------------------------------------------------------------------------


def test_conll2003_has_the_published_sizes_and_is_detected_as_iob1(conll: Path) -> None:
    task = NerTask(NerConfig(data_dir=str(conll)))
    info = task.load().info
    # DATASET.md (= the shared-task paper): sentences, tokens and IOB1 entity chunks per split.
    assert [info[f"{s}_sentences"] for s in ("train", "validation", "test")] == [14041, 3250, 3453]
    assert [info[f"{s}_tokens"] for s in ("train", "validation", "test")] == [203621, 51362, 46435]
    assert [info[f"{s}_entities"] for s in ("train", "validation", "test")] == [23499, 5942, 5648]
    assert info["tag_scheme_in_data"] == "IOB1"


def test_a_conll2003_slice_trains_end_to_end_and_records_f1_and_the_scheme_note(conll: Path, tmp_path: Path) -> None:
    write(tmp_path / "ner.yaml",
          "# A CoNLL-2003 slice, one epoch: harness run ner.yaml\n"
          "cells: [lstm]\n"
          "tasks: [{name: ner, options: {max_sentences: 300, vocab_size: 3000}}]\n"
          "seeds: [0]\n"
          "model: {embedding_size: 16, hidden_size: 16, bidirectional: true, dropout: 0.5}\n"
          "training: {max_epochs: 1, batch_size: 16, learning_rate: 0.01, cpu_threads: 1}\n"
          "device: cpu\n")
    env = {**os.environ, "HARNESS_DATA_DIR": str(conll), "HARNESS_CACHE_DIR": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    result = harness_run(["run", "ner.yaml", "--quiet"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    (row,) = csv.DictReader((tmp_path / "reports" / "ner" / "results.csv").open())
    assert row["status"] == "FINISHED"
    for name in ("test_f1", "test_precision", "test_recall", "test_f1_conlleval", "test_token_accuracy"):
        assert math.isfinite(float(row[name])) and 0.0 <= float(row[name]) <= 1.0, (name, row[name])
    with sqlite3.connect(tmp_path / "runs" / "ner" / "mlflow.db") as db:
        tags = dict(db.execute("select key, value from tags"))
        metrics = {key for (key,) in db.execute("select distinct key from metrics")}
    assert tags["harness.note.tags"].startswith("IOB1 in the data (detected), converted to IOB2")
    assert tags["harness.note.slice"] == "first 300 sentences of each split"
    assert {"test_f1/PER", "test_f1/LOC", "test_f1/ORG", "test_f1/MISC", "val_f1"} <= metrics


def test_the_preset_is_valid_and_says_what_it_reproduces() -> None:
    from harness.experiment import load_experiment
    from harness.runs.grid import expand_grid

    loaded = load_experiment(PRESET)
    experiment = loaded.experiment
    specs = expand_grid(loaded, load_plugins())
    assert {s.hidden_size for s in specs} == {200}  # Ma & Hovy: state size 200 per direction
    model = experiment.model
    assert (model.embedding_size, model.bidirectional, model.dropout, model.num_layers) == (100, True, 0.5, 1)
    assert experiment.training.gradient_clip_norm == 5.0 and experiment.training.early_stopping is not None
    reference = experiment.reference
    assert reference.metrics == ["test_f1", "test_f1_conlleval"]
    assert reference.results["conll2003"]["lstm"] == [0.87, 0.87]  # Ma & Hovy Table 3, BLSTM
    assert reference.results["conll2003"]["vanilla"] == [0.8544, 0.8544]  # Table 3, BRNN
    assert reference.results["conll2003"]["gru"] == [None, None]
