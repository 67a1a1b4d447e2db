"""Documented upper bounds for plugin options, so a huge number is refused when the file is read.

Every numeric option of a built-in cell or task has a maximum from here (issue #18): a value
beyond it would allocate more memory than a machine has, or run for ever. Third-party
plugins may use the same constants in their own ``Field(le=...)``.
"""

from __future__ import annotations

#: Seeds: numpy and torch take seeds below 2**32.
MAX_SEED = 2**32 - 1
#: Examples generated or read per split (train, validation or test).
MAX_SPLIT_SIZE = 1_000_000
#: Time steps (tokens, characters, distances) of one generated sequence.
MAX_SEQUENCE_LENGTH = 10_000
#: Time steps generated over all three splits of a synthetic task together: about 2.5 GB of
#: Python lists for the adding task's (value, marker) pairs, far less for token tasks.
MAX_GENERATED_STEPS = 20_000_000
#: Vocabulary entries (K): larger than any corpus the built-in tasks read (WikiText-103: 267k).
MAX_VOCAB_SIZE = 1_000_000
#: Classes of a classification task; one output unit each.
MAX_CLASSES = 100_000
#: "Keep only the first N" options: they cut what is read and never allocate by themselves.
MAX_SLICE = 10**12
#: Beam width K of beam search: each step scores K × vocabulary candidates.
MAX_BEAM_SIZE = 1_000
#: A column index of a delimited file, counted from 0 (negative: from the end).
MAX_COLUMN = 10_000
#: Initial biases and similar scales: beyond this a sigmoid or tanh is saturated anyway.
MAX_BIAS = 100.0


def check_generated_steps(total_examples: int, steps_per_example: int) -> None:
    """Refuse a synthetic task whose splits together would hold more than MAX_GENERATED_STEPS steps.

    Raises ValueError (a pydantic validator turns it into a one-line configuration error).
    """
    steps = total_examples * steps_per_example
    if steps > MAX_GENERATED_STEPS:
        raise ValueError(
            f"train_size + validation_size + test_size = {total_examples} sequences of up to {steps_per_example} "
            f"steps is {steps:,} steps in memory; at most {MAX_GENERATED_STEPS:,} are allowed: use fewer or "
            "shorter sequences"
        )
