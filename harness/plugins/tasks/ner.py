"""Named-entity recognition (many-to-many tagging) on CoNLL-style files, scored with seqeval strict.

What it tests: the lecture notes' many-to-many architecture (Tx = Ty, one tag per word) with a
bidirectional stack, on CoNLL-2003 English (Tjong Kim Sang & De Meulder 2003): PER, LOC, ORG
and MISC entities in Reuters newswire.

Files: one token per line, whitespace-separated columns (``token … tag``; CoNLL-2003 has
``word POS chunk NE``), a blank or whitespace-only line between sentences, ``-DOCSTART-`` lines
skipped. The files live in ``<data_dir>/<subfolder>/`` (default ``conll2003/`` with ``eng.train``,
``eng.testa`` = validation, ``eng.testb`` = test); ``data_dir`` defaults to ``$HARNESS_DATA_DIR``.
A Hugging Face dataset (``hub_dataset``: hub id or local folder, tags as strings or ``ClassLabel``
ids) goes through the same processing after loading.

Tag schemes: CoNLL-2003 is IOB1 (an entity starts with I-; B- only where an entity directly
follows one of the same type), most later corpora are IOB2/BIO (every entity starts with B-) or
IOBES. ``scheme: auto`` takes IOBES when an E-/S- tag occurs, IOB1 when some I- tag begins an
entity, IOB2 otherwise; everything is converted to IOB2, the one internal scheme. A declared
scheme the data breaks (an I- tag beginning an entity under IOB2) is an error naming the line.

Metrics: entity-level precision, recall and F1 (micro over all entities) from seqeval in strict
mode with the IOB2 scheme, and ``f1/<TYPE>`` per entity type: an entity counts as found only when
its type and both boundaries match. ``f1_conlleval`` scores the same predictions the way
``conlleval`` (seqeval's default mode) does, which is how the published CoNLL-2003 numbers were
computed; they differ only on predicted tag sequences that strict IOB2 does not allow.

Caching: the parsed, checked and converted splits of files are stored in the
:class:`~harness.data.reading.ProcessedCache` keyed by the files' content and the processing options,
so a second run does not read the columns again. Hub rows come already tokenized from the
``datasets`` library's own cache; their conversion is one pass and is not cached again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from seqeval.metrics import classification_report, f1_score
from seqeval.scheme import IOB2

from harness import hookimpl
from harness.core.errors import BadInputError, ConfigError
from harness.core.limits import MAX_COLUMN, MAX_SLICE, MAX_VOCAB_SIZE
from harness.core.tasks import EmptySplitError, Example, Task, TaskConfig, TaskData
from harness.data.reading import ProcessedCache, data_folder, load_hub_dataset, read_lines, require_file
from harness.core.vocab import Vocabulary
from harness.plugins.tasks.data_sets import CONLL2003

SPLITS = ("train", "validation", "test")
DOCSTART = "-DOCSTART-"
#: Bumped when the processing below changes, so old cache entries are not served.
PROCESSING_VERSION = 1
_TAG = re.compile(r"^(?:O|[BIES]-\S+)$")


class NerConfig(TaskConfig):
    data_dir: str | None = Field(None, description=(
        "Folder that contains ``subfolder``; null: $HARNESS_DATA_DIR, else the per-user data folder (`harness data list` shows it)."))
    subfolder: str = Field("conll2003", description="The data set's folder inside data_dir.")
    train_file: str = Field("eng.train", description="The training split's file inside subfolder (CoNLL columns).")
    validation_file: str = Field("eng.testa", description=(
        "CoNLL-2003's development set (testa) is the validation split; testb is the test set."))
    test_file: str = Field("eng.testb", description="The test split's file inside subfolder.")
    token_column: int = Field(0, ge=-MAX_COLUMN, le=MAX_COLUMN, description=(
        "Columns counted from 0; negative counts from the end (-1: the last column, CoNLL's NE tag)."))
    tag_column: int = Field(-1, ge=-MAX_COLUMN, le=MAX_COLUMN, description=(
        "The column of the NE tag, counted like token_column."))
    scheme: Literal["auto", "IOB1", "IOB2", "IOBES"] = Field("auto", description=(
        "The files' tag scheme; auto detects it (see the module doc). Always converted to IOB2."))
    vocab_size: int | None = Field(20000, ge=1, le=MAX_VOCAB_SIZE, description=(
        "K: the K most frequent training words get their own embedding, the rest map to <UNK> "
        "(null: all). 20000 of CoNLL-2003's 23,623 training types leaves the rarest as <UNK> "
        "during training, so <UNK> is learned rather than left at its random start."))
    lowercase: bool = Field(False, description=(
        "Word normalisation before the vocabulary (and for user text); both off is Ma & Hovy's "
        "\"no preprocessing\", digits_to_zero is Lample et al.'s."))
    digits_to_zero: bool = Field(False, description="Replace every digit by 0 before the vocabulary (Lample et al.).")
    max_sentences: int | None = Field(None, ge=1, le=MAX_SLICE, description=(
        "Keep only the first N sentences of each split (a quick slice, e.g. for CI); null: all."))
    hub_dataset: str | None = Field(None, description=(
        "A Hugging Face dataset (hub id or local folder) instead of the files, e.g. eriktks/conll2003."))
    hub_config: str | None = Field(None, description="The hub dataset's configuration name, if it has several.")
    hub_revision: str | None = Field(None, description=(
        "Pin a hub revision; only pinned (or local) hub data is cached by this task."))
    hub_token_column: str = Field("tokens", description="The hub column that holds each sentence's tokens.")
    hub_tag_column: str = Field("ner_tags", description="The hub column that holds each sentence's tags.")


@dataclass(frozen=True)
class Sentence:
    """Tokens and their tags as read, with ``where(i)`` naming the source of token i for errors."""

    tokens: list[str]
    tags: list[str]
    where: Callable[[int], str]


# Reading ------------------------------------------------------------------


def read_conll(path: Path, *, token_column: int = 0, tag_column: int = -1) -> list[Sentence]:
    """The sentences of one CoNLL-style file; BadInputError naming ``file:line`` on a bad line."""
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    first_line = width_line = width = 0

    def close_sentence() -> None:
        nonlocal tokens, tags
        if tokens:
            start = first_line
            sentences.append(Sentence(tokens, tags, lambda i: f"{path}:{start + i}"))
        tokens, tags = [], []

    for number, line in enumerate(read_lines(path), start=1):
        columns = line.split()
        if not columns or columns[0] == DOCSTART:  # blank or whitespace-only: a sentence break
            close_sentence()
            continue
        if not width:
            width, width_line = len(columns), number
        token, tag = _tagged_token(columns, token_column, tag_column, f"{path}:{number}")
        if len(columns) != width:
            raise BadInputError(f"{path}:{number}: {len(columns)} columns where line {width_line} has {width}: "
                                f"is the tag column missing? Every token line needs token … tag")
        _check_tag(tag, f"{path}:{number}")
        if not tokens:
            first_line = number
        tokens.append(token)
        tags.append(tag)
    close_sentence()
    return sentences


def _tagged_token(columns: list[str], token_column: int, tag_column: int, where: str) -> tuple[str, str]:
    count = len(columns)
    token_index = token_column if token_column >= 0 else count + token_column
    tag_index = tag_column if tag_column >= 0 else count + tag_column
    if not 0 <= tag_index < count or tag_index == token_index:
        raise BadInputError(f"{where}: {count} column(s) {' '.join(columns)!r}: no tag column (tag_column "
                            f"{tag_column}, counted from 0); a token line needs token … tag")
    if not 0 <= token_index < count:
        raise BadInputError(f"{where}: {count} column(s): no token column (token_column {token_column})")
    return columns[token_index], columns[tag_index]


def _check_tag(tag: str, where: str) -> None:
    if not _TAG.match(tag):
        raise BadInputError(f"{where}: invalid tag {tag!r}: expected O or B-/I-/E-/S- and an entity type "
                            "(e.g. I-PER); check tag_column")


def hub_sentences(dataset: str, split: str, rows: Sequence[dict[str, Any]], *, token_column: str,
                  tag_column: str, tag_names: Sequence[str] | None) -> list[Sentence]:
    """Hub rows (a token list and a tag list each; tags as names or ClassLabel ids) as sentences."""
    sentences = []
    for index, row in enumerate(rows):
        where = f"hub dataset {dataset!r}, split {split}, row {index}"
        missing = [c for c in (token_column, tag_column) if c not in row]
        if missing:
            raise ConfigError(f"ner: {where}: no column {missing[0]!r} (columns: {', '.join(row)}); "
                              "set hub_token_column / hub_tag_column")
        tokens, raw_tags = [str(t) for t in row[token_column]], list(row[tag_column])
        if len(tokens) != len(raw_tags):
            raise BadInputError(f"ner: {where}: {len(tokens)} tokens but {len(raw_tags)} tags")
        if not tokens or tokens[0] == DOCSTART:
            continue
        tags = [tag_names[t] if tag_names is not None and isinstance(t, int) else str(t) for t in raw_tags]
        for position, tag in enumerate(tags):
            _check_tag(tag, f"ner: {where}, token {position + 1}")
        sentences.append(Sentence(tokens, tags, lambda i, w=where: f"ner: {w}, token {i + 1}"))
    return sentences


# Tag schemes ----------------------------------------------------------------


def _type(tag: str) -> str | None:
    return None if tag == "O" else tag[2:]


def i_begins_entity(previous: str | None, tag: str) -> bool:
    """An I- tag that does not continue the entity before it (IOB1 allows this, IOB2 does not)."""
    return tag.startswith("I-") and (previous is None or previous == "O" or _type(previous) != _type(tag))


def detect_scheme(sentences: Sequence[Sentence]) -> str:
    """IOBES when an E-/S- tag occurs, IOB1 when an I- tag begins an entity, else IOB2."""
    if any(tag[0] in "ES" for s in sentences for tag in s.tags):
        return "IOBES"
    for sentence in sentences:
        if any(i_begins_entity(previous, tag) for previous, tag in zip([None, *sentence.tags], sentence.tags)):
            return "IOB1"
    return "IOB2"


def check_scheme(sentences: Sequence[Sentence], scheme: str) -> None:
    """BadInputError at the first tag the scheme does not allow, naming where it is."""
    for sentence in sentences:
        tags = sentence.tags
        for i, tag in enumerate(tags):
            previous = tags[i - 1] if i else None
            problem = None
            if scheme != "IOBES" and tag[0] in "ES":
                problem = f"{tag} is an IOBES tag"
            elif scheme == "IOB2" and i_begins_entity(previous, tag):
                problem = f"{tag} begins an entity after {previous or 'the sentence start'}"
            elif scheme == "IOBES":
                problem = _iobes_problem(previous, tag, tags[i + 1] if i + 1 < len(tags) else None)
            if problem:
                hint = " (the file looks like IOB1: set scheme: IOB1 or auto)" if scheme == "IOB2" else ""
                raise BadInputError(f"{sentence.where(i)}: {problem}, which {scheme} does not allow{hint}")


def _iobes_problem(previous: str | None, tag: str, following: str | None) -> str | None:
    if tag[0] in "IE" and not (previous and previous[0] in "BI" and _type(previous) == _type(tag)):
        return f"{tag} does not continue a B-/I-{_type(tag)}"
    if tag[0] in "BI" and not (following and following[0] in "IE" and _type(following) == _type(tag)):
        return f"{tag} is not followed by I-/E-{_type(tag)}"
    return None


def to_iob2(tags: Sequence[str], scheme: str) -> list[str]:
    """The same entities in IOB2: every entity starts with B-, continues with I-."""
    if scheme == "IOBES":
        return ["B-" + t[2:] if t[0] == "S" else "I-" + t[2:] if t[0] == "E" else t for t in tags]
    if scheme == "IOB1":
        return ["B-" + t[2:] if i_begins_entity(tags[i - 1] if i else None, t) else t for i, t in enumerate(tags)]
    return list(tags)


# Scoring ------------------------------------------------------------------


def score_entities(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level micro precision/recall/F1 and F1 per type (seqeval strict, IOB2), plus conlleval's F1."""
    gold, predicted = [list(s) for s in gold], [list(s) for s in predicted]
    report = classification_report(gold, predicted, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    micro = report["micro avg"]
    metrics = {"precision": micro["precision"], "recall": micro["recall"], "f1": micro["f1-score"]}
    metrics.update({f"f1/{name}": row["f1-score"] for name, row in sorted(report.items()) if not name.endswith(" avg")})
    metrics["f1_conlleval"] = f1_score(gold, predicted, zero_division=0)
    return {name: float(value) for name, value in metrics.items()}


# The task -------------------------------------------------------------------


class NerTask(Task):
    """Tag each word with its entity (IOB2 internally); entity-level F1 with seqeval strict."""

    name = "ner"
    data_sets = (CONLL2003,)
    family = "tagging"
    Config = NerConfig
    primary_metric = "f1"
    higher_is_better = True

    def __init__(self, config: NerConfig | None = None) -> None:
        super().__init__(config)
        self.cache = ProcessedCache()
        #: The tag of each output id, set by :meth:`load`; :meth:`evaluate` decodes with it.
        self.output_tags: list[str] = []

    def normalize(self, token: str) -> str:
        if self.config.lowercase:
            token = token.lower()
        return re.sub(r"\d", "0", token) if self.config.digits_to_zero else token

    def tokenize(self, text: str) -> list[str]:
        return [self.normalize(token) for token in text.split()]

    def load(self) -> TaskData:
        c = self.config
        processed = self._hub_processed() if c.hub_dataset else self._file_processed()
        splits = {split: processed["splits"][split][: c.max_sentences] for split in SPLITS}
        for split, sentences in splits.items():
            if not sentences:
                raise EmptySplitError(f"ner: {processed['sources'][split]} has no sentences for the {split} split; "
                                      "nothing to train or score on")
        input_vocab = Vocabulary.build((tokens for tokens, _ in splits["train"]), max_size=c.vocab_size)
        types = sorted({tag[2:] for sentences in splits.values() for _, tags in sentences for tag in tags} - {""})
        output_vocab = Vocabulary(["O", *(f"{p}-{t}" for t in types for p in "BI")], specials=())
        self.output_tags = output_vocab.tokens
        examples = {split: [Example(inputs=input_vocab.encode(tokens), target=output_vocab.encode(tags))
                            for tokens, tags in sentences] for split, sentences in splits.items()}
        info = self._describe(processed, splits, examples, input_vocab)
        return TaskData(train=examples["train"], validation=examples["validation"], test=examples["test"],
                        input_vocab=input_vocab, output_vocab=output_vocab, info=info)

    def evaluate(self, predictions: Sequence[Sequence[int]], examples: Sequence[Example]) -> dict[str, float]:
        tags = self.output_tags
        gold = [[tags[i] for i in example.target] for example in examples]
        return score_entities(gold, [[tags[i] for i in predicted] for predicted in predictions])

    # Processing -------------------------------------------------------------

    def _file_processed(self) -> dict[str, Any]:
        c = self.config
        folder = data_folder(self.name, c.data_dir, c.subfolder)
        files = {split: require_file(self.name, folder / name)
                 for split, name in zip(SPLITS, (c.train_file, c.validation_file, c.test_file))}
        options = {"version": PROCESSING_VERSION, "files": {s: p.name for s, p in files.items()},
                   **c.model_dump(include={"token_column", "tag_column", "scheme", "lowercase", "digits_to_zero"})}

        def build() -> dict[str, Any]:
            return self._process({split: read_conll(path, token_column=c.token_column, tag_column=c.tag_column)
                                  for split, path in files.items()})

        processed = self.cache.get_or_build("ner", options, files.values(), build)
        return {**processed, "sources": {split: str(path) for split, path in files.items()}}

    def _hub_processed(self) -> dict[str, Any]:
        c = self.config
        loaded = load_hub_dataset(self.name, c.hub_dataset, config_name=c.hub_config, revision=c.hub_revision)
        names = loaded.label_names.get(c.hub_tag_column)
        read = {split: hub_sentences(c.hub_dataset, split, loaded.get(split, []), token_column=c.hub_token_column,
                                     tag_column=c.hub_tag_column, tag_names=names) for split in SPLITS}
        return {**self._process(read), "sources": {s: f"hub dataset {c.hub_dataset!r}, split {s}" for s in SPLITS}}

    def _process(self, read: dict[str, list[Sentence]]) -> dict[str, Any]:
        """Check and convert the tags of all splits together (one scheme for the data set); JSON-able."""
        everything = [s for sentences in read.values() for s in sentences]
        scheme = detect_scheme(everything) if self.config.scheme == "auto" else self.config.scheme
        check_scheme(everything, scheme)
        return {"scheme": scheme,
                "splits": {split: [[[self.normalize(t) for t in s.tokens], to_iob2(s.tags, scheme)]
                                   for s in sentences] for split, sentences in read.items()}}

    # Notes and facts --------------------------------------------------------

    def _describe(self, processed: dict[str, Any], splits: dict[str, list], examples: dict[str, list[Example]],
                  input_vocab: Vocabulary) -> dict[str, Any]:
        c = self.config
        found = "declared" if c.scheme != "auto" else "detected"
        converted = "kept as IOB2" if processed["scheme"] == "IOB2" else "converted to IOB2"
        self.notes["tags"] = (f"{processed['scheme']} in the data ({found}), {converted}; scored with seqeval "
                              "strict mode, scheme IOB2 (entity-level micro precision/recall/F1 and F1 per type)")
        self.notes["invalid_predictions"] = (
            "a predicted I-X that does not continue a B-X/I-X (after O, or after another type) begins no entity "
            "in seqeval strict IOB2: it can only miss a gold entity, never count as a predicted one; "
            "f1_conlleval counts it as an entity start, as conlleval (the published CoNLL numbers) does")
        unk = input_vocab.unk_id
        oov = {split: sum(i == unk for e in items for i in e.inputs) / sum(len(e.inputs) for e in items)
               for split, items in examples.items()}
        words = "lowercased" if c.lowercase else "case kept"
        words += ", digits as 0" if c.digits_to_zero else ""
        kept = len(input_vocab) - len(input_vocab.specials)
        chosen = (f"the K = {kept} most frequent training words" if kept == c.vocab_size
                  else f"all {kept} training words" + (f" (fewer than K = {c.vocab_size})" * bool(c.vocab_size)))
        self.notes["vocabulary"] = (f"{chosen}, {words}, + <PAD> <UNK> <BOS> <EOS>; "
                                    f"{oov['test']:.1%} of test tokens are <UNK>")
        if c.max_sentences:
            self.notes["slice"] = f"first {c.max_sentences} sentences of each split"
        info: dict[str, Any] = {"tag_scheme_in_data": processed["scheme"], "internal_scheme": "IOB2"}
        for split, sentences in splits.items():
            info[f"{split}_source"] = processed["sources"][split]
            info[f"{split}_sentences"] = len(sentences)
            info[f"{split}_tokens"] = sum(len(tokens) for tokens, _ in sentences)
            info[f"{split}_entities"] = sum(tag.startswith("B-") for _, tags in sentences for tag in tags)
            info[f"{split}_unk_rate"] = oov[split]
        return info


@hookimpl
def register_tasks(register) -> None:
    register(NerTask)
