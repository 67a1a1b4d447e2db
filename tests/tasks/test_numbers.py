"""The numbers-to-words seq2seq task: wording, labels, disjoint splits, metrics, registration."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from harness.core.loading import load_plugins
from harness.plugins.tasks.numbers import NumbersConfig, NumbersTask, number_to_words

# An independent reader of the target words, to check labels without number_to_words.
_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9}


def words_to_number(words: list[str]) -> int:
    total = group = 0
    for word in words:
        if word in _UNITS:
            group += _UNITS[word]
        elif word in _TENS:
            group += _TENS[word]
        elif word == "hundred":
            group *= 100
        else:
            total += group * _SCALES[word]
            group = 0
    return total + group


def small(**options) -> NumbersTask:
    return NumbersTask(NumbersConfig(**{"train_size": 300, "validation_size": 50, "test_size": 50, **options}))


@pytest.fixture(scope="module")
def data():
    return NumbersTask().load()


def test_registered_as_plugin():
    assert load_plugins().tasks.get("numbers") is NumbersTask
    assert NumbersTask.family == "seq2seq"
    assert NumbersTask.primary_metric == "exact_match" and NumbersTask.higher_is_better


@pytest.mark.parametrize("number, text", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (20, "twenty"), (21, "twenty one"), (40, "forty"),
    (99, "ninety nine"), (100, "one hundred"), (105, "one hundred five"), (110, "one hundred ten"),
    (1000, "one thousand"), (1001, "one thousand one"), (2021, "two thousand twenty one"),
    (9999, "nine thousand nine hundred ninety nine"), (10000, "ten thousand"),
    (100000, "one hundred thousand"), (1_000_000, "one million"),
    (1_002_003, "one million two thousand three"),
    (999_999_999_999, "nine hundred ninety nine billion nine hundred ninety nine million "
                      "nine hundred ninety nine thousand nine hundred ninety nine"),
])
def test_number_to_words_hand_cases(number, text):
    assert number_to_words(number) == text.split()


def test_number_to_words_range():
    with pytest.raises(ValueError):
        number_to_words(-1)
    with pytest.raises(ValueError):
        number_to_words(10**12)


def test_defaults_and_vocabularies(data):
    data.check("numbers")
    assert (len(data.train), len(data.validation), len(data.test)) == (3000, 500, 500)
    assert sorted(data.input_vocab.tokens[4:]) == list("0123456789")
    for vocab in (data.input_vocab, data.output_vocab):
        assert len({vocab.pad_id, vocab.bos_id, vocab.eos_id}) == 3  # the seq2seq family needs these
    for split in data.splits().values():
        for example in split:
            assert data.input_vocab.unk_id not in example.inputs
            assert data.output_vocab.unk_id not in example.target


def test_labels_read_back_to_the_source_number(data):
    different = total = 0
    for split in data.splits().values():
        for example in split:
            digits = "".join(data.input_vocab.decode(example.inputs))
            words = data.output_vocab.decode(example.target)
            assert digits == str(int(digits))  # no leading zeros
            assert words_to_number(words) == int(digits)
            assert "and" not in words and not any("-" in w for w in words)
            different += len(example.inputs) != len(example.target)
            total += 1
    assert different / total > 0.8  # Tx != Ty for most pairs (89% with the defaults)


def test_splits_hold_distinct_numbers_in_range(data):
    def numbers(split):
        return [int("".join(data.input_vocab.decode(e.inputs))) for e in data.splits()[split]]

    train, validation, test = numbers("train"), numbers("validation"), numbers("test")
    everything = train + validation + test
    assert len(set(everything)) == len(everything)
    assert 0 <= min(everything) and max(everything) <= 9999
    ranged = small(min_number=500, max_number=999).load()
    assert all(500 <= words_to_number(ranged.output_vocab.decode(e.target)) <= 999 for e in ranged.train)


def test_evaluate():
    task = small()
    data = task.load()
    examples = data.test[:4]
    perfect = [list(e.target) for e in examples]
    assert task.evaluate(perfect, examples) == {"exact_match": 1.0, "token_accuracy": 1.0}
    reference = sum(len(e.target) for e in examples)
    wrong = [list(e.target) for e in examples]
    wrong[0] = wrong[0][:-1]  # drop the last word: one reference position missed
    wrong[1] = wrong[1] + [wrong[1][0]]  # an extra word: position-wise still all right
    wrong[2] = [data.output_vocab.pad_id] + wrong[2][1:]  # first word wrong
    metrics = task.evaluate(wrong, examples)
    assert metrics["exact_match"] == pytest.approx(1 / 4)
    assert metrics["token_accuracy"] == pytest.approx((reference - 2) / reference)
    assert task.evaluate([[] for _ in examples], examples) == {"exact_match": 0.0, "token_accuracy": 0.0}


def test_deterministic_per_seed():
    def dump(task):
        return [(e.inputs, e.target) for split in task.load().splits().values() for e in split]

    assert dump(small()) == dump(small())
    assert dump(small()) != dump(small(data_seed=1))
    assert [e.inputs for e in small().load().test] == [e.inputs for e in small(train_size=400).load().test]


def test_config_is_strict():
    with pytest.raises(ValidationError):
        NumbersConfig(no_such_option=1)
    with pytest.raises(ValidationError):
        NumbersConfig(min_number=10, max_number=5)
    with pytest.raises(ValidationError):
        NumbersConfig(max_number=999)  # 4000 distinct numbers do not fit in 0..999
