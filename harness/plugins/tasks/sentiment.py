"""Sentence sentiment (many-to-one classification): SST-2 and any file laid out like it.

What it tests: the lecture notes' many-to-one architecture on real text: read a whole
movie-review sentence, then predict its polarity from one feature vector (the state
after the last word; for a bidirectional stack also the backward state after the
first word; ``model.pooling: mean | max`` pools every step instead). Metric: accuracy.

Data: ``<data_dir>/<subfolder>/<file>`` per split, default the binary Stanford Sentiment
Treebank sentence split (Socher et al. 2013; ``stsa.binary.{train,dev,test}``, 6,920 /
872 / 1,821 sentences, see its DATASET.md). Two layouts are read:

* ``label_sentence``: ``<label> <sentence>`` per line (the ``stsa.binary.*`` files);
* ``tsv``: a header line naming a label column and a sentence column, in either order
  (``label``/``sentiment``/``polarity``/``class`` and ``sentence``/``text``/``phrase``/
  ``review``), then one row per line (SST-2's phrase file, GLUE's layout).

``auto`` takes ``tsv`` for a ``.tsv`` file or a tab-separated first line naming such a column. Labels
are the integers ``0 .. num_classes-1``. Sentences are split on whitespace (SST is
already PTB-tokenized). ``include_phrases`` adds the 67,349 labelled phrases most papers
also train on (phrases equal to a validation or test sentence are dropped, so no
evaluation sentence is trained on). ``hub_dataset`` reads a Hugging Face dataset instead
(``label_column``/``text_column``), processed the same way.

The vocabulary is the notes': the ``vocab_size`` most frequent training tokens plus the
specials; everything else is ``<UNK>``. Parsed files are cached by content hash
(:class:`~harness.data.reading.ProcessedCache`), so a second run does not re-tokenize.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from harness import hookimpl
from harness.core.errors import BadInputError, ConfigError
from harness.core.limits import MAX_CLASSES, MAX_SLICE, MAX_VOCAB_SIZE
from harness.core.tasks import EmptySplitError, Example, Task, TaskConfig, TaskData
from harness.data.reading import ProcessedCache, data_folder, file_digest, load_hub_dataset, read_lines, require_file
from harness.core.vocab import SPECIALS, Vocabulary
from harness.plugins.tasks.data_sets import SST2

SPLITS = ("train", "validation", "test")
#: Header names recognised as the label and the sentence column of a TSV file (case-insensitive).
LABEL_COLUMNS = ("label", "labels", "sentiment", "polarity", "class")
TEXT_COLUMNS = ("sentence", "text", "phrase", "review", "content")
#: Bump when parsing changes, so cached entries of the old parser are never served.
READER_VERSION = 1

Labelled = tuple[list[str], int]  # (tokens, class id)


class SentimentConfig(TaskConfig):
    data_dir: str | None = Field(None, description=(
        "Folder that contains ``subfolder``; null: $HARNESS_DATA_DIR, else the per-user data folder (`harness data list` shows it)."))
    subfolder: str = Field("sst2", description="The data set's folder inside data_dir.")
    train_file: str = Field("stsa.binary.train", description=(
        "The training split's file, relative to the data set's folder."))
    validation_file: str = Field("stsa.binary.dev", description="The validation split's file.")
    test_file: str = Field("stsa.binary.test", description="The test split's file.")
    format: Literal["auto", "label_sentence", "tsv"] = Field("auto", description=(
        "auto: tsv for a .tsv file or a tab-separated first line naming a label or sentence column, "
        "else label_sentence."))
    include_phrases: bool = Field(False, description=(
        "Also train on the labelled phrases (most published SST results do); recorded in the run's notes."))
    phrases_file: str = Field("phrases/train.tsv", description=(
        "The labelled phrases (TSV) read with include_phrases, relative to the data set's folder."))
    num_classes: int = Field(2, ge=2, le=MAX_CLASSES, description=(
        "Labels are 0 .. num_classes-1 (2 for SST-2, 5 for the fine-grained SST-1)."))
    lowercase: bool = Field(False, description="Lower-case every token (SST is already lower-case).")
    vocab_size: int | None = Field(20000, ge=1, le=MAX_VOCAB_SIZE, description=(
        "The notes' K: the most frequent training tokens kept; above SST-2's 14,828 training types "
        "by default, so every training word has its own id. null: every training token."))
    max_examples: int | None = Field(None, ge=1, le=MAX_SLICE, description=(
        "Keep only the first N examples of each file (a CI slice); null: all."))
    hub_dataset: str | None = Field(None, description=(
        "A Hugging Face dataset id (or a local dataset folder) to read instead of the files."))
    hub_config: str | None = Field(None, description="The hub dataset's configuration name, if it has several.")
    hub_revision: str | None = Field(None, description=(
        "Pin a hub revision; only pinned (or local) hub data is cached by this task."))
    label_column: str = Field("label", description="The hub (or TSV header) column that holds the label.")
    text_column: str = Field("sentence", description="The hub (or TSV header) column that holds the sentence.")

    @model_validator(mode="after")
    def _phrases_need_files(self) -> SentimentConfig:
        if self.include_phrases and self.hub_dataset:
            raise ValueError("include_phrases reads phrases_file from the data folder; it cannot be combined "
                             "with hub_dataset")
        return self


# ---------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------


def _column(header: list[str], names: Sequence[str]) -> int | None:
    lowered = [name.strip().lower() for name in header]
    return next((lowered.index(name) for name in names if name in lowered), None)


def detect_format(path: Path, first_line: str) -> Literal["label_sentence", "tsv"]:
    """``tsv`` for a ``.tsv`` file or a tab-separated header naming a label or sentence column.

    One recognised name is enough, so a header that lacks the other column is reported as
    such instead of as a first row with a bad label.
    """
    header = first_line.split("\t")
    named = _column(header, LABEL_COLUMNS) is not None or _column(header, TEXT_COLUMNS) is not None
    return "tsv" if path.suffix.lower() == ".tsv" or (len(header) > 1 and named) else "label_sentence"


def _label_sentence_rows(path: Path, lines: list[str]) -> Iterable[tuple[int, str, str]]:
    for number, line in enumerate(lines, start=1):
        parts = line.split(maxsplit=1)  # "<label> <sentence>"
        yield number, parts[0] if parts else "", parts[1] if len(parts) > 1 else ""


def _tsv_rows(path: Path, lines: list[str]) -> Iterable[tuple[int, str, str]]:
    if not lines:
        return  # an empty file: an empty split, reported as such by the task
    header = lines[0].split("\t")
    label_at, text_at = _column(header, LABEL_COLUMNS), _column(header, TEXT_COLUMNS)
    if label_at is None or text_at is None:
        missing = " and no ".join(kind for kind, at in (("label column", label_at), ("sentence column", text_at))
                                  if at is None)
        raise BadInputError(
            f"{path}:1: the header {lines[0]!r} has no {missing}; name the columns "
            f"(tab-separated) one of {', '.join(LABEL_COLUMNS)} and one of {', '.join(TEXT_COLUMNS)}"
        )
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            yield number, "", ""  # reported as an empty line
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise BadInputError(f"{path}:{number}: {len(fields)} tab-separated fields, but the header has "
                                f"{len(header)} ({', '.join(header)})")
        yield number, fields[label_at].strip(), fields[text_at]


def parse_label(text: str, num_classes: int, where: str) -> int:
    """The class id written as ``text``; BadInputError (naming ``where``) unless 0 .. num_classes-1."""
    try:
        value = int(text)
    except ValueError:
        raise BadInputError(f"{where}: label {text!r} is not an integer; expected 0..{num_classes - 1}") from None
    if not 0 <= value < num_classes:
        hint = " (-1 marks a hidden label, e.g. GLUE's test split)" if value == -1 else ""
        raise BadInputError(f"{where}: label {value} is not one of 0..{num_classes - 1}{hint}; "
                            "set the task option num_classes if the data has more classes")
    return value


def tokens_of(sentence: str, lowercase: bool) -> list[str]:
    return (sentence.lower() if lowercase else sentence).split()


def read_labelled_file(path: Path, fmt: str, *, num_classes: int, lowercase: bool) -> list[Labelled]:
    """Every (tokens, label) of one file; BadInputError naming file and line for a bad row."""
    lines = read_lines(path)
    layout = detect_format(path, lines[0] if lines else "") if fmt == "auto" else fmt
    rows = _tsv_rows(path, lines) if layout == "tsv" else _label_sentence_rows(path, lines)
    examples = []
    for number, label, sentence in rows:
        where = f"{path}:{number}"
        if not label and not sentence.strip():
            raise BadInputError(f"{where}: empty line; every line must be a labelled sentence")
        value = parse_label(label, num_classes, where)
        tokens = tokens_of(sentence, lowercase)
        if not tokens:
            raise BadInputError(f"{where}: label {value} but no sentence after it")
        examples.append((tokens, value))
    return examples


def read_hub_split(dataset: str, split: str, rows: list[dict[str, Any]], config: SentimentConfig) -> list[Labelled]:
    """Hub rows as (tokens, label), with the same checks as file rows."""
    for column in (config.label_column, config.text_column):
        if rows and column not in rows[0]:
            raise ConfigError(f"sentiment: hub dataset {dataset!r} split {split} has no column {column!r} "
                              f"(it has {', '.join(rows[0])}); set label_column / text_column")
    examples = []
    for index, row in enumerate(rows):
        where = f"hub dataset {dataset!r}, split {split}, row {index}"
        value = parse_label(str(row[config.label_column]).strip(), config.num_classes, where)
        tokens = tokens_of(str(row[config.text_column] or ""), config.lowercase)
        if not tokens:
            raise BadInputError(f"{where}: label {value} but an empty {config.text_column!r}")
        examples.append((tokens, value))
    return examples


# ---------------------------------------------------------------------------
# The task
# ---------------------------------------------------------------------------


class SentimentTask(Task):
    """Classify the polarity of a sentence after reading it whole (SST-2 by default)."""

    name = "sentiment"
    data_sets = (SST2,)
    family = "classification"
    Config = SentimentConfig
    primary_metric = "accuracy"
    higher_is_better = True

    def __init__(self, config: SentimentConfig | None = None) -> None:
        super().__init__(config)
        #: The processed-data cache (``hits``/``builds`` say whether this load re-tokenized).
        self.cache = ProcessedCache()

    def tokenize(self, text: str) -> list[str]:
        return tokens_of(text, self.config.lowercase)

    def load(self) -> TaskData:
        c = self.config
        splits, sources = self._hub_splits() if c.hub_dataset else self._file_splits()
        phrases = self._add_phrases(splits) if c.include_phrases else None
        for split in SPLITS:
            if not splits[split]:
                raise EmptySplitError(f"sentiment: the {split} split ({sources[split]}) has no examples; "
                                      "nothing to train or score on")
        input_vocab = Vocabulary.build((tokens for tokens, _ in splits["train"]), max_size=c.vocab_size)
        output_vocab = Vocabulary([str(label) for label in range(c.num_classes)], specials=())
        encoded = {split: [Example(inputs=input_vocab.encode(tokens), target=label) for tokens, label in examples]
                   for split, examples in splits.items()}
        self._record(splits, sources, input_vocab, phrases)
        return TaskData(train=encoded["train"], validation=encoded["validation"], test=encoded["test"],
                        input_vocab=input_vocab, output_vocab=output_vocab, info=self._info(splits, sources))

    # Reading ---------------------------------------------------------------

    def _folder(self) -> Path:
        return data_folder(self.name, self.config.data_dir, self.config.subfolder)

    def _read(self, path: Path, fmt: str) -> list[Labelled]:
        """One file's examples through the content-addressed cache, then the slice."""
        c = self.config
        options = {"reader": READER_VERSION, "format": fmt, "num_classes": c.num_classes, "lowercase": c.lowercase}
        rows = self.cache.get_or_build(
            self.name, options, [path],
            lambda: read_labelled_file(path, fmt, num_classes=c.num_classes, lowercase=c.lowercase))
        return [(list(tokens), int(label)) for tokens, label in rows[: c.max_examples]]

    def _file_splits(self) -> tuple[dict[str, list[Labelled]], dict[str, str]]:
        folder = self._folder()
        files = {"train": self.config.train_file, "validation": self.config.validation_file,
                 "test": self.config.test_file}
        paths = {split: require_file(self.name, folder / name) for split, name in files.items()}
        splits = {split: self._read(path, self.config.format) for split, path in paths.items()}
        return splits, {split: str(path) for split, path in paths.items()}

    def _hub_splits(self) -> tuple[dict[str, list[Labelled]], dict[str, str]]:
        c = self.config
        dataset = c.hub_dataset or ""
        local = Path(dataset).expanduser()
        files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else []

        def build() -> dict[str, list[Labelled]]:
            rows = load_hub_dataset(self.name, dataset, config_name=c.hub_config, revision=c.hub_revision)
            return {split: read_hub_split(dataset, split, rows.get(split, []), c) for split in SPLITS}

        if files or c.hub_revision:  # pinned content: safe to serve from the cache
            options = {"reader": READER_VERSION, "hub": dataset, "config": c.hub_config, "revision": c.hub_revision,
                       "columns": [c.label_column, c.text_column], "num_classes": c.num_classes,
                       "lowercase": c.lowercase}
            splits = self.cache.get_or_build(f"{self.name}-hub", options, files, build)
        else:  # an unpinned hub id may change upstream; `datasets` caches the download itself
            splits = build()
        sliced = {split: [(list(t), int(y)) for t, y in splits[split][: c.max_examples]] for split in SPLITS}
        return sliced, {split: f"hub dataset {dataset!r}, split {split}" for split in SPLITS}

    def _add_phrases(self, splits: dict[str, list[Labelled]]) -> dict[str, int]:
        """Append the labelled phrases to train, minus evaluation sentences and training duplicates.

        Returns how many phrases were added, and dropped for equalling a validation/test sentence
        (training on it would leak the answer) or repeating a training example with its label.
        """
        path = require_file(self.name, self._folder() / self.config.phrases_file)
        held_out = {tuple(tokens) for split in ("validation", "test") for tokens, _ in splits[split]}
        seen = {(tuple(tokens), label) for tokens, label in splits["train"]}
        counts = {"evaluation": 0, "duplicate": 0, "added": 0}
        for tokens, label in self._read(path, "auto"):  # the phrase file has its own layout
            key = tuple(tokens)
            if key in held_out:
                counts["evaluation"] += 1
            elif (key, label) in seen:
                counts["duplicate"] += 1
            else:
                seen.add((key, label))
                splits["train"].append((tokens, label))
                counts["added"] += 1
        return counts

    # What gets recorded ----------------------------------------------------

    def _record(self, splits: dict[str, list[Labelled]], sources: dict[str, str], vocab: Vocabulary,
                phrases: dict[str, int] | None) -> None:
        c = self.config
        sizes = {split: len(examples) for split, examples in splits.items()}
        if phrases is None:
            training = (f"sentences only: {sizes['train']:,} labelled training sentences; the labelled phrases "
                        "most published SST results also train on are not used (include_phrases: false)")
        else:
            training = (f"sentences and phrases: {sizes['train'] - phrases['added']:,} sentences + "
                        f"{phrases['added']:,} phrases of {c.phrases_file} (dropped: {phrases['evaluation']} equal "
                        f"to a validation/test sentence, {phrases['duplicate']:,} repeating a "
                        "training sentence or an earlier phrase with its label)")
        types = len({token for tokens, _ in splits["train"] for token in tokens})
        self.notes = {
            "accuracy": (f"share of the {sizes['test']:,} test sentences whose arg-max class is the gold label "
                         f"(labels 0..{c.num_classes - 1}, one prediction per sentence)"),
            "training_data": training,
            "vocabulary": (f"{_kept(len(vocab) - len(SPECIALS), types)} training token types (vocab_size "
                           f"{c.vocab_size}) + {' '.join(SPECIALS)}; "
                           f"{_unknown_share(splits['test'], vocab):.1%} of test tokens are <UNK>"),
            "data": ", ".join(f"{split} {Path(source).name if not c.hub_dataset else source}"
                              for split, source in sources.items()),
        }

    def _info(self, splits: dict[str, list[Labelled]], sources: dict[str, str]) -> dict[str, Any]:
        info: dict[str, Any] = {}
        for split, examples in splits.items():
            counts = Counter(label for _, label in examples)
            info[f"{split}_examples"] = len(examples)
            info[f"{split}_label_counts"] = [counts[label] for label in range(self.config.num_classes)]
            if not self.config.hub_dataset:
                info[f"{split}_sha256"] = file_digest(Path(sources[split]))
        if self.config.include_phrases:
            info["phrases_sha256"] = file_digest(self._folder() / self.config.phrases_file)
        test_counts = Counter(label for _, label in splits["test"])
        info["majority_class_accuracy"] = max(test_counts.values()) / len(splits["test"])
        return info


def _kept(kept: int, types: int) -> str:
    return f"all {types:,}" if kept == types else f"the {kept:,} most frequent of {types:,}"


def _unknown_share(examples: list[Labelled], vocab: Vocabulary) -> float:
    total = sum(len(tokens) for tokens, _ in examples)
    unknown = sum(token not in vocab for tokens, _ in examples for token in tokens)
    return unknown / max(total, 1)


@hookimpl
def register_tasks(register) -> None:
    register(SentimentTask)
