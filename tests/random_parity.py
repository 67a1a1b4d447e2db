"""A tiny classification task of random token sequences and random labels, for in-process training tests.

Nothing to learn on purpose: the tests that use it look at what training does (checkpoints, resumes,
gradients), not at what it learns. 48 training examples (6 batches of 8), 16 validation, 16 test.
"""

from __future__ import annotations

import random

from harness.core.tasks import Example, Task, TaskData
from harness.core.vocab import Vocabulary


class ParityTask(Task):
    name = "parity"
    family = "classification"
    primary_metric = "accuracy"
    higher_is_better = True


def random_parity_data() -> TaskData:
    """The same examples every call: 5 tokens of a 20-word vocabulary each, labels a or b."""
    rng = random.Random(0)
    vocab = Vocabulary([f"w{i}" for i in range(20)])

    def split(count: int) -> list[Example]:
        return [Example([rng.randrange(4, len(vocab)) for _ in range(5)], rng.randrange(2)) for _ in range(count)]

    classes = Vocabulary(["a", "b"], specials=())
    return TaskData(split(48), split(16), split(16), input_vocab=vocab, output_vocab=classes)
