"""The adding problem (many-to-one regression over real-valued vectors).

What it tests: long-range memory of *values*, not just of a bit. Each of ``length`` steps
carries two features, a value ~ U[0, 1] and a marker in {0, 1}. Exactly two steps are
marked, one uniformly in the first half and one uniformly in the second half; the target
is the sum of the two marked values. The model must notice the first marked value, hold
it across up to ``length`` steps of distracting noise, and add the second.

Sources: Hochreiter & Schmidhuber (1997), "Long Short-Term Memory", Neural Computation
9(8), experiment 4; the one-marker-per-half variant used here is that of Le, Jaitly &
Hinton (2015), "A Simple Way to Initialize Recurrent Networks of Rectified Linear Units"
(also Arjovsky, Shah & Bengio 2016).

Baseline: the best constant prediction is E[U1 + U2] = 1, which scores
MSE = Var(U1 + U2) = 2 · 1/12 = 1/6. A model has learned something only when its MSE
is clearly below 1/6; ``mse_ratio_to_baseline`` reports MSE / (1/6).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field, model_validator

from harness import hookimpl
from harness.core.limits import MAX_SEED, MAX_SEQUENCE_LENGTH, MAX_SPLIT_SIZE, check_generated_steps
from harness.core.tasks import Example, Task, TaskConfig, TaskData

#: MSE of the constant predictor 1.0: Var(U1 + U2) for independent U ~ U[0, 1].
BASELINE_MSE = 1.0 / 6.0
_SPLIT_STREAMS = {"train": 0, "validation": 1, "test": 2}


class AddingConfig(TaskConfig):
    data_seed: int = Field(0, ge=0, le=MAX_SEED, description=(
        "Seed of the generator: the same config always gives identical splits."))
    length: int = Field(50, ge=2, le=MAX_SEQUENCE_LENGTH, description=(
        "Steps per sequence (T); 50 already defeats a plain tanh RNN without care."))
    train_size: int = Field(3000, ge=1, le=MAX_SPLIT_SIZE, description=(
        "Training sequences; a few thousand keeps a 2-core CPU quickstart quick."))
    validation_size: int = Field(500, ge=1, le=MAX_SPLIT_SIZE, description=(
        "Validation sequences (model selection / early stopping)."))
    test_size: int = Field(500, ge=1, le=MAX_SPLIT_SIZE, description=(
        "Test sequences; 500 estimates MSE near the 1/6 baseline to about ±0.01."))

    @model_validator(mode="after")
    def _fits_in_memory(self) -> AddingConfig:
        check_generated_steps(self.train_size + self.validation_size + self.test_size, self.length)
        return self


def generate(seed: int, split: str, size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``(inputs (size, length, 2), targets (size,))``; each split has its own random stream."""
    rng = np.random.default_rng([seed, _SPLIT_STREAMS[split]])
    values = rng.random((size, length))
    half = length // 2
    first = rng.integers(0, half, size)  # uniformly in the first half
    second = rng.integers(half, length, size)  # uniformly in the second half
    markers = np.zeros((size, length))
    rows = np.arange(size)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    targets = values[rows, first] + values[rows, second]
    return np.stack([values, markers], axis=-1), targets


class AddingTask(Task):
    """Sum the two marked values of a noisy sequence (Hochreiter & Schmidhuber 1997)."""

    name = "adding"
    family = "regression"
    input_size = 2  # (value, marker) per step
    Config = AddingConfig
    primary_metric = "mse"
    higher_is_better = False

    def load(self) -> TaskData:
        c = self.config
        splits = {}
        for split, size in (("train", c.train_size), ("validation", c.validation_size), ("test", c.test_size)):
            inputs, targets = generate(c.data_seed, split, size, c.length)
            splits[split] = [Example(inputs=x, target=float(y)) for x, y in zip(inputs.tolist(), targets.tolist())]
        return TaskData(
            train=splits["train"], validation=splits["validation"], test=splits["test"],
            input_size=2, output_vocab=None,
            info={"baseline_mse": BASELINE_MSE, "baseline": "constant 1.0", "sequence_length": c.length},
        )

    def chance_level(self) -> float:
        return BASELINE_MSE  # the constant 1.0

    def evaluate(self, predictions: Sequence[float], examples: Sequence[Example]) -> dict[str, float]:
        if not examples:
            return {}
        errors = np.asarray(predictions, dtype=float) - np.asarray([e.target for e in examples], dtype=float)
        mse = float(np.mean(errors**2))
        return {"mse": mse, "mse_ratio_to_baseline": mse / BASELINE_MSE}


@hookimpl
def register_tasks(register) -> None:
    register(AddingTask)
