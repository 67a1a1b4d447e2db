"""Parity: is the number of 1s in a bit string odd? A complete task plugin in one module.

Classification (many-to-one): the inputs are the bits as tokens "0"/"1", the target is
"even" or "odd". Every example carries its length bucket as its group, so the harness
also reports accuracy per bucket (``accuracy/len-05-08`` ...): parity is easy for short
strings and hard for long ones, which is what the groups show.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pydantic import Field, model_validator

from harness import Example, Task, TaskConfig, TaskData, Vocabulary, hookimpl


class ParityConfig(TaskConfig):
    """The options an experiment file may set under ``tasks[...].options``."""

    data_seed: int = Field(0, ge=0, le=2**32 - 1, description=(
        "Seed of the generator: the same options always give identical splits, whatever the run's seed."))
    min_length: int = Field(1, ge=1, le=1000, description="Shortest bit string.")
    max_length: int = Field(12, ge=1, le=1000, description="Longest bit string.")
    bucket_width: int = Field(4, ge=1, le=1000, description="Width of the length buckets reported per group.")
    train_size: int = Field(2000, ge=1, le=1_000_000, description="Training strings.")
    validation_size: int = Field(300, ge=1, le=1_000_000, description="Validation strings (early stopping).")
    test_size: int = Field(300, ge=1, le=1_000_000, description="Test strings.")

    @model_validator(mode="after")
    def _lengths_in_order(self) -> ParityConfig:
        # Checked when the experiment file is read: exit 2 with file:line, before anything runs.
        if self.max_length < self.min_length:
            raise ValueError(f"max_length ({self.max_length}) must be >= min_length ({self.min_length})")
        return self


class ParityTask(Task):
    """Say whether a bit string holds an odd number of 1s, read one bit per step."""

    name = "parity"
    family = "classification"
    Config = ParityConfig
    primary_metric = "accuracy"
    higher_is_better = True

    def load(self) -> TaskData:
        c = self.config
        input_vocab = Vocabulary(["0", "1"])  # with <PAD> (id 0), <UNK>, <BOS>, <EOS> first
        output_vocab = Vocabulary(["even", "odd"], specials=())  # class id 0 = even, 1 = odd

        def split(name: str, size: int) -> list[Example]:
            rng = random.Random(f"parity:{c.data_seed}:{name}")  # its own stream per split
            examples = []
            for _ in range(size):
                bits = [rng.choice("01") for _ in range(rng.randint(c.min_length, c.max_length))]
                label = "odd" if bits.count("1") % 2 else "even"
                examples.append(Example(inputs=input_vocab.encode(bits), target=output_vocab.id(label),
                                        group=self.bucket(len(bits))))
            return examples

        return TaskData(
            train=split("train", c.train_size), validation=split("validation", c.validation_size),
            test=split("test", c.test_size), input_vocab=input_vocab, output_vocab=output_vocab,
            info={"chance_accuracy": 0.5},  # logged with every run as a parameter
        )

    def bucket(self, length: int) -> str:
        """The group of a string: ``len-01-04``, ``len-05-08``, ... (zero-padded so they sort)."""
        low = (length - 1) // self.config.bucket_width * self.config.bucket_width + 1
        return f"len-{low:02d}-{low + self.config.bucket_width - 1:02d}"

    def evaluate(self, predictions: Sequence[int], examples: Sequence[Example]) -> dict[str, float]:
        """A metric of this task's own, next to the family's loss, accuracy and accuracy/<group>."""
        odd = [p for p, e in zip(predictions, examples) if e.target == 1]
        return {"odd_recall": sum(p == 1 for p in odd) / len(odd)} if odd else {}


@hookimpl
def register_tasks(register) -> None:
    register(ParityTask)
