"""Word-level language modelling on a contiguous corpus (Penn Treebank, WikiText) with truncated BPTT.

What it tests: the lecture notes' "Language Model and Sequence Generation" on real text:
P(y<1>, …, y<T>) as a product of next-word conditionals, sampling from it, and how well
each cell carries context across a long stream (Mikolov et al. 2010; Zaremba, Sutskever &
Vinyals 2014, "Recurrent Neural Network Regularization", arXiv:1409.2329).

Data, two layouts under ``<data_dir>/<subfolder>``:

* ``ptb``: ``<name>.train.txt``, ``<name>.valid.txt``, ``<name>.test.txt`` (Mikolov's
  preprocessed Penn Treebank: ``ptb.*.txt``, already lower-cased with ``<unk>``);
* ``wikitext``: ``wiki.train.tokens``, ``wiki.valid.tokens``, ``wiki.test.tokens``
  (Merity et al. 2016, WikiText-2/103).

Or ``hub_dataset``: a Hugging Face dataset whose ``text_column`` rows are the lines.

Processing, as pytorch/examples ``word_language_model`` and the TensorFlow PTB tutorial
do it: every line (blank lines included) is split on whitespace and ends with <EOS>; the
lines of a split are concatenated in file order into one stream; the corpus' own
``<unk>``/``<eos>`` are our <UNK>/<EOS>. The stream starts with one <EOS> as context, so
at evaluation batch 1 every word and every line end of the split is predicted exactly once
(PTB: 929,589 / 73,760 / 82,430 tokens). The vocabulary is the notes' K (``vocab_size``)
most frequent training tokens plus only the specials the data needs: <EOS>, and <UNK> when
the corpus has unknown words, K cuts the vocabulary or validation/test words are not in it.
The softmax is over that vocabulary: exactly 10,000 types for PTB.

Metric ``perplexity`` = exp(summed NLL / N) over the N predicted test tokens (the family's
``tokens``), lower is better. Processed splits are cached by content hash
(:class:`~harness.data.reading.ProcessedCache`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from harness import hookimpl
from harness.core.errors import ConfigError
from harness.core.limits import MAX_SLICE, MAX_VOCAB_SIZE
from harness.core.tasks import EmptySplitError, Example, Task, TaskConfig, TaskData
from harness.data.reading import ProcessedCache, data_folder, file_digest, load_hub_dataset, read_lines, require_file
from harness.core.vocab import EOS, UNK, Vocabulary
from harness.plugins.tasks.data_sets import PTB

SPLITS = ("train", "validation", "test")
#: The corpora's own spellings of the specials (PTB and WikiText write them in lower case).
RAW_SPECIALS = {"<unk>": UNK, "<eos>": EOS}
DEFAULT_SUBFOLDER = {"ptb": "ptb", "wikitext": "wikitext-2"}
WIKITEXT_FILES = {"train": "wiki.train.tokens", "validation": "wiki.valid.tokens", "test": "wiki.test.tokens"}
#: Bump when processing changes, so cached entries of the old processing are never served.
PROCESSING_VERSION = 1


class WordLMConfig(TaskConfig):
    layout: Literal["ptb", "wikitext"] = Field("ptb", description=(
        "ptb: <name>.{train,valid,test}.txt; wikitext: wiki.{train,valid,test}.tokens."))
    data_dir: str | None = Field(None, description=(
        "Folder that contains ``subfolder``; null: $HARNESS_DATA_DIR, else the per-user data folder (`harness data list` shows it)."))
    subfolder: str | None = Field(None, description=(
        "The corpus folder inside data_dir; null: ``ptb`` or ``wikitext-2`` by layout."))
    vocab_size: int | None = Field(None, ge=1, le=MAX_VOCAB_SIZE, description=(
        "The notes' K: the most frequent training words kept, the rest become <UNK>; null: all "
        "(PTB is already cut to 10k)."))
    max_lines: int | None = Field(None, ge=1, le=MAX_SLICE, description=(
        "Keep only the first N lines of each split (a CI slice); null: all."))
    hub_dataset: str | None = Field(None, description=(
        "A Hugging Face dataset id (or a local dataset folder) to read instead of the files."))
    hub_config: str | None = Field(None, description="The hub dataset's configuration name, if it has several.")
    hub_revision: str | None = Field(None, description=(
        "Pin a hub revision; only pinned (or local) hub data is cached by this task."))
    text_column: str = Field("text", description="The hub column that holds one line of text per row.")


def line_tokens(line: str) -> list[str]:
    """One line's words with the corpus' specials mapped to ours, then <EOS>."""
    return [RAW_SPECIALS.get(word, word) for word in line.split()] + [EOS]


def ptb_files(task: str, folder: Path) -> dict[str, Path]:
    """``<name>.train.txt`` and its ``.valid.txt``/``.test.txt`` siblings (exactly one name)."""
    names = sorted(path.name[: -len(".train.txt")] for path in folder.glob("*.train.txt"))
    if len(names) != 1:
        found = ", ".join(f"{name}.train.txt" for name in names) or "none"
        raise ConfigError(f"{task}: {folder} must hold exactly one <name>.train.txt for the ptb layout "
                          f"(found: {found}); point subfolder at one corpus")
    name = names[0]
    return {split: require_file(task, folder / f"{name}.{suffix}.txt")
            for split, suffix in (("train", "train"), ("validation", "valid"), ("test", "test"))}


def build_streams(lines: dict[str, list[str]], sources: dict[str, str], *, vocab_size: int | None) -> dict[str, Any]:
    """The vocabulary and the three id streams (JSON-able, for the cache).

    Raises EmptySplitError naming the source of a split without lines.
    """
    for split in SPLITS:
        if not lines[split]:
            raise EmptySplitError(f"word_lm: the {split} split ({sources[split]}) has no lines; "
                                  "nothing to train or score on")
    tokens = {split: [token for line in lines[split] for token in line_tokens(line)] for split in SPLITS}
    counts = Counter(token for token in tokens["train"] if token not in (UNK, EOS))
    kept = sorted(counts, key=lambda t: (-counts[t], t))[:vocab_size]
    known = set(kept)
    needs_unk = UNK in tokens["train"] or len(kept) < len(counts) or any(
        token not in known and token not in (UNK, EOS) for split in ("validation", "test") for token in tokens[split])
    vocab = Vocabulary(kept, specials=(UNK, EOS) if needs_unk else (EOS,))
    streams = {split: vocab.encode([EOS] + tokens[split]) for split in SPLITS}  # <EOS> first: the context
    unknown = {split: sum(token not in known and token != EOS for token in tokens[split]) for split in SPLITS}
    return {"specials": list(vocab.specials), "tokens": kept, "streams": streams, "types": len(counts),
            "lines": {split: len(lines[split]) for split in SPLITS}, "unknown": unknown}


class WordLMTask(Task):
    """Predict the next word of a corpus read as one stream; sample and score sentences."""

    name = "word_lm"
    data_sets = (PTB,)
    family = "language_model"
    Config = WordLMConfig
    primary_metric = "perplexity"
    higher_is_better = False

    def __init__(self, config: WordLMConfig | None = None) -> None:
        super().__init__(config)
        #: The processed-data cache (``hits``/``builds`` say whether this load re-tokenized).
        self.cache = ProcessedCache()

    def tokenize(self, text: str) -> list[str]:
        """A sentence as the model's words (``<unk>`` written as in the corpus is <UNK>); no <EOS>."""
        return line_tokens(text)[:-1]

    def load(self) -> TaskData:
        built, sources = self._hub() if self.config.hub_dataset else self._files()
        vocab = Vocabulary(built["tokens"], built["specials"])
        streams = built["streams"]
        self._record(built, sources, vocab)
        return TaskData(
            train=[Example(inputs=streams["train"])], validation=[Example(inputs=streams["validation"])],
            test=[Example(inputs=streams["test"])], input_vocab=vocab, output_vocab=vocab, contiguous=True,
            info={**{f"{split}_lines": built["lines"][split] for split in SPLITS},
                  **{f"{split}_tokens": len(streams[split]) - 1 for split in SPLITS},
                  **({f"{split}_sha256": file_digest(Path(sources[split])) for split in SPLITS}
                     if not self.config.hub_dataset else {})},
        )

    # Reading ---------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        c = self.config
        return {"version": PROCESSING_VERSION, "vocab_size": c.vocab_size, "max_lines": c.max_lines}

    def _files(self) -> tuple[dict[str, Any], dict[str, str]]:
        c = self.config
        folder = data_folder(self.name, c.data_dir, c.subfolder or DEFAULT_SUBFOLDER[c.layout])
        if c.layout == "ptb":
            paths = ptb_files(self.name, folder)
        else:
            paths = {split: require_file(self.name, folder / name) for split, name in WIKITEXT_FILES.items()}
        sources = {split: str(path) for split, path in paths.items()}

        def build() -> dict[str, Any]:
            lines = {split: read_lines(path)[: c.max_lines] for split, path in paths.items()}
            return build_streams(lines, sources, vocab_size=c.vocab_size)

        # Each split's file is named in the options too: train and test swapped is another corpus.
        options = {**self._options(), "files": {split: file_digest(path) for split, path in paths.items()}}
        return self.cache.get_or_build(self.name, options, paths.values(), build), sources

    def _hub(self) -> tuple[dict[str, Any], dict[str, str]]:
        c = self.config
        dataset = c.hub_dataset or ""
        sources = {split: f"hub dataset {dataset!r}, split {split}" for split in SPLITS}

        def build() -> dict[str, Any]:
            rows = load_hub_dataset(self.name, dataset, config_name=c.hub_config, revision=c.hub_revision)
            lines = {}
            for split in SPLITS:
                split_rows = rows.get(split, [])
                if split_rows and c.text_column not in split_rows[0]:
                    raise ConfigError(f"word_lm: hub dataset {dataset!r} split {split} has no column "
                                      f"{c.text_column!r} (it has {', '.join(split_rows[0])}); set text_column")
                lines[split] = [str(row[c.text_column] or "") for row in split_rows][: c.max_lines]
            return build_streams(lines, sources, vocab_size=c.vocab_size)

        local = Path(dataset).expanduser()
        files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else []
        if not (files or c.hub_revision):  # an unpinned hub id may change upstream; `datasets` caches the download
            return build(), sources
        options = {**self._options(), "hub": dataset, "config": c.hub_config, "revision": c.hub_revision,
                   "column": c.text_column}
        return self.cache.get_or_build(f"{self.name}-hub", options, files, build), sources

    # What gets recorded ----------------------------------------------------

    def _record(self, built: dict[str, Any], sources: dict[str, str], vocab: Vocabulary) -> None:
        c = self.config
        tokens = {split: len(built["streams"][split]) - 1 for split in SPLITS}
        kept = len(vocab) - len(vocab.specials)
        cut = "all" if kept == built["types"] else f"the {kept:,} most frequent of the"
        self.notes = {
            "perplexity": (
                "exp(summed NLL / N) over the N predicted tokens of the test stream (test_tokens): every line's "
                f"words + <EOS>, lines in file order, after one leading <EOS> as context; the stream is cut into "
                f"eval_batch_size columns, and at eval batch 1 each of its {tokens['test']:,} tokens is predicted "
                "once; the state is carried across BPTT windows and starts at zero for each pass"),
            "vocabulary": (
                f"{len(vocab):,} types, the softmax's size: {cut} {built['types']:,} training words "
                f"(vocab_size {c.vocab_size if c.vocab_size is not None else 'null'}) + {' '.join(vocab.specials)}; the corpus' <unk>/<eos> are ours; "
                f"{built['unknown']['test'] / tokens['test']:.1%} of test tokens are <UNK>"),
            "data": (", ".join(f"{split} {Path(sources[split]).name if not c.hub_dataset else sources[split]} "
                               f"({built['lines'][split]:,} lines, {tokens[split]:,} tokens)" for split in SPLITS)
                     + (f"; first {c.max_lines:,} lines of each split only" if c.max_lines else "")),
        }


@hookimpl
def register_tasks(register) -> None:
    register(WordLMTask)
