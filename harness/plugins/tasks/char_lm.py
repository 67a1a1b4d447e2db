"""Character-level language modelling of one text file (char-rnn's tiny-shakespeare) with truncated BPTT.

What it tests: the lecture notes' character-level language model: the vocabulary is the
alphabet, so no word is ever unknown, but the model must carry context over many more
steps than a word model (Karpathy's char-rnn, 2015; Graves 2013, "Generating Sequences
With Recurrent Neural Networks", arXiv:1308.0850).

Data: one UTF-8 file, ``<data_dir>/<subfolder>/<file>`` (default
``tinyshakespeare/input.txt``), or a Hugging Face dataset whose ``text_column`` rows are
joined in split order (train, validation, test) into one text, each row ending with a
newline. Line endings are normalised to ``\\n``.

Split: contiguous and recorded. The first ``train_fraction`` of the characters train, the
next ``validation_fraction`` validate, the rest test: boundaries floor(N·train_fraction) and
floor(N·(train_fraction + validation_fraction)) of the N characters (the default 0.9/0.05/0.05
splits tiny-shakespeare at characters 1,003,854 and 1,059,624). With char-rnn's split
(``train_fraction: 0.95, validation_fraction: 0.05``) nothing is left for a test split:
the test split is then the validation split, so test metrics equal validation metrics, as
char-rnn reports its validation loss (its ``train.lua`` has no test set). The exact
boundaries are recorded in the run's notes.

Vocabulary: the characters of the training split + <UNK> (a validation/test character
never seen in training). ``tokenize`` = characters, ``detokenize`` = joined without spaces.

Metric ``bits_per_character`` = summed NLL / (N ln 2) over the N predicted test characters,
lower is better; ``perplexity`` is exp of the same mean, per character.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from harness import hookimpl
from harness.core.errors import ConfigError
from harness.core.limits import MAX_SLICE
from harness.core.tasks import EmptySplitError, Example, Task, TaskConfig, TaskData
from harness.data.reading import ProcessedCache, data_folder, file_digest, load_hub_dataset, read_lines, require_file
from harness.core.vocab import UNK, Vocabulary
from harness.plugins.tasks.data_sets import TINY_SHAKESPEARE

SPLITS = ("train", "validation", "test")
#: Bump when processing changes, so cached entries of the old processing are never served.
PROCESSING_VERSION = 1


class CharLMConfig(TaskConfig):
    data_dir: str | None = Field(None, description=(
        "Folder that contains ``subfolder``; null: $HARNESS_DATA_DIR, else the per-user data folder (`harness data list` shows it)."))
    subfolder: str = Field("tinyshakespeare", description="The data set's folder inside data_dir.")
    file: str = Field("input.txt", description="The text file inside subfolder; the whole text is one stream.")
    train_fraction: float = Field(0.9, gt=0, lt=1, description=(
        "Leading share of the characters for training (char-rnn: 0.95)."))
    validation_fraction: float = Field(0.05, gt=0, lt=1, description=(
        "The next share for validation (char-rnn: 0.05); the rest is the test split, or, when "
        "nothing is left, the test split is the validation split (see the module doc)."))
    max_chars: int | None = Field(None, ge=1, le=MAX_SLICE, description=(
        "Use only the first M characters of the text (a CI slice), before splitting; null: all."))
    hub_dataset: str | None = Field(None, description=(
        "A Hugging Face dataset id (or a local dataset folder) to read instead of the file."))
    hub_config: str | None = Field(None, description="The hub dataset's configuration name, if it has several.")
    hub_revision: str | None = Field(None, description=(
        "Pin a hub revision; only pinned (or local) hub data is cached by this task."))
    text_column: str = Field("text", description="The hub column that holds the text.")

    @model_validator(mode="after")
    def _fractions_fit(self) -> CharLMConfig:
        if self.train_fraction + self.validation_fraction > 1 + 1e-9:
            raise ValueError(f"train_fraction + validation_fraction = "
                             f"{self.train_fraction + self.validation_fraction:g} exceeds 1")
        return self


def split_boundaries(length: int, train_fraction: float, validation_fraction: float) -> tuple[int, int]:
    """(a, b): characters [0, a) train, [a, b) validate, [b, length) test."""
    end = min(train_fraction + validation_fraction, 1.0)
    return math.floor(length * train_fraction), math.floor(length * end)


def read_text(path: Path) -> str:
    """The whole file as text with ``\\n`` line ends; BadInputError names file:line for invalid UTF-8."""
    lines = read_lines(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        handle.seek(max(size - 1, 0))
        ends_with_newline = handle.read(1) == b"\n"  # read_lines drops the final line end
    return "\n".join(lines) + ("\n" if ends_with_newline else "")


def build_streams(text: str, source: str, config: CharLMConfig) -> dict[str, Any]:
    """The vocabulary, the split boundaries and the three id streams (JSON-able, for the cache)."""
    text = text[: config.max_chars]
    a, b = split_boundaries(len(text), config.train_fraction, config.validation_fraction)
    parts = {"train": text[:a], "validation": text[a:b], "test": text[b:] if b < len(text) else text[a:b]}
    for split, part in parts.items():
        if len(part) < 2:
            raise EmptySplitError(f"char_lm: the {split} split of {source} has {len(part)} characters "
                                  f"(of {len(text):,}); it needs at least 2: use more text or other fractions")
    vocab = Vocabulary.build([parts["train"]], specials=(UNK,))
    return {"tokens": vocab.tokens[1:], "streams": {split: vocab.encode(part) for split, part in parts.items()},
            "boundaries": [0, a, b, len(text)], "test_is_validation": b >= len(text),
            "unknown": {split: sum(ch not in vocab for ch in part) for split, part in parts.items()}}


class CharLMTask(Task):
    """Predict the next character of a text read as one stream; sample text from it."""

    name = "char_lm"
    data_sets = (TINY_SHAKESPEARE,)
    family = "language_model"
    Config = CharLMConfig
    primary_metric = "bits_per_character"
    higher_is_better = False

    def __init__(self, config: CharLMConfig | None = None) -> None:
        super().__init__(config)
        #: The processed-data cache (``hits``/``builds`` say whether this load re-tokenized).
        self.cache = ProcessedCache()

    def tokenize(self, text: str) -> list[str]:
        return list(text)

    def detokenize(self, tokens: Sequence[str]) -> str:
        return "".join(tokens)

    def load(self) -> TaskData:
        built, source = self._hub() if self.config.hub_dataset else self._file()
        vocab = Vocabulary(built["tokens"], specials=(UNK,))
        streams = built["streams"]
        self._record(built, source, vocab)
        return TaskData(
            train=[Example(inputs=streams["train"])], validation=[Example(inputs=streams["validation"])],
            test=[Example(inputs=streams["test"])], input_vocab=vocab, output_vocab=vocab, contiguous=True,
            token_unit="character",
            info={"split_boundaries": built["boundaries"], "test_is_validation": built["test_is_validation"],
                  **({"sha256": file_digest(Path(source))} if not self.config.hub_dataset else {})},
        )

    def _options(self) -> dict[str, Any]:
        c = self.config
        return {"version": PROCESSING_VERSION, "train_fraction": c.train_fraction,
                "validation_fraction": c.validation_fraction, "max_chars": c.max_chars}

    def _file(self) -> tuple[dict[str, Any], str]:
        c = self.config
        path = require_file(self.name, data_folder(self.name, c.data_dir, c.subfolder) / c.file)
        built = self.cache.get_or_build(self.name, self._options(), [path],
                                        lambda: build_streams(read_text(path), str(path), c))
        return built, str(path)

    def _hub(self) -> tuple[dict[str, Any], str]:
        c = self.config
        dataset = c.hub_dataset or ""
        source = f"hub dataset {dataset!r}"

        def build() -> dict[str, Any]:
            rows = load_hub_dataset(self.name, dataset, config_name=c.hub_config, revision=c.hub_revision)
            pieces = []
            for split in SPLITS:
                for row in rows.get(split, []):
                    if c.text_column not in row:
                        raise ConfigError(f"char_lm: {source} split {split} has no column {c.text_column!r} "
                                          f"(it has {', '.join(row)}); set text_column")
                    piece = str(row[c.text_column] or "")
                    pieces.append(piece if piece.endswith("\n") else piece + "\n")
            return build_streams("".join(pieces), source, c)

        local = Path(dataset).expanduser()
        files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else []
        if not (files or c.hub_revision):  # an unpinned hub id may change upstream; `datasets` caches the download
            return build(), source
        options = {**self._options(), "hub": dataset, "config": c.hub_config, "revision": c.hub_revision,
                   "column": c.text_column}
        return self.cache.get_or_build(f"{self.name}-hub", options, files, build), source

    def _record(self, built: dict[str, Any], source: str, vocab: Vocabulary) -> None:
        start, a, b, end = built["boundaries"]
        name = Path(source).name if not self.config.hub_dataset else source
        test = ("the validation split again (nothing is left after train + validation: char-rnn's protocol, "
                "test metrics = validation metrics)" if built["test_is_validation"] else f"[{b:,}, {end:,})")
        self.notes = {
            "split": (f"contiguous, by character, of {name} ({end:,} characters"
                      + (f", first max_chars = {self.config.max_chars:,} only" if self.config.max_chars else "")
                      + f"): train [{start:,}, {a:,}), validation [{a:,}, {b:,}), test {test}"),
            "bits_per_character": (
                "summed NLL / (N ln 2) over the N predicted characters of the test stream (test_tokens); the "
                "stream is cut into eval_batch_size columns (each column's first character is context only) and "
                "read in BPTT windows with the state carried across them, from zero at the start of each pass"),
            "vocabulary": (f"{len(vocab) - 1} characters of the training split + <UNK>; "
                           f"{built['unknown']['test']:,} test characters are <UNK>"),
        }


@hookimpl
def register_tasks(register) -> None:
    register(CharLMTask)
