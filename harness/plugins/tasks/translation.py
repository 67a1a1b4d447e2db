"""Machine translation: an encoder-decoder reads a sentence and writes its translation (Tx ≠ Ty).

What it tests: the lecture notes' sequence-to-sequence architecture on real text, the
Multi30k German→English benchmark by default (Elliott et al. 2016; 29,000 / 1,014 / 1,000
pairs), scored the way the field scores translations.

Data (one of):

* line-aligned files ``<stem>.<lang>`` in ``<data_dir>/<subfolder>/`` (Multi30k:
  ``train.de``/``train.en``, ``val.*``, ``test2016.*``); line i of the source file is
  translated by line i of the target file;
* ``pairs_file``: one TSV file of ``source<TAB>target`` lines (extra columns ignored), split
  reproducibly by ``split_seed`` into train/validation/test. A first line of single-word labels
  (``id<TAB>en<TAB>de``) is a header, never a sentence pair: the columns named ``source_lang``
  and ``target_lang`` are read, in whatever order, and a header without them is an error.
  ``source_column``/``target_column`` choose the columns instead: numbers (from 0) for a file
  without a header, or the header's names;
* ``pairs_files``: one such TSV file per split;
* ``hub_dataset``: a Hugging Face dataset (e.g. ``bentrevett/multi30k``) whose rows hold the
  sentences in columns named by the language codes (or a ``translation`` dict column).

Only the training split is given (an aligned pair with null validation/test stems, or a hub
dataset without them)? The missing splits are drawn from it the same reproducible way.

Processing: Moses punctuation normalisation, lower-casing (default, as the reference
setups do) and the Moses tokenizer (sacremoses); vocabularies of the training split's
tokens seen at least ``min_freq`` times, at most ``max_vocab_size`` of them, plus <PAD>
<UNK> <BOS> <EOS>. Processed splits are cached (:class:`harness.data.reading.ProcessedCache`).

Metric ``bleu``: sacreBLEU's corpus BLEU of the detokenized outputs (Moses detokenizer)
against the raw reference sentences, lower-cased when the task lower-cases; its signature
is recorded with every run (note ``bleu_signature``).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from harness import hookimpl
from harness.training.decoding import DecodingSettings
from harness.core.errors import BadInputError, ConfigError
from harness.core.limits import MAX_BEAM_SIZE, MAX_SEED, MAX_SEQUENCE_LENGTH, MAX_SLICE, MAX_VOCAB_SIZE
from harness.core.tasks import Example, Task, TaskConfig, TaskData
from harness.data.reading import ProcessedCache, data_folder, load_hub_dataset, read_lines, require_file
from harness.core.vocab import BOS, EOS, PAD, Vocabulary
from harness.plugins.tasks.data_sets import MULTI30K
from harness.plugins.tasks.translation_pairs import Pair, checked_pair, read_tsv

SPLITS = ("train", "validation", "test")
#: A TSV column counted from 0 (a pairs file has a few columns; 1,000 is far beyond any).
ColumnIndex = Annotated[int, Field(le=1000)]  # below 0: the validator says why


class TranslationConfig(TaskConfig):
    _omit_when_default = frozenset({"source_column", "target_column"})

    source_lang: str = Field("de", pattern=r"^[A-Za-z][A-Za-z_-]*$", description=(
        "Source language code: the file suffix (train.de), the hub column, and the Moses rules used."))
    target_lang: str = Field("en", pattern=r"^[A-Za-z][A-Za-z_-]*$", description=(
        "Target language code, used like source_lang."))
    data_dir: str | None = Field(None, description=(
        "Folder that contains ``subfolder``; null: $HARNESS_DATA_DIR, else the per-user data folder (`harness data list` shows it)."))
    subfolder: str = Field("multi30k", description="The data set's folder inside data_dir.")
    train_stem: str = Field("train", description=(
        "Stem of the line-aligned training files (train.de, train.en: Multi30k's names)."))
    validation_stem: str | None = Field("val", description=(
        "Stem of the validation files; null: validation pairs are drawn from the training pairs."))
    test_stem: str | None = Field("test2016", description=(
        "Stem of the test files; null: test pairs are drawn from the training pairs."))
    pairs_file: str | None = Field(None, description=(
        "One TSV file of pairs (relative to the data folder, or absolute), split by split_seed."))
    pairs_files: dict[Literal["train", "validation", "test"], str] | None = Field(None, description=(
        "One TSV file per split: {train: …, validation: …, test: …}."))
    source_column: ColumnIndex | str | None = Field(
        None, description="TSV pairs: the source sentences' column, a number from 0 for a file without a header "
                          "or the header's name for it; null: the header's source_lang column, else column 0")
    target_column: ColumnIndex | str | None = Field(
        None, description="TSV pairs: the target sentences' column, like source_column; null: the header's "
                          "target_lang column, else column 1")
    hub_dataset: str | None = Field(None, description=(
        "A Hugging Face dataset id or local dataset folder, instead of files."))
    hub_config: str | None = Field(None, description="The hub dataset's configuration name, if it has several.")
    hub_revision: str | None = Field(None, description=(
        "Pin a hub revision; only pinned (or local) hub data is cached by this task."))
    validation_fraction: float = Field(0.1, gt=0, lt=1, description=(
        "Share of the pairs that goes to validation when splits are drawn."))
    test_fraction: float = Field(0.1, gt=0, lt=1, description=(
        "Share of the pairs that goes to test when splits are drawn."))
    split_seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed of the draw of validation and test pairs.")
    max_pairs: int | None = Field(None, ge=1, le=MAX_SLICE, description=(
        "Keep the first N pairs of each split (a quick slice, e.g. for CI); null: all."))
    lowercase: bool = Field(True, description="Lower-case both sides before tokenizing.")
    normalize_punctuation: bool = Field(True, description=(
        "Moses punctuation normalisation (quotes, dashes, spaces) before tokenizing."))
    min_freq: int = Field(2, ge=1, le=MAX_SLICE, description=(
        "Vocabulary: training tokens seen at least min_freq times, the max_vocab_size (K) most frequent."))
    max_vocab_size: int | None = Field(None, ge=1, le=MAX_VOCAB_SIZE, description=(
        "K: keep at most this many tokens per side (the most frequent); null: every token seen min_freq times."))
    beam_size: int = Field(1, ge=1, le=MAX_BEAM_SIZE, description=(
        "Decoding of validation and test outputs: 1 greedy, K > 1 beam search."))
    length_penalty: float = Field(0.0, ge=0, le=10, description=(
        "α of the length normalisation log P / Ty^α when ranking beam hypotheses (0: off)."))
    max_decode_length: int = Field(50, ge=1, le=MAX_SEQUENCE_LENGTH, description=(
        "Most tokens generated per sentence, <EOS> included."))

    @model_validator(mode="after")
    def _one_source(self) -> TranslationConfig:
        given = [name for name in ("pairs_file", "pairs_files", "hub_dataset") if getattr(self, name)]
        if len(given) > 1:
            raise ValueError(f"give one data source, not {' and '.join(given)}")
        if self.pairs_files is not None and set(self.pairs_files) != set(SPLITS):
            raise ValueError(f"pairs_files needs exactly train, validation and test (got {sorted(self.pairs_files)})")
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError("validation_fraction + test_fraction must leave pairs for training")
        if self.source_lang == self.target_lang:
            raise ValueError(f"source_lang and target_lang are both {self.source_lang!r}")
        self._check_columns()
        return self

    def _check_columns(self) -> None:
        source, target = self.source_column, self.target_column
        if (source is None) != (target is None):
            raise ValueError("give source_column and target_column together (or neither)")
        if source is None:
            return
        if isinstance(source, int) != isinstance(target, int):
            raise ValueError("source_column and target_column must both be numbers (no header) or both names")
        if source == target:
            raise ValueError(f"source_column and target_column are both {source!r}")
        if isinstance(source, int) and min(source, target) < 0:  # type: ignore[type-var]
            raise ValueError("column numbers count from 0")
        if not (self.pairs_file or self.pairs_files):
            raise ValueError("source_column/target_column choose TSV columns: give pairs_file or pairs_files")


def read_aligned(source_path: Path, target_path: Path) -> list[Pair]:
    """Pairs from two line-aligned files; their line counts must agree."""
    sources, targets = read_lines(source_path), read_lines(target_path)
    if len(sources) != len(targets):
        raise BadInputError(f"{source_path} has {len(sources)} lines but {target_path} has {len(targets)}; "
                            "line i of one file must be the translation of line i of the other")
    return [checked_pair(s, t, f"{source_path}:{n} / {target_path}:{n}")
            for n, (s, t) in enumerate(zip(sources, targets), 1)]


def hub_pairs(rows: Sequence[dict[str, Any]], source_lang: str, target_lang: str, where: str) -> list[Pair]:
    """Pairs from hub rows with one column per language, or a ``translation`` dict column."""
    pairs = []
    for number, row in enumerate(rows):
        texts = row.get("translation") if isinstance(row.get("translation"), dict) else row
        if source_lang not in texts or target_lang not in texts:
            raise ConfigError(f"{where}, row {number}: no {source_lang!r} and {target_lang!r} columns "
                              f"(found {', '.join(map(str, texts))}); set source_lang/target_lang to its columns")
        pairs.append(checked_pair(str(texts[source_lang]), str(texts[target_lang]), f"{where}, row {number}"))
    return pairs


def split_pairs(pairs: Sequence[Pair], fractions: dict[str, float], seed: int) -> dict[str, list[Pair]]:
    """Draw the ``fractions`` splits from ``pairs`` by a seeded shuffle; the rest is train.

    The same pairs and seed always give the same splits; each split keeps the file order.
    """
    order = list(range(len(pairs)))
    random.Random(f"translation-split:{seed}").shuffle(order)
    splits: dict[str, list[Pair]] = {}
    taken = 0
    for name, fraction in fractions.items():
        count = round(len(pairs) * fraction)
        splits[name] = [pairs[i] for i in sorted(order[taken:taken + count])]
        taken += count
    splits["train"] = [pairs[i] for i in sorted(order[taken:])]
    return splits


class TranslationTask(Task):
    """Translate sentences with an encoder-decoder; score with sacreBLEU."""

    name = "translation"
    data_sets = (MULTI30K,)
    family = "seq2seq"
    Config = TranslationConfig
    primary_metric = "bleu"
    higher_is_better = True

    def __init__(self, config: TranslationConfig | None = None) -> None:
        super().__init__(config)
        self._moses: dict[str, Any] = {}
        self.target_vocab: Vocabulary | None = None

    @property
    def decoding(self) -> DecodingSettings:
        """How validation and test outputs are decoded (read by the seq2seq family)."""
        return DecodingSettings(self.config.beam_size, self.config.max_decode_length, self.config.length_penalty)

    # Text processing -------------------------------------------------------

    def _tool(self, kind: str, lang: str) -> Any:
        if (kind, lang) not in self._moses:
            import sacremoses

            tools = {"normalizer": sacremoses.MosesPunctNormalizer, "tokenizer": sacremoses.MosesTokenizer,
                     "detokenizer": sacremoses.MosesDetokenizer}
            self._moses[kind, lang] = tools[kind](lang=lang)
        return self._moses[kind, lang]

    def _tokens(self, text: str, lang: str) -> list[str]:
        if self.config.normalize_punctuation:
            text = self._tool("normalizer", lang).normalize(text)
        if self.config.lowercase:
            text = text.lower()
        return self._tool("tokenizer", lang).tokenize(text, escape=False)

    def tokenize(self, text: str) -> list[str]:
        """A source sentence as training saw it: normalised, lower-cased, Moses-tokenized."""
        return self._tokens(text, self.config.source_lang)

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Target tokens as text (Moses detokenizer); <PAD>/<BOS>/<EOS> are dropped, <UNK> kept."""
        kept = [t for t in tokens if t not in (PAD, BOS, EOS)]
        return self._tool("detokenizer", self.config.target_lang).detokenize(kept, unescape=False)

    # Loading ---------------------------------------------------------------

    def _aligned_files(self) -> dict[str, tuple[Path, Path]]:
        """(source file, target file) per split whose stem is given."""
        config = self.config
        folder = data_folder(self.name, config.data_dir, config.subfolder)
        stems = {"train": config.train_stem, "validation": config.validation_stem, "test": config.test_stem}
        return {name: (require_file(self.name, folder / f"{stem}.{config.source_lang}"),
                       require_file(self.name, folder / f"{stem}.{config.target_lang}"))
                for name, stem in stems.items() if stem is not None}

    def _tsv_files(self) -> dict[str, Path]:
        """The TSV file per split (just ``train`` for a single pairs_file, whose splits are drawn)."""
        config = self.config
        files = config.pairs_files or {"train": config.pairs_file}
        return {name: self._path(file) for name, file in files.items()}

    def _path(self, file: str) -> Path:
        path = Path(file).expanduser()
        if not path.is_absolute():
            path = data_folder(self.name, self.config.data_dir, self.config.subfolder) / path
        return require_file(self.name, path)

    def _files(self) -> list[Path]:
        """Every file a file-based configuration reads (hashed into the cache key)."""
        if self.config.pairs_file or self.config.pairs_files:
            return list(self._tsv_files().values())
        return [path for pair in self._aligned_files().values() for path in pair]

    def _raw_splits(self) -> dict[str, list[Pair]]:
        """The pairs per split as read (the hub's rows, the TSV files or the aligned files)."""
        config = self.config
        if config.hub_dataset:
            rows = load_hub_dataset(self.name, config.hub_dataset, config_name=config.hub_config,
                                    revision=config.hub_revision)
            if "train" not in rows:
                raise ConfigError(f"{self.name}: hub dataset {config.hub_dataset!r} has no train split "
                                  f"(found {', '.join(rows) or 'none'})")
            return {name: hub_pairs(split_rows, config.source_lang, config.target_lang,
                                    f"{config.hub_dataset}: {name}") for name, split_rows in rows.items()}
        if config.pairs_file or config.pairs_files:
            chosen = None if config.source_column is None else (config.source_column, config.target_column)
            return {name: read_tsv(path, config.source_lang, config.target_lang, chosen)  # type: ignore[arg-type]
                    for name, path in self._tsv_files().items()}
        return {name: read_aligned(*pair) for name, pair in self._aligned_files().items()}

    def _complete(self, splits: dict[str, list[Pair]]) -> tuple[dict[str, list[Pair]], str | None]:
        """Draw the missing splits from the training pairs (seeded); also says how, for the notes."""
        fractions = {name: getattr(self.config, f"{name}_fraction") for name in ("validation", "test")
                     if name not in splits}
        if not fractions:
            return splits, None
        drawn = split_pairs(splits["train"], fractions, self.config.split_seed)
        shares = ", ".join(f"{name} {fraction:.0%}" for name, fraction in fractions.items())
        note = (f"{shares} of the {len(splits['train'])} training pairs drawn by a seeded shuffle "
                f"(split_seed {self.config.split_seed}); the rest is train")
        return {**splits, **drawn}, note

    def _processed(self) -> dict[str, Any]:
        """Tokenized splits with their raw targets (and the split note): built once, then cached."""
        import sacremoses

        config = self.config
        hub_splits = self._raw_splits() if config.hub_dataset else None

        def build() -> dict[str, Any]:
            splits, note = self._complete(hub_splits if hub_splits is not None else self._raw_splits())
            processed = {}
            for name in SPLITS:
                pairs = splits[name][: config.max_pairs]
                processed[name] = {"source": [self._tokens(s, config.source_lang) for s, _ in pairs],
                                   "target": [self._tokens(t, config.target_lang) for _, t in pairs],
                                   "reference": [t for _, t in pairs]}
            return {"splits": processed, "split_note": note}

        options = {**config.model_dump(exclude={"beam_size", "length_penalty", "max_decode_length", "min_freq",
                                                "max_vocab_size"}),
                   "sacremoses": getattr(sacremoses, "__version__", "?")}
        if hub_splits is not None:  # no files to hash: key the cache by the rows' content
            options["rows_sha256"] = hashlib.sha256(json.dumps(hub_splits).encode()).hexdigest()
        files = [] if hub_splits is not None else self._files()
        value = ProcessedCache().get_or_build("translation", options, files, build)
        if value["split_note"]:
            self.notes["split"] = value["split_note"]
        return value["splits"]

    def load(self) -> TaskData:
        config = self.config
        splits = self._processed()
        where = self._describe()
        for name in SPLITS:
            if not splits[name]["source"]:
                raise BadInputError(f"{self.name}: the {name} split of {where} has no sentence pairs; "
                                    "give a non-empty file (or a larger fraction when splits are drawn)")
        source_vocab = Vocabulary.build(splits["train"]["source"], min_freq=config.min_freq,
                                        max_size=config.max_vocab_size)
        self.target_vocab = Vocabulary.build(splits["train"]["target"], min_freq=config.min_freq,
                                             max_size=config.max_vocab_size)
        examples = {
            name: [Example(inputs=source_vocab.encode(s), target=self.target_vocab.encode(t), reference=r)
                   for s, t, r in zip(split["source"], split["target"], split["reference"])]
            for name, split in splits.items()
        }
        self._record_notes(where, source_vocab, {name: len(e) for name, e in examples.items()})
        return TaskData(train=examples["train"], validation=examples["validation"], test=examples["test"],
                        input_vocab=source_vocab, output_vocab=self.target_vocab,
                        info={"pairs": {name: len(e) for name, e in examples.items()},
                              "source_vocab_size": len(source_vocab), "target_vocab_size": len(self.target_vocab)})

    def _describe(self) -> str:
        """Where the pairs come from, for notes and messages: ``…/multi30k/{train,val,test2016}.{de,en}``."""
        config = self.config
        if config.hub_dataset:
            return f"hub dataset {config.hub_dataset}"
        if config.pairs_file or config.pairs_files:
            return ", ".join(str(path) for path in self._tsv_files().values())
        stems = ",".join(stem for stem in (config.train_stem, config.validation_stem, config.test_stem) if stem)
        folder = data_folder(self.name, config.data_dir, config.subfolder)
        return f"{folder}/{{{stems}}}.{{{config.source_lang},{config.target_lang}}}"

    def _record_notes(self, where: str, source_vocab: Vocabulary, counts: dict[str, int]) -> None:
        config, target_vocab = self.config, self.target_vocab
        slice_note = f", first {config.max_pairs} pairs of each split" if config.max_pairs else ""
        self.notes["data"] = (f"{config.source_lang}→{config.target_lang} from {where}{slice_note}: "
                              + ", ".join(f"{name} {count}" for name, count in counts.items()) + " pairs")
        self.notes["tokenization"] = (
            "sacremoses: " + ("punctuation normalised, " if config.normalize_punctuation else "")
            + ("lower-cased, " if config.lowercase else "") + "Moses tokenizer; outputs detokenized by the Moses "
            f"detokenizer ({config.target_lang}) before scoring")
        self.notes["vocabulary"] = (f"training tokens seen ≥ {config.min_freq} times"
                                    + (f", at most {config.max_vocab_size}" if config.max_vocab_size else "")
                                    + f", plus 4 specials: source {len(source_vocab)}, target {len(target_vocab)}")
        search = ("greedy" if config.beam_size == 1 else
                  f"beam search, K = {config.beam_size}, length normalisation α = {config.length_penalty:g}")
        self.notes["decoding"] = f"{search}, at most {config.max_decode_length} tokens including <EOS>"
        self.notes["perplexity"] = ("teacher-forced: exp(summed NLL of every reference token and the final <EOS>, "
                                    "each given the reference prefix / their number); not comparable with a "
                                    "perplexity computed on the model's own fed-back outputs")

    # Metrics ---------------------------------------------------------------

    def evaluate(self, predictions: Sequence[Sequence[int]], examples: Sequence[Example]) -> dict[str, float]:
        """sacreBLEU corpus BLEU of the detokenized outputs against the raw references."""
        if not examples or self.target_vocab is None:
            return {}
        hypotheses = [self.detokenize(self.target_vocab.decode(ids)) for ids in predictions]
        return self.bleu(hypotheses, [example.reference or "" for example in examples])

    def bleu(self, hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
        """BLEU of detokenized text; records sacreBLEU's signature in the notes."""
        from sacrebleu.metrics import BLEU

        metric = BLEU(lowercase=self.config.lowercase)
        score = metric.corpus_score(list(hypotheses), [list(references)])
        self.notes["bleu_signature"] = str(metric.get_signature())
        return {"bleu": score.score, "bleu_brevity_penalty": score.bp, "length_ratio": score.ratio}


@hookimpl
def register_tasks(register) -> None:
    register(TranslationTask)
