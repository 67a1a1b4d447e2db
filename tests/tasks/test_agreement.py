"""The agreement task: labels, distances, attractors, buckets, determinism, registration."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from harness.core.loading import load_plugins
from harness.plugins.tasks.agreement import NOUN_PAIRS, AgreementConfig, AgreementTask

IRREGULAR_PLURALS = {"children", "men", "women", "mice"}
NOUNS = {noun for pair in NOUN_PAIRS for noun in pair}


def is_plural(noun: str) -> bool:
    """Independent of the generator: English plural by spelling."""
    return noun in IRREGULAR_PLURALS or noun.endswith("s")


def small(**options) -> AgreementTask:
    return AgreementTask(AgreementConfig(**{"train_size": 600, "validation_size": 100, "test_size": 200, **options}))


@pytest.fixture(scope="module")
def task() -> AgreementTask:
    return AgreementTask()


@pytest.fixture(scope="module")
def data(task):
    return task.load()


def parse_bucket(group: str) -> tuple[int, int]:
    lo, hi = group.split("-")
    return int(lo), int(hi)


def test_registered_as_plugin():
    assert load_plugins().tasks.get("agreement") is AgreementTask
    assert AgreementTask.family == "classification"
    assert AgreementTask.primary_metric == "accuracy" and AgreementTask.higher_is_better


def test_noun_table_agrees_with_independent_plural_check():
    for singular, plural in NOUN_PAIRS:
        assert not is_plural(singular) and is_plural(plural)


def test_default_sizes_and_vocabularies(data):
    data.check("agreement")
    assert (len(data.train), len(data.validation), len(data.test)) == (3000, 500, 500)
    assert data.output_vocab.tokens == ["was", "were"]
    assert data.input_size is None
    unk = data.input_vocab.unk_id
    assert all(unk not in e.inputs for split in data.splits().values() for e in split)


def test_label_is_the_verb_agreeing_with_the_subject(data):
    labels = []
    for split in data.splits().values():
        for example in split:
            tokens = data.input_vocab.decode(example.inputs)
            assert tokens[0] == "the" and tokens[1] in NOUNS
            expected = "were" if is_plural(tokens[1]) else "was"
            assert data.output_vocab.tokens[example.target] == expected
            labels.append(example.target)
    assert 0.45 < sum(labels) / len(labels) < 0.55  # singular/plural 50/50


def test_distance_matches_group_and_configured_range(task, data):
    config = task.config
    seen = set()
    for sentences, examples in zip(task.sentences().values(), data.splits().values()):
        for sentence, example in zip(sentences, examples, strict=True):
            distance = len(example.inputs) - 2  # tokens strictly between subject (1) and verb (len)
            assert sentence.distance == distance
            assert data.input_vocab.encode(sentence.tokens) == example.inputs
            lo, hi = parse_bucket(example.group)
            assert lo <= distance <= hi and hi - lo + 1 == config.bucket_width
            assert config.min_distance <= distance <= config.max_distance
            seen.add(distance)
    assert seen == set(range(config.min_distance, config.max_distance + 1))  # uniform over the range


def test_attractors_are_other_number_nouns(task):
    for sentences in task.sentences().values():
        for sentence in sentences:
            subject_plural = is_plural(sentence.tokens[1])
            clause_nouns = [i for i, t in enumerate(sentence.tokens) if i >= 2 and t in NOUNS]
            expected = tuple(i for i in clause_nouns if is_plural(sentence.tokens[i]) != subject_plural)
            assert sentence.attractors == expected
            if sentence.distance >= 6:  # room for an attractor and a same-number noun
                assert len(expected) >= 1
                assert len(clause_nouns) > len(expected)  # balanced: same-number nouns too


def test_clause_nouns_carry_no_label_shortcut(task):
    """Default (balanced) clauses: 'opposite of the most recent noun' is at chance."""
    hits = total = 0
    for sentence in task.sentences()["train"]:
        nouns = [t for t in sentence.tokens[2:] if t in NOUNS]
        if nouns:
            total += 1
            hits += (not is_plural(nouns[-1])) == sentence.plural
    assert total > 2000
    assert 0.43 < hits / total < 0.57


def test_unbalanced_clauses_are_all_attractors():
    task = small(balance_nouns=False)
    for sentence in task.sentences()["train"]:
        nouns = [i for i, t in enumerate(sentence.tokens) if i >= 2 and t in NOUNS]
        assert sentence.attractors == tuple(nouns)
        if sentence.distance >= 3:
            assert nouns


def test_attractor_count_options():
    task = small(min_attractors=2, max_nouns=6, noun_spacing=4, min_distance=12, max_distance=30)
    for sentence in task.sentences()["train"]:
        assert len(sentence.attractors) >= 2
        assert len([t for t in sentence.tokens[2:] if t in NOUNS]) <= 6
    none = small(max_nouns=0)
    assert all(not s.attractors for s in none.sentences()["train"])


def test_separate_test_range_for_extrapolation():
    task = small(min_distance=1, max_distance=20, test_min_distance=21, test_max_distance=40)
    data = task.load()
    train_distances = {len(e.inputs) - 2 for e in data.train + data.validation}
    test_distances = {len(e.inputs) - 2 for e in data.test}
    assert max(train_distances) <= 20 and min(test_distances) >= 21 and max(test_distances) <= 40
    assert data.info["buckets"] == [f"{lo:02d}-{lo + 4:02d}" for lo in range(1, 40, 5)]
    assert data.info["test_distance_range"] == [21, 40]


def test_buckets_zero_padded_and_sorted():
    data = small(max_distance=120, bucket_width=10).load()
    buckets = data.info["buckets"]
    assert buckets[0] == "001-010" and buckets[-1] == "111-120"
    assert buckets == sorted(buckets, key=lambda b: parse_bucket(b)[0])
    assert {e.group for e in data.test} <= set(buckets)
    assert data.info["chance_accuracy"] == 0.5


def test_deterministic_per_seed():
    def dump(data):
        return [(e.inputs, e.target, e.group) for split in data.splits().values() for e in split]

    assert dump(small().load()) == dump(small().load())
    assert dump(small().load()) != dump(small(data_seed=1).load())
    # Each split has its own stream: a bigger training set leaves the test set as it was.
    assert [e.inputs for e in small().load().test] == [e.inputs for e in small(train_size=900).load().test]


def test_config_is_strict():
    with pytest.raises(ValidationError):
        AgreementConfig(no_such_option=1)
    with pytest.raises(ValidationError):
        AgreementConfig(min_distance=10, max_distance=5)
    with pytest.raises(ValidationError):
        AgreementConfig(test_min_distance=50)  # test range 50..40 is empty
    with pytest.raises(ValidationError):
        AgreementConfig(min_distance=0)
