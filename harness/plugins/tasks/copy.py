"""The copy-memory task (many-to-many tagging, Tx = Ty).

What it tests: storing ``copy_length`` (10) symbols verbatim and recalling them after a
delay of ``delay`` (T) blank steps — memory capacity over a long gap, the situation the
lecture notes' vanishing-gradient section describes, with more than one bit to keep.

Alphabet: blank ``0``, symbols ``1``..``8``, delimiter ``9``. With m = ``copy_length``:

    input : m random symbols, T-1 blanks, the delimiter, m blanks      (length T + 2m)
    target: T + m blanks, then the m symbols in the same order          (length T + 2m)

Sources: Hochreiter & Schmidhuber (1997), "Long Short-Term Memory", Neural Computation
9(8) (the long-delay recall experiments); the exact form above is that of Arjovsky,
Shah & Bengio (2016), "Unitary Evolution Recurrent Neural Networks", ICML.

Baseline: a memoryless model predicts blanks for the first T + m steps (exactly right)
and a uniform guess over the 8 symbols for the last m, so its mean per-step cross-entropy
(natural log, over all T + 2m steps) is ``m · ln 8 / (T + 2m)`` = ``10 ln 8 / (T + 20)``.
A model beats it only by remembering the symbols. ``recall_accuracy`` is the share of
the recalled symbols predicted right (chance 1/8).

Vocabularies: targets use ``Vocabulary(["0", ..., "8"], specials=())`` so tag id ==
digit (0 = blank, 1..8 = symbols). Inputs use the default specials (<PAD> is id 0 so
padded batches are zeros), i.e. input id = digit + 4; tokens are the strings "0".."9".
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from pydantic import Field, model_validator

from harness import hookimpl
from harness.core.limits import MAX_SEED, MAX_SEQUENCE_LENGTH, MAX_SPLIT_SIZE, check_generated_steps
from harness.core.tasks import Example, Task, TaskConfig, TaskData
from harness.core.vocab import Vocabulary

BLANK, DELIMITER = "0", "9"
SYMBOLS: tuple[str, ...] = tuple(str(i) for i in range(1, 9))


class CopyConfig(TaskConfig):
    data_seed: int = Field(0, ge=0, le=MAX_SEED, description=(
        "Seed of the generator: the same config always gives identical splits."))
    delay: int = Field(20, ge=1, le=MAX_SEQUENCE_LENGTH, description=(
        "T, the blank steps between the last symbol and the delimiter plus one; 20 suits a CPU quickstart."))
    copy_length: int = Field(10, ge=1, le=MAX_SEQUENCE_LENGTH, description=(
        "Symbols to remember (10 in Arjovsky et al.); the sequence length is delay + 2 * copy_length."))
    train_size: int = Field(3000, ge=1, le=MAX_SPLIT_SIZE, description=(
        "Training sequences; a few thousand keeps a 2-core CPU quickstart quick."))
    validation_size: int = Field(500, ge=1, le=MAX_SPLIT_SIZE, description=(
        "Validation sequences (model selection / early stopping)."))
    test_size: int = Field(500, ge=1, le=MAX_SPLIT_SIZE, description=(
        "Test sequences: per-step cross-entropy and recall accuracy."))

    @model_validator(mode="after")
    def _fits_in_memory(self) -> CopyConfig:
        check_generated_steps(self.train_size + self.validation_size + self.test_size,
                              self.delay + 2 * self.copy_length)
        return self


def baseline_cross_entropy(delay: int, copy_length: int = 10) -> float:
    """Mean per-step cross-entropy (nats) of the memoryless predictor: m · ln 8 / (T + 2m)."""
    return copy_length * math.log(len(SYMBOLS)) / (delay + 2 * copy_length)


def make_sequence(symbols: Sequence[str], delay: int) -> tuple[list[str], list[str]]:
    """``(input tokens, target tokens)`` for the given symbols and delay T."""
    m = len(symbols)
    inputs = list(symbols) + [BLANK] * (delay - 1) + [DELIMITER] + [BLANK] * m
    target = [BLANK] * (delay + m) + list(symbols)
    return inputs, target


def generate(seed: int, split: str, size: int, delay: int, copy_length: int) -> list[tuple[list[str], list[str]]]:
    """``size`` (input, target) token pairs; each split has its own random stream."""
    rng = random.Random(f"copy:{seed}:{split}")
    return [make_sequence([rng.choice(SYMBOLS) for _ in range(copy_length)], delay) for _ in range(size)]


class CopyTask(Task):
    """Recall 10 symbols after a delay of T blanks (Arjovsky, Shah & Bengio 2016)."""

    name = "copy"
    family = "tagging"
    Config = CopyConfig
    primary_metric = "cross_entropy"
    higher_is_better = False

    def load(self) -> TaskData:
        c = self.config
        input_vocab = Vocabulary([BLANK, *SYMBOLS, DELIMITER])
        output_vocab = Vocabulary([BLANK, *SYMBOLS], specials=())
        splits = {}
        for split, size in (("train", c.train_size), ("validation", c.validation_size), ("test", c.test_size)):
            pairs = generate(c.data_seed, split, size, c.delay, c.copy_length)
            splits[split] = [Example(inputs=input_vocab.encode(x), target=output_vocab.encode(y)) for x, y in pairs]
        return TaskData(
            train=splits["train"], validation=splits["validation"], test=splits["test"],
            input_vocab=input_vocab, output_vocab=output_vocab,
            info={
                "baseline_cross_entropy": baseline_cross_entropy(c.delay, c.copy_length),
                "baseline": "memoryless: blanks, then uniform over the 8 symbols",
                "chance_recall_accuracy": 1 / len(SYMBOLS),
                "sequence_length": c.delay + 2 * c.copy_length,
            },
        )

    def chance_level(self) -> float:
        return baseline_cross_entropy(self.config.delay, self.config.copy_length)

    def evaluate(self, predictions: Sequence[Sequence[int]], examples: Sequence[Example]) -> dict[str, float]:
        m = self.config.copy_length
        correct = total = 0
        for predicted, example in zip(predictions, examples):
            target = list(example.target)
            start = len(target) - m  # the recall steps are the last m
            for step in range(start, len(target)):
                total += 1
                correct += step < len(predicted) and int(predicted[step]) == target[step]
        return {"recall_accuracy": correct / total} if total else {}


@hookimpl
def register_tasks(register) -> None:
    register(CopyTask)
