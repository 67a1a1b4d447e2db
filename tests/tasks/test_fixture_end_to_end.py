"""Every real task end to end on the small fixtures (tests/fixtures/data), no full data set needed.

One `harness run` (a subprocess, the real command line) trains word_lm, char_lm, sentiment, ner,
translation and music on their fixtures; then `harness evaluate`, `score`, `sample` and `translate`
(in this process, through the same click commands) use the runs. Each trained model must beat a
baseline computed here from the fixture files: the unigram model, the majority class, the all-O
tagger, copying the source sentence, independent per-key note frequencies.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from forked_harness import harness_run

from harness.cli.main import cli
from harness.data.midi import read_midi

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"
TASKS = ("word_lm", "char_lm", "sentiment", "ner", "translation", "music")
EXPERIMENT = """\
# Every real task on the test fixtures, tiny models: harness run fixtures.yaml
cells: [gru]
tasks: [{tasks}]
seeds: [0]
model: {{hidden_size: 32, embedding_size: 16}}
training: {{max_epochs: 5, batch_size: 8, bptt_steps: 25, learning_rate: 0.03, cpu_threads: 1}}
device: cpu
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, str]]]:
    """The folder of the one `harness run` and its results.csv rows by task."""
    folder = tmp_path_factory.mktemp("fixtures")
    tasks = ", ".join(f"{{name: {name}, options: {{data_dir: '{FIXTURES}'}}}}" for name in TASKS)
    (folder / "fixtures.yaml").write_text(EXPERIMENT.format(tasks=tasks))
    env = {**os.environ, "HARNESS_CACHE_DIR": str(folder / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("HARNESS_DATA_DIR", None)  # the experiment names its data folder itself
    result = harness_run(["run", "fixtures.yaml", "--quiet"], cwd=folder,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = {row["task"]: row for row in csv.DictReader((folder / "reports" / "fixtures" / "results.csv").open())}
    return folder, rows


def harness(folder: Path, *args: str) -> Result:
    """``harness ARGS`` in this process (a subprocess would mostly spend its time importing), run in ``folder``."""
    with contextlib.chdir(folder):
        result = CliRunner().invoke(cli, list(args), env={"HARNESS_CACHE_DIR": str(folder / "cache")})
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def evaluated(folder: Path, row: dict[str, str], *sets: str) -> dict[str, float]:
    options = [part for option in sets for part in ("--set", option)]
    return json.loads(harness(folder, "evaluate", row["path"], "--json", *options).stdout)["metrics"]


def lines(relative: str) -> list[str]:
    return (FIXTURES / relative).read_text(encoding="utf-8").splitlines()


def test_every_real_task_trains_and_is_tested_on_its_fixture(runs) -> None:
    _, rows = runs
    assert set(rows) == set(TASKS) and all(row["status"] == "FINISHED" for row in rows.values())


@pytest.mark.parametrize(("task", "metric"), [("word_lm", "perplexity"), ("char_lm", "bits_per_character"),
                                              ("sentiment", "accuracy"), ("ner", "f1"), ("translation", "bleu"),
                                              ("music", "nll")])
def test_evaluate_reproduces_the_recorded_test_metric(runs, task: str, metric: str) -> None:
    folder, rows = runs
    assert evaluated(folder, rows[task])[metric] == pytest.approx(float(rows[task][f"test_{metric}"]), rel=1e-5)


# Language models -----------------------------------------------------------------


def unigram_perplexity(train: list[str], test: list[str]) -> float:
    """exp of the mean NLL of the test tokens under add-one training frequencies (context ignored)."""
    counts = Counter(train)
    total, types = len(train), len(counts) + 1
    return math.exp(-sum(math.log((counts[t] + 1) / (total + types)) for t in test) / len(test))


def test_word_lm_beats_the_unigram_model_and_prefers_grammar_to_word_salad(runs) -> None:
    folder, rows = runs
    words = {split: [w for line in lines(f"ptb/ptb.{split}.txt") for w in [*line.split(), "<eos>"]]
             for split in ("train", "test")}
    baseline = unigram_perplexity(words["train"], words["test"])
    assert float(rows["word_lm"]["test_perplexity"]) < baseline / 2
    scored = harness(folder, "score", rows["word_lm"]["path"], "the dog barks today", "today barks dog the")
    grammatical, salad = (float(line.split()[0]) for line in scored.stdout.splitlines())
    assert grammatical > salad + 5  # log P in nats
    samples = harness(folder, "sample", rows["word_lm"]["path"], "--count", "3", "--length", "8",
                      "--prime", "the dog", "--reject-unk").stdout.splitlines()
    assert len(samples) == 3 and all(s.startswith("the dog") and "<UNK>" not in s for s in samples)


def test_char_lm_beats_character_frequencies_and_samples_from_a_prime(runs) -> None:
    folder, rows = runs
    text = (FIXTURES / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    baseline_bits = math.log2(unigram_perplexity(list(text[: int(len(text) * 0.9)]),
                                                 list(text[int(len(text) * 0.95):])))
    assert float(rows["char_lm"]["test_bits_per_character"]) < baseline_bits / 2
    result = harness(folder, "sample", rows["char_lm"]["path"], "--count", "2", "--length", "30", "--prime", "ROMEO:")
    texts = [part.split("-----\n", 1)[1] for part in result.stdout.split("----- sample ")[1:]]
    assert len(texts) == 2 and all(text.startswith("ROMEO:") for text in texts)
    scored = harness(folder, "score", rows["char_lm"]["path"], "JULIET:", "J:TLIEU")
    ordered, scrambled = (float(line.split()[0]) for line in scored.stdout.splitlines())
    assert ordered > scrambled and "(7 tokens)" in scored.stdout


# Sentences -----------------------------------------------------------------------


def test_sentiment_beats_the_majority_class_and_reads_the_tsv_copies_alike(runs) -> None:
    folder, rows = runs
    labels = Counter(line.split()[0] for line in lines("sst2/stsa.binary.test"))
    majority = max(labels.values()) / sum(labels.values())
    assert float(rows["sentiment"]["test_accuracy"]) > majority + 0.2
    # The GLUE-style TSV files hold the same rows (sentence, label): same vocabulary, same metrics.
    tsv = evaluated(folder, rows["sentiment"], "train_file=train.tsv", "validation_file=dev.tsv",
                    "test_file=test.tsv")
    assert tsv == evaluated(folder, rows["sentiment"])


def test_ner_finds_the_entities_the_all_o_tagger_misses(runs) -> None:
    folder, rows = runs
    # Tagging every token O finds no entity: F1 0. The trained tagger finds most, with type and boundaries.
    assert float(rows["ner"]["test_f1"]) > 0.8
    metrics = evaluated(folder, rows["ner"])
    assert {"f1/PER", "f1/LOC", "f1/ORG", "f1/MISC"} <= set(metrics)


def test_translation_beats_copying_the_source_and_translates_new_text(runs) -> None:
    from sacrebleu.metrics import BLEU

    folder, rows = runs
    sources, references = lines("multi30k/test2016.de"), lines("multi30k/test2016.en")
    copy = BLEU(lowercase=True).corpus_score(sources, [references]).score
    assert float(rows["translation"]["test_bleu"]) > copy + 20
    with contextlib.chdir(folder):  # the sentences on stdin, one per line
        translated = CliRunner().invoke(cli, ["translate", rows["translation"]["path"]], input="\n".join(sources))
    assert translated.exit_code == 0, translated.output
    outputs = translated.stdout.splitlines()
    assert len(outputs) == len(sources)
    assert BLEU(lowercase=True).corpus_score(outputs, [references]).score > copy + 20
    # The same pairs as TSV files with an id<TAB>en<TAB>de header: read by the header's names, same BLEU.
    tsv = evaluated(folder, rows["translation"],
                    "pairs_files={train: train.tsv, validation: val.tsv, test: test2016.tsv}")
    assert tsv["bleu"] == pytest.approx(float(rows["translation"]["test_bleu"]), rel=1e-6)


# Music ---------------------------------------------------------------------------


def independent_keys_nll(train: list[list[int]], test: list[list[int]]) -> float:
    """Mean NLL per test step when each key sounds independently with its training frequency."""
    counts = Counter(note for step in train for note in step)
    total = 0.0
    for step in test:
        for note in range(21, 109):
            p = min(max(counts[note] / len(train), 1e-6), 1 - 1e-6)
            total -= math.log(p if note in step else 1 - p)
    return total / len(test)


def test_music_beats_independent_key_frequencies_and_samples_midi(runs) -> None:
    folder, rows = runs
    pieces = json.loads((FIXTURES / "polyphonic-music" / "JSB_Chorales.json").read_text())
    steps = {split: [step for piece in pieces[split] for step in piece] for split in ("train", "test")}
    assert float(rows["music"]["test_nll"]) < independent_keys_nll(steps["train"], steps["test"])
    output = folder / "sample.mid"
    written = harness(folder, "sample", rows["music"]["path"], "--length", "12", "--prime-steps", "4",
                      "--output", str(output)).stdout.split()
    assert written == [str(output), str(output.with_suffix(".png"))]
    midi = read_midi(output)
    assert midi.end_tick == (4 + 12) * midi.ticks_per_beat  # the fixture is JSB: a quarter note per step
    primed = [[21 + key for key in range(88) if step[key]] for step in midi.piano_roll(midi.ticks_per_beat)[:4]]
    assert primed == pieces["test"][0][:4]
