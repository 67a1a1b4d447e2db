"""The copy-memory task: layout, labels, the memoryless baseline, recall metric, registration."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from harness.core.loading import load_plugins
from harness.plugins.tasks.copy import CopyConfig, CopyTask, baseline_cross_entropy


def small(**options) -> CopyTask:
    return CopyTask(CopyConfig(**{"train_size": 300, "validation_size": 50, "test_size": 100, **options}))


@pytest.fixture(scope="module")
def data():
    return CopyTask().load()


def test_registered_as_plugin():
    assert load_plugins().tasks.get("copy") is CopyTask
    assert CopyTask.family == "tagging"
    assert CopyTask.primary_metric == "cross_entropy" and not CopyTask.higher_is_better


def test_defaults_and_vocabularies(data):
    data.check("copy")
    assert (len(data.train), len(data.validation), len(data.test)) == (3000, 500, 500)
    assert data.output_vocab.tokens == [str(i) for i in range(9)]  # tag id == digit: 0 blank, 1..8 symbols
    assert all(data.output_vocab.id(str(i)) == i for i in range(9))
    assert all(str(i) in data.input_vocab for i in range(10))


@pytest.mark.parametrize("delay", [1, 5, 20])
def test_layout_and_labels(delay):
    task = small(delay=delay)
    data = task.load()
    for split in data.splits().values():
        for example in split:
            x = data.input_vocab.decode(example.inputs)
            y = data.output_vocab.decode(example.target)
            assert len(x) == len(y) == delay + 20
            symbols = x[:10]
            assert all(s in "12345678" for s in symbols)
            assert x[10:10 + delay - 1] == ["0"] * (delay - 1)
            assert x[delay + 9] == "9"
            assert x[delay + 10:] == ["0"] * 10
            assert y[:delay + 10] == ["0"] * (delay + 10)
            assert y[delay + 10:] == symbols
            assert example.target == [int(s) for s in y]


def test_baseline_formula_matches_memoryless_predictor(data):
    delay = 20
    assert data.info["baseline_cross_entropy"] == pytest.approx(10 * math.log(8) / (delay + 20))
    # Memoryless predictor: P(blank) = 1 on the first T+10 steps, uniform over "1".."8" after.
    nll = steps = 0
    for example in data.test:
        for t, tag in enumerate(example.target):
            if t < delay + 10:
                p = 1.0 if tag == 0 else 0.0
            else:
                p = 1 / 8 if 1 <= tag <= 8 else 0.0
            nll -= math.log(p)
            steps += 1
    assert nll / steps == pytest.approx(data.info["baseline_cross_entropy"], rel=1e-12)
    assert baseline_cross_entropy(50) == pytest.approx(10 * math.log(8) / 70)


def test_recall_accuracy():
    task = small()
    data = task.load()
    assert task.evaluate([e.target for e in data.test], data.test) == {"recall_accuracy": 1.0}
    assert task.evaluate([[0] * len(e.target) for e in data.test], data.test) == {"recall_accuracy": 0.0}
    # First 5 recalled right, last 5 blank (never a symbol, so wrong): exactly half.
    half = [e.target[:-5] + [0] * 5 for e in data.test]
    assert task.evaluate(half, data.test)["recall_accuracy"] == pytest.approx(0.5)
    # A too-short prediction counts its missing steps as wrong.
    assert task.evaluate([e.target[:-10] for e in data.test], data.test)["recall_accuracy"] == 0.0


def test_deterministic_per_seed_and_splits_differ():
    def dump(task):
        return [(e.inputs, e.target) for split in task.load().splits().values() for e in split]

    assert dump(small()) == dump(small())
    assert dump(small()) != dump(small(data_seed=1))
    data = small().load()
    train = {tuple(e.inputs) for e in data.train}
    assert not train & {tuple(e.inputs) for e in data.test}
    assert [e.inputs for e in data.test] == [e.inputs for e in small(train_size=400).load().test]


def test_config_is_strict():
    with pytest.raises(ValidationError):
        CopyConfig(no_such_option=1)
    with pytest.raises(ValidationError):
        CopyConfig(delay=0)
