"""Balanced brackets: a character-level language model of the Dyck language over ``( ) [ ]``.

What it tests: the lecture notes' "Language Model and Sequence Generation" and
"Sampling Novel Sequences" on a language whose rules are exact. To predict the next
character the model must track the stack of open brackets: how deep it is (whether
<EOS> is allowed) and which bracket type is on top (which closer is allowed) — a
counter plus a stack, kept across the whole string. Perplexity measures the
prediction; sampling novel strings and checking they are well formed measures whether
the model learned the rules rather than surface statistics.

Sources: the lecture notes (language model, sampling, character-level RNN) for the
set-up; the Dyck-language probes of recurrent networks for the language, e.g.
Sennhauser & Berwick (2018), "Evaluating the Ability of LSTMs to Learn Context-Free
Grammars" (BlackboxNLP), and Suzgun, Gehrmann, Belinkov & Shieber (2019),
"Memory-Augmented Recurrent Neural Networks Can Learn Generalized Dyck Languages".

Generator: the length L is drawn uniformly among the even numbers in
[``min_length``, ``max_length``]; then a random walk emits L characters, opening a
bracket (type uniform) with probability ``open_probability`` whenever opening is
allowed (depth below ``max_depth`` and enough steps left to close everything) and
closing the bracket on top of the stack otherwise. Every string is unique across all
splits, so test perplexity is never measured on strings seen in training.

The empty string: it *is* in the Dyck language, but :func:`is_well_formed` returns False
for it on purpose — every training string is non-empty, and counting an empty sample
as well formed would let a model that emits <EOS> at once score a perfect rate.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from pydantic import Field, model_validator

from harness import hookimpl
from harness.core.errors import ConfigError
from harness.core.limits import MAX_SEED, MAX_SEQUENCE_LENGTH, MAX_SPLIT_SIZE, check_generated_steps
from harness.core.tasks import Example, Task, TaskConfig, TaskData
from harness.core.vocab import Vocabulary

PAIRS: dict[str, str] = {"(": ")", "[": "]"}
OPENERS: tuple[str, ...] = tuple(PAIRS)
CLOSERS: dict[str, str] = {close: open_ for open_, close in PAIRS.items()}
CHARACTERS: tuple[str, ...] = ("(", ")", "[", "]")


class BracketsConfig(TaskConfig):
    data_seed: int = Field(0, ge=0, le=MAX_SEED, description=(
        "Seed of the generator: the same config always gives identical splits."))
    min_length: int = Field(2, ge=2, le=MAX_SEQUENCE_LENGTH, description=(
        "Shortest string in characters (rounded up to even); 2 is a single pair."))
    max_length: int = Field(20, ge=2, le=MAX_SEQUENCE_LENGTH, description=(
        "Longest string in characters (odd values round down); 20 keeps sequences CPU-short."))
    max_depth: int = Field(5, ge=1, le=MAX_SEQUENCE_LENGTH, description=(
        "Deepest nesting allowed: how much stack the model must keep."))
    open_probability: float = Field(0.5, gt=0.0, lt=1.0, description=(
        "Chance of opening when both opening and closing are allowed; higher nests deeper."))
    train_size: int = Field(2000, ge=1, le=MAX_SPLIT_SIZE, description=(
        "Training strings; a few thousand keeps a 2-core CPU quickstart quick."))
    validation_size: int = Field(500, ge=1, le=MAX_SPLIT_SIZE, description=(
        "Validation strings (model selection / early stopping)."))
    test_size: int = Field(500, ge=1, le=MAX_SPLIT_SIZE, description="Test strings (perplexity).")

    @model_validator(mode="after")
    def _check_lengths(self) -> BracketsConfig:
        if self.even_lengths == []:
            raise ValueError(f"no even length lies in min_length..max_length = {self.min_length}..{self.max_length}")
        check_generated_steps(self.train_size + self.validation_size + self.test_size, self.max_length)
        return self

    @property
    def even_lengths(self) -> list[int]:
        return [n for n in range(self.min_length, self.max_length + 1) if n % 2 == 0]


def is_well_formed(tokens: Iterable[str]) -> bool:
    """True iff ``tokens`` is a non-empty, balanced and properly nested string of ``()[]``.

    Accepts a list of single-character tokens or a plain string. Any other token
    (e.g. ``<UNK>``) makes it ill formed; the empty string is *not* counted (see module doc).
    """
    stack: list[str] = []
    empty = True
    for token in tokens:
        empty = False
        if token in PAIRS:
            stack.append(token)
        elif token in CLOSERS:
            if not stack or stack.pop() != CLOSERS[token]:
                return False
        else:
            return False
    return not empty and not stack


def depth_of(tokens: Iterable[str]) -> int:
    """The deepest nesting of a string (assumed well formed)."""
    depth = deepest = 0
    for token in tokens:
        depth += 1 if token in PAIRS else -1
        deepest = max(deepest, depth)
    return deepest


def generate_string(rng: random.Random, length: int, max_depth: int, open_probability: float) -> str:
    """One balanced string of exactly ``length`` (even) characters and depth <= ``max_depth``."""
    stack: list[str] = []
    out: list[str] = []
    for step in range(length):
        remaining = length - step  # including this step; remaining - depth stays even
        can_open = len(stack) < max_depth and len(stack) + 1 <= remaining - 1
        can_close = bool(stack)
        if can_open and (not can_close or rng.random() < open_probability):
            bracket = rng.choice(OPENERS)
            stack.append(bracket)
            out.append(bracket)
        else:
            out.append(PAIRS[stack.pop()])
    return "".join(out)


def generate_splits(config: BracketsConfig) -> dict[str, list[str]]:
    """Distinct strings for test, validation, then train (so a split's size never shifts the test set)."""
    rng = random.Random(f"brackets:{config.data_seed}")
    lengths = config.even_lengths
    seen: set[str] = set()
    splits: dict[str, list[str]] = {}
    for split, size in (("test", config.test_size), ("validation", config.validation_size),
                        ("train", config.train_size)):
        strings: list[str] = []
        attempts = 0
        while len(strings) < size:
            attempts += 1
            if attempts > 200 * size + 1000:
                raise ConfigError(
                    f"brackets: found only {len(strings)} of {size} distinct {split} strings up to length "
                    f"{config.max_length} and depth {config.max_depth}; raise max_length/max_depth or lower the sizes."
                )
            text = generate_string(rng, rng.choice(lengths), config.max_depth, config.open_probability)
            if text not in seen:
                seen.add(text)
                strings.append(text)
        splits[split] = strings
    return splits


class BracketsTask(Task):
    """Model balanced bracket strings character by character, then sample new ones."""

    name = "brackets"
    family = "language_model"
    Config = BracketsConfig
    primary_metric = "perplexity"
    higher_is_better = False

    def load(self) -> TaskData:
        vocab = Vocabulary(list(CHARACTERS))
        splits = {name: [Example(inputs=vocab.encode(text)) for text in strings]
                  for name, strings in generate_splits(self.config).items()}
        lengths = [len(e.inputs) for e in splits["train"]]
        return TaskData(
            train=splits["train"], validation=splits["validation"], test=splits["test"],
            input_vocab=vocab, output_vocab=vocab,
            info={
                "max_length": self.config.max_length,
                "max_depth": self.config.max_depth,
                "mean_train_length": sum(lengths) / len(lengths),
                "empty_sample_well_formed": False,
            },
        )

    def evaluate_samples(self, samples: Sequence[list[str]]) -> dict[str, float]:
        if not samples:
            return {}
        return {
            "well_formed_rate": sum(is_well_formed(s) for s in samples) / len(samples),
            "mean_sample_length": sum(len(s) for s in samples) / len(samples),
        }


@hookimpl
def register_tasks(register) -> None:
    register(BracketsTask)
