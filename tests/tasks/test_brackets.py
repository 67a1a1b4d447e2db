"""The brackets language-model task: well-formedness, generator limits, samples, registration."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from harness.core.errors import ConfigError
from harness.core.loading import load_plugins
from harness.core.vocab import SPECIALS
from harness.plugins.tasks.brackets import BracketsConfig, BracketsTask, is_well_formed


def reduces_to_empty(text: str) -> bool:
    """Independent check: strike out adjacent matched pairs until nothing changes."""
    while True:
        shorter = text.replace("()", "").replace("[]", "")
        if shorter == text:
            return text == ""
        text = shorter


def nesting_depth(text: str) -> int:
    depth = deepest = 0
    for char in text:
        depth += 1 if char in "([" else -1
        deepest = max(deepest, depth)
    return deepest


def small(**options) -> BracketsTask:
    return BracketsTask(BracketsConfig(**{"train_size": 300, "validation_size": 50, "test_size": 50, **options}))


@pytest.fixture(scope="module")
def data():
    return BracketsTask().load()


def strings(data, split: str) -> list[str]:
    return ["".join(data.input_vocab.decode(e.inputs)) for e in data.splits()[split]]


def test_registered_as_plugin():
    assert load_plugins().tasks.get("brackets") is BracketsTask
    assert BracketsTask.family == "language_model"
    assert BracketsTask.primary_metric == "perplexity" and not BracketsTask.higher_is_better


@pytest.mark.parametrize("text, expected", [
    ("([])", True), ("()[]", True), ("[([]())]", True), ("()", True),
    ("([)]", False), (")(", False), ("(", False), ("]", False), ("(()", False), ("[(])", False),
    ("", False),  # the empty string is not counted as well formed (see the module doc)
])
def test_is_well_formed_hand_cases(text, expected):
    assert is_well_formed(text) is expected
    assert is_well_formed(list(text)) is expected


def test_is_well_formed_rejects_other_tokens():
    assert not is_well_formed(["(", "<UNK>", ")"])
    assert not is_well_formed(["(", ")", "<EOS>"])


def test_vocabulary_and_inputs(data):
    data.check("brackets")
    assert (len(data.train), len(data.validation), len(data.test)) == (2000, 500, 500)
    assert data.output_vocab is data.input_vocab
    assert tuple(data.input_vocab.tokens[:4]) == SPECIALS
    assert sorted(data.input_vocab.tokens[4:]) == sorted("()[]")
    ids = {data.input_vocab.id(c) for c in "()[]"}
    for split in data.splits().values():
        for example in split:
            assert example.target is None
            assert set(example.inputs) <= ids  # no <BOS>/<EOS>/<PAD>/<UNK>


def test_generated_strings_respect_limits(data):
    config = BracketsConfig()
    lengths = set()
    for split in ("train", "validation", "test"):
        for text in strings(data, split):
            assert reduces_to_empty(text) and is_well_formed(text)
            assert config.min_length <= len(text) <= config.max_length and len(text) % 2 == 0
            assert nesting_depth(text) <= config.max_depth
            lengths.add(len(text))
    assert {2, config.max_length} <= lengths


def test_depth_and_length_options():
    loaded = small(max_depth=1, min_length=5, max_length=19).load()  # odd bounds round inward
    for split in ("train", "validation", "test"):
        for text in strings(loaded, split):
            assert nesting_depth(text) == 1 and len(text) in range(6, 19, 2)
    deep = small(max_depth=8, max_length=16, open_probability=0.9).load()
    assert max(nesting_depth(t) for t in strings(deep, "train")) == 8


def test_strings_distinct_across_splits(data):
    everything = strings(data, "train") + strings(data, "validation") + strings(data, "test")
    assert len(set(everything)) == len(everything)


def test_too_small_language_is_reported():
    with pytest.raises(ConfigError, match="distinct"):
        small(max_length=2).load()  # only "()" and "[]" exist


def test_evaluate_samples():
    metrics = BracketsTask().evaluate_samples([list("()"), list("(]"), [], list("[()]")])
    assert metrics == {"well_formed_rate": 0.5, "mean_sample_length": 2.0}
    assert BracketsTask().evaluate_samples([]) == {}


def test_deterministic_per_seed():
    def dump(task):
        return [(e.inputs, e.target) for split in task.load().splits().values() for e in split]

    assert dump(small()) == dump(small())
    assert dump(small()) != dump(small(data_seed=1))
    assert [e.inputs for e in small().load().test] == [e.inputs for e in small(train_size=400).load().test]


def test_config_is_strict():
    with pytest.raises(ValidationError):
        BracketsConfig(no_such_option=1)
    with pytest.raises(ValidationError):
        BracketsConfig(min_length=12, max_length=10)
    with pytest.raises(ValidationError):
        BracketsConfig(open_probability=1.0)
