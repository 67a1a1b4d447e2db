"""Numbers to words: an encoder–decoder (seq2seq) task with Tx ≠ Ty.

What it tests: the lecture notes' last architecture in "Different Types of RNNs" — a
many-to-many model whose input and output lengths differ, as in machine translation.
The encoder reads the digits of a number, e.g. ``4 2 1``, and the decoder writes it in
English words, ``four hundred twenty one``. The mapping is exact, so the test set has
one right answer per source; the model must learn place value (the same digit "4" reads
"four", "forty" or "four hundred"), skip zeros ("one hundred five") and emit a
different number of tokens than it read.

Wording: American style without "and" and without hyphens ("two thousand twenty one",
"ninety nine"), short scale (thousand, million, billion). Written by
:func:`number_to_words`; numbers up to 999,999,999,999 are supported.

Source: the notes' encoder–decoder architecture (Sutskever, Vinyals & Le 2014,
"Sequence to Sequence Learning with Neural Networks"; Cho et al. 2014); number
verbalisation is a classic toy translation task (e.g. Sproat & Jaitly 2016, "RNN
Approaches to Text Normalization: A Challenge").

Splits hold distinct numbers (drawn without replacement), so test accuracy measures
generalisation to numbers never seen in training.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pydantic import Field, model_validator

from harness import hookimpl
from harness.core.limits import MAX_SEED, MAX_SPLIT_SIZE
from harness.core.tasks import Example, Task, TaskConfig, TaskData
from harness.core.vocab import Vocabulary

ONES: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)
TENS: tuple[str, ...] = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
SCALES: tuple[tuple[int, str], ...] = ((10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
MAX_NUMBER = 10**12 - 1
#: Every word :func:`number_to_words` can emit, in a fixed order.
WORDS: tuple[str, ...] = ONES + TENS[2:] + ("hundred",) + tuple(word for _, word in reversed(SCALES))
DIGITS: tuple[str, ...] = tuple("0123456789")


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [ONES[hundreds], "hundred"]
    if rest >= 20:
        words.append(TENS[rest // 10])
        if rest % 10:
            words.append(ONES[rest % 10])
    elif rest:
        words.append(ONES[rest])
    return words


def number_to_words(n: int) -> list[str]:
    """English words of ``0 <= n <= 999,999,999,999``: 2021 → ["two", "thousand", "twenty", "one"]."""
    if not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"number_to_words handles 0..{MAX_NUMBER}, not {n}")
    if n == 0:
        return ["zero"]
    words: list[str] = []
    for value, name in SCALES:
        count, n = divmod(n, value)
        if count:
            words += _below_thousand(count) + [name]
    return words + _below_thousand(n)


def number_to_digits(n: int) -> list[str]:
    """The source tokens: decimal digits without leading zeros, ``421`` → ["4", "2", "1"]."""
    return list(str(n))


class NumbersConfig(TaskConfig):
    data_seed: int = Field(0, ge=0, le=MAX_SEED, description=(
        "Seed of the generator: the same config always gives identical splits."))
    min_number: int = Field(0, ge=0, le=MAX_NUMBER, description="Smallest number drawn.")
    max_number: int = Field(9999, ge=0, le=MAX_NUMBER, description=(
        "Largest number drawn; 9999 gives 1–4 source digits and 1–6 target words."))
    train_size: int = Field(3000, ge=1, le=MAX_SPLIT_SIZE, description=(
        "Training pairs; about a third of 0..9999, so most numbers stay unseen."))
    validation_size: int = Field(500, ge=1, le=MAX_SPLIT_SIZE, description=(
        "Validation pairs (model selection / early stopping)."))
    test_size: int = Field(500, ge=1, le=MAX_SPLIT_SIZE, description=(
        "Test pairs, all numbers absent from train and validation."))

    @model_validator(mode="after")
    def _check_range(self) -> NumbersConfig:
        if self.max_number < self.min_number:
            raise ValueError(f"max_number ({self.max_number}) must be >= min_number ({self.min_number})")
        available = self.max_number - self.min_number + 1
        needed = self.train_size + self.validation_size + self.test_size
        if needed > available:
            raise ValueError(f"the splits need {needed} distinct numbers but "
                             f"{self.min_number}..{self.max_number} holds only {available}")
        return self


def split_numbers(config: NumbersConfig) -> dict[str, list[int]]:
    """Distinct numbers per split: test first, then validation, then train, from one shuffle.

    Drawing the test set first means changing ``train_size`` never changes the test set.
    """
    rng = random.Random(f"numbers:{config.data_seed}")
    total = config.test_size + config.validation_size + config.train_size
    drawn = rng.sample(range(config.min_number, config.max_number + 1), total)
    test_end = config.test_size
    validation_end = test_end + config.validation_size
    return {"train": drawn[validation_end:], "validation": drawn[test_end:validation_end], "test": drawn[:test_end]}


class NumbersTask(Task):
    """Read digits, write the number in English words (encoder–decoder, Tx ≠ Ty)."""

    name = "numbers"
    family = "seq2seq"
    Config = NumbersConfig
    primary_metric = "exact_match"
    higher_is_better = True

    def load(self) -> TaskData:
        input_vocab = Vocabulary(list(DIGITS))
        output_vocab = Vocabulary(list(WORDS))
        splits = {
            name: [Example(inputs=input_vocab.encode(number_to_digits(n)),
                           target=output_vocab.encode(number_to_words(n))) for n in numbers]
            for name, numbers in split_numbers(self.config).items()
        }
        targets = [len(e.target) for examples in splits.values() for e in examples]
        return TaskData(
            train=splits["train"], validation=splits["validation"], test=splits["test"],
            input_vocab=input_vocab, output_vocab=output_vocab,
            info={
                "number_range": [self.config.min_number, self.config.max_number],
                "max_source_length": len(str(self.config.max_number)),
                "max_target_length": max(targets),
            },
        )

    def evaluate(self, predictions: Sequence[Sequence[int]], examples: Sequence[Example]) -> dict[str, float]:
        """Exact match per example; token accuracy micro-averaged over reference positions."""
        if not examples:
            return {}
        exact = correct = total = 0
        for predicted, example in zip(predictions, examples):
            predicted, reference = [int(i) for i in predicted], list(example.target)
            exact += predicted == reference
            correct += sum(p == r for p, r in zip(predicted, reference))
            total += len(reference)
        return {"exact_match": exact / len(examples), "token_accuracy": correct / total}


@hookimpl
def register_tasks(register) -> None:
    register(NumbersTask)
