"""The adding problem: markers, targets, the 1/6 baseline, determinism, registration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from harness.core.loading import load_plugins
from harness.plugins.tasks.adding import BASELINE_MSE, AddingConfig, AddingTask


@pytest.fixture(scope="module")
def data():
    return AddingTask().load()


def test_registered_as_plugin():
    assert load_plugins().tasks.get("adding") is AddingTask
    assert AddingTask.family == "regression"
    assert AddingTask.primary_metric == "mse" and not AddingTask.higher_is_better


def test_shapes_and_defaults(data):
    data.check("adding")
    assert (len(data.train), len(data.validation), len(data.test)) == (3000, 500, 500)
    assert data.input_size == 2 and data.input_vocab is None and data.output_vocab is None
    assert all(len(e.inputs) == 50 and all(len(step) == 2 for step in e.inputs) for e in data.test)


def test_two_markers_one_per_half_and_target_is_their_sum(data):
    for split in data.splits().values():
        for example in split:
            values = [v for v, _ in example.inputs]
            marked = [t for t, (_, m) in enumerate(example.inputs) if m == 1.0]
            assert all(m in (0.0, 1.0) for _, m in example.inputs)
            assert all(0.0 <= v < 1.0 for v in values)
            half = len(example.inputs) // 2
            assert len(marked) == 2 and marked[0] < half <= marked[1]
            assert example.target == pytest.approx(values[marked[0]] + values[marked[1]], abs=1e-12)


def test_length_option():
    data = AddingTask(AddingConfig(length=7, train_size=50, validation_size=10, test_size=10)).load()
    assert {len(e.inputs) for split in data.splits().values() for e in split} == {7}


def test_constant_predictor_scores_one_sixth():
    n = 5000
    task = AddingTask(AddingConfig(train_size=1, validation_size=1, test_size=n))
    data = task.load()
    assert data.info["baseline_mse"] == pytest.approx(1 / 6) == BASELINE_MSE
    metrics = task.evaluate([1.0] * n, data.test)
    # (U1 + U2 - 1)^2 has variance E[X^4] - (1/6)^2 = 1/15 - 1/36 = 7/180: allow 4 standard errors.
    tolerance = 4 * math.sqrt(7 / 180 / n)
    assert abs(metrics["mse"] - 1 / 6) < tolerance
    assert metrics["mse_ratio_to_baseline"] == pytest.approx(metrics["mse"] * 6)
    # 1.0 is the best constant: the empirical mean of the targets is close to it.
    assert abs(np.mean([e.target for e in data.test]) - 1.0) < 4 * math.sqrt(1 / 6 / n)


def test_evaluate_perfect_predictions(data):
    metrics = AddingTask().evaluate([e.target for e in data.test], data.test)
    assert metrics == {"mse": 0.0, "mse_ratio_to_baseline": 0.0}


def test_deterministic_per_seed():
    def dump(seed: int, train_size: int = 100):
        config = AddingConfig(data_seed=seed, length=10, train_size=train_size, validation_size=20, test_size=20)
        data = AddingTask(config).load()
        return [(e.inputs, e.target) for split in data.splits().values() for e in split]

    assert dump(0) == dump(0)
    assert dump(0) != dump(1)
    assert dump(0)[-20:] == dump(0, train_size=150)[-20:]  # test set independent of train size
    first = dump(0)
    assert first[:20] != first[-20:]  # splits come from different streams


def test_config_is_strict():
    with pytest.raises(ValidationError):
        AddingConfig(no_such_option=1)
    with pytest.raises(ValidationError):
        AddingConfig(length=1)
