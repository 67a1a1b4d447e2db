"""Subject–verb number agreement across a long gap (many-to-one classification).

What it tests: whether a recurrent cell can carry one bit — was the subject singular
or plural? — across ``distance`` intervening words, the long-term dependency of the
lecture notes' "Vanishing Gradients with RNNs" section:

    "The cat, which already ate a bunch of food that was delicious, ... was full."
    "The cats, which already ate a bunch of food that was delicious, ... were full."

Each example is ``the <subject> <clause of distance tokens>`` and the model predicts
the verb, ``was`` (singular subject) or ``were`` (plural). The notes' point is that a
basic RNN forgets the bit as the gap grows while GRUs and LSTMs keep it; the per-bucket
accuracy (``Example.group`` is the distance bucket, e.g. ``"06-10"``) shows that curve.

The clause is built from number-neutral filler words (past-tense verbs, adverbs,
adjectives, prepositions, conjunctions, possessive determiners) plus noun phrases.
Nouns of the other number than the subject are *attractors* (Linzen, Dupoux &
Goldberg 2016, "Assessing the ability of LSTMs to learn syntax-sensitive
dependencies", TACL 4): a model that agrees the verb with the most recent noun is
wrong whenever that noun is an attractor.

Design choice, on purpose: by default (``balance_nouns: true``) the clause's noun
numbers are drawn *independently of the subject* — every clause with room for two
``min_attractors`` noun groups holds at least ``min_attractors`` attractors **and** at
least as many nouns of the subject's own number, in random order. The clause then
carries no information about the label, so the only way to score above chance is to
remember the subject. With ``balance_nouns: false`` every clause noun is an attractor
(the most recent noun is *always* the wrong cue), but then "answer the opposite of the
last noun" is a short-range shortcut that solves the task at any distance.

Distance here is the number of tokens strictly between the subject (position 1) and the
verb, which would follow the last input token: ``distance == len(inputs) - 2``.
Splits may share a few short sentences (at distance 1 there are only a few dozen);
that is harmless because the label is a function of the subject alone.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from pydantic import Field, model_validator

from harness import hookimpl
from harness.core.limits import MAX_SEED, MAX_SEQUENCE_LENGTH, MAX_SPLIT_SIZE, check_generated_steps
from harness.core.tasks import Example, Task, TaskConfig, TaskData
from harness.core.vocab import Vocabulary

#: (singular, plural) subject and attractor nouns.
NOUN_PAIRS: tuple[tuple[str, str], ...] = (
    ("cat", "cats"), ("dog", "dogs"), ("bird", "birds"), ("horse", "horses"),
    ("child", "children"), ("man", "men"), ("woman", "women"), ("mouse", "mice"),
    ("fox", "foxes"), ("teacher", "teachers"), ("farmer", "farmers"), ("friend", "friends"),
)
SINGULAR_NOUNS: frozenset[str] = frozenset(s for s, _ in NOUN_PAIRS)
PLURAL_NOUNS: frozenset[str] = frozenset(p for _, p in NOUN_PAIRS)
#: Words that open the intervening clause ("the cat *which* already ate ...").
OPENERS: tuple[str, ...] = ("which", "that", "who")
#: Number-neutral determiners placed before every clause noun.
DETERMINERS: tuple[str, ...] = ("the", "my", "our", "your")
#: Number-neutral filler: past-tense verbs, adverbs, adjectives, prepositions, conjunctions.
FILLERS: tuple[str, ...] = (
    "ate", "saw", "chased", "liked", "met", "followed", "watched", "heard", "found", "fed", "knew", "visited",
    "already", "often", "never", "quietly", "really", "once", "also", "then", "still", "very",
    "delicious", "small", "old", "happy", "hungry", "tired", "brown", "quiet", "little", "big",
    "and", "near", "with", "of", "by", "from", "after", "before", "behind", "without", "beside", "under",
)
VERBS: tuple[str, str] = ("was", "were")  # label 0 = singular subject, 1 = plural


def _word_list() -> list[str]:
    """Every word the generator can emit, in a fixed order (so no <UNK> in any split)."""
    words = ["the"]
    for singular, plural in NOUN_PAIRS:
        words += [singular, plural]
    for group in (OPENERS, DETERMINERS, FILLERS):
        words += [w for w in group if w not in words]
    return words


class AgreementConfig(TaskConfig):
    data_seed: int = Field(0, ge=0, le=MAX_SEED, description=(
        "Seed of the generator: the same config always gives identical splits."))
    train_size: int = Field(3000, ge=1, le=MAX_SPLIT_SIZE, description=(
        "Training sentences; a few thousand keeps a 2-core CPU quickstart quick."))
    validation_size: int = Field(500, ge=1, le=MAX_SPLIT_SIZE, description=(
        "Validation sentences (model selection / early stopping)."))
    test_size: int = Field(500, ge=1, le=MAX_SPLIT_SIZE, description=(
        "Test sentences; about 50 per default distance bucket."))
    min_distance: int = Field(1, ge=1, le=MAX_SEQUENCE_LENGTH, description=(
        "Shortest subject–verb gap (tokens strictly between subject and verb)."))
    max_distance: int = Field(40, ge=1, le=MAX_SEQUENCE_LENGTH, description=(
        "Longest gap of train/validation (and test unless overridden); 40 shows a basic RNN fading."))
    test_min_distance: int | None = Field(None, ge=1, le=MAX_SEQUENCE_LENGTH, description=(
        "Shortest test gap, for extrapolation probes; None uses ``min_distance``."))
    test_max_distance: int | None = Field(None, ge=1, le=MAX_SEQUENCE_LENGTH, description=(
        "Longest test gap, e.g. 80 to test beyond the training range; None uses ``max_distance``."))
    bucket_width: int = Field(5, ge=1, le=MAX_SEQUENCE_LENGTH, description=(
        "Width of the distance buckets reported per group (\"01-05\", \"06-10\", ...)."))
    noun_spacing: int = Field(8, ge=1, le=MAX_SEQUENCE_LENGTH, description=(
        "About one clause noun per this many clause tokens (longer gaps carry more nouns)."))
    max_nouns: int = Field(6, ge=0, le=MAX_SEQUENCE_LENGTH, description=(
        "Most nouns in one clause, attractors and same-number nouns together."))
    min_attractors: int = Field(1, ge=0, le=MAX_SEQUENCE_LENGTH, description=(
        "Fewest attractors (other-number nouns) in every clause that has room for them."))
    balance_nouns: bool = Field(True, description=(
        "True: clause noun numbers independent of the label (no shortcut); False: all nouns attract."))

    @model_validator(mode="after")
    def _check_ranges(self) -> AgreementConfig:
        if self.max_distance < self.min_distance:
            raise ValueError(f"max_distance ({self.max_distance}) must be >= min_distance ({self.min_distance})")
        lo, hi = self.test_range
        if hi < lo:
            raise ValueError(f"the test distance range {lo}..{hi} is empty; check test_min/max_distance")
        check_generated_steps(self.train_size + self.validation_size + self.test_size, max(hi, self.max_distance) + 2)
        return self

    @property
    def train_range(self) -> tuple[int, int]:
        return self.min_distance, self.max_distance

    @property
    def test_range(self) -> tuple[int, int]:
        lo = self.test_min_distance if self.test_min_distance is not None else self.min_distance
        hi = self.test_max_distance if self.test_max_distance is not None else self.max_distance
        return lo, hi


@dataclass(frozen=True)
class Sentence:
    """One generated sentence, with the facts the tests check."""

    tokens: list[str]  # "the", subject, clause (the verb is not included)
    plural: bool  # the subject's number, which decides the verb
    distance: int  # tokens strictly between subject and verb == len(tokens) - 2
    attractors: tuple[int, ...]  # token positions of other-number nouns in the clause

    @property
    def verb(self) -> str:
        return VERBS[int(self.plural)]


def bucket_of(distance: int, width: int, digits: int) -> str:
    """The zero-padded bucket label of ``distance``: width 5 puts 7 in ``"06-10"``."""
    lo = (distance - 1) // width * width + 1
    return f"{lo:0{digits}d}-{lo + width - 1:0{digits}d}"


def bucket_digits(config: AgreementConfig) -> int:
    """Digits per bucket bound, so bucket labels sort as strings."""
    top = max(config.max_distance, config.test_range[1])
    return len(str((top - 1) // config.bucket_width * config.bucket_width + config.bucket_width))


def all_buckets(config: AgreementConfig) -> list[str]:
    """Every bucket any split can use, in order."""
    lo = min(config.min_distance, config.test_range[0])
    hi = max(config.max_distance, config.test_range[1])
    digits = bucket_digits(config)
    return sorted({bucket_of(d, config.bucket_width, digits) for d in range(lo, hi + 1)})


def _noun_numbers(rng: random.Random, count: int, plural: bool, config: AgreementConfig) -> list[bool]:
    """The number (True = plural) of each clause noun, left to right."""
    attractor = not plural
    if not config.balance_nouns:
        return [attractor] * count
    m = config.min_attractors
    while True:  # uniform over sequences with >= m of each number: symmetric, so label-independent
        numbers = [rng.random() < 0.5 for _ in range(count)]
        if count < 2 * m or min(sum(numbers), count - sum(numbers)) >= m:
            return numbers


def generate_sentence(rng: random.Random, distance: int, plural: bool, config: AgreementConfig) -> Sentence:
    """``the <subject> <clause>`` with a clause of exactly ``distance`` tokens."""
    subject = rng.choice(NOUN_PAIRS)[int(plural)]
    # Clause layout: opener, then k noun phrases "<det> <noun>" with at least one filler
    # between neighbours, so k noun phrases need 3k tokens; free fillers go anywhere after
    # the opener.
    room = distance // 3
    wanted = math.ceil(distance / config.noun_spacing)
    wanted = max(wanted, 2 * config.min_attractors if config.balance_nouns else config.min_attractors)
    count = min(config.max_nouns, room, wanted)
    numbers = _noun_numbers(rng, count, plural, config)
    free = distance - 1 - 2 * count - max(count - 1, 0)
    # Stars and bars: a uniform split of `free` extra fillers into count + 1 gaps.
    cuts = sorted(rng.sample(range(free + count), count))
    gaps, previous = [], -1
    for cut in cuts:
        gaps.append(cut - previous - 1)
        previous = cut
    gaps.append(free + count - previous - 1)
    clause = [rng.choice(OPENERS)]
    attractors: list[int] = []
    for index, gap in enumerate(gaps):
        extra = 1 if 0 < index < len(gaps) - 1 else 0  # the required filler between noun phrases
        clause += [rng.choice(FILLERS) for _ in range(gap + extra)]
        if index < count:
            noun_plural = numbers[index]
            clause += [rng.choice(DETERMINERS), rng.choice(NOUN_PAIRS)[int(noun_plural)]]
            if noun_plural != plural:
                attractors.append(2 + len(clause) - 1)
    assert len(clause) == distance, (len(clause), distance)
    return Sentence(["the", subject] + clause, plural, distance, tuple(attractors))


def generate_split(seed: int, split: str, size: int, distance_range: tuple[int, int],
                   config: AgreementConfig) -> list[Sentence]:
    """``size`` sentences; each split has its own stream, so one split's size never shifts another."""
    rng = random.Random(f"agreement:{seed}:{split}")
    lo, hi = distance_range
    return [generate_sentence(rng, rng.randint(lo, hi), rng.random() < 0.5, config) for _ in range(size)]


class AgreementTask(Task):
    """Predict ``was``/``were`` after a gap of ``distance`` words (the notes' cat/cats example)."""

    name = "agreement"
    family = "classification"
    Config = AgreementConfig
    primary_metric = "accuracy"
    higher_is_better = True

    def chance_level(self) -> float:
        return 0.5  # was/were are equally frequent

    def sentences(self) -> dict[str, list[Sentence]]:
        """The generated sentences of every split, with their distances and attractors."""
        c = self.config
        return {
            "train": generate_split(c.data_seed, "train", c.train_size, c.train_range, c),
            "validation": generate_split(c.data_seed, "validation", c.validation_size, c.train_range, c),
            "test": generate_split(c.data_seed, "test", c.test_size, c.test_range, c),
        }

    def load(self) -> TaskData:
        c = self.config
        input_vocab = Vocabulary(_word_list())
        output_vocab = Vocabulary(list(VERBS), specials=())
        digits = bucket_digits(c)

        def encode(sentence: Sentence) -> Example:
            return Example(inputs=input_vocab.encode(sentence.tokens), target=output_vocab.id(sentence.verb),
                           group=bucket_of(sentence.distance, c.bucket_width, digits))

        splits = {name: [encode(s) for s in sentences] for name, sentences in self.sentences().items()}
        return TaskData(
            train=splits["train"], validation=splits["validation"], test=splits["test"],
            input_vocab=input_vocab, output_vocab=output_vocab,
            info={
                "chance_accuracy": 0.5,
                "buckets": all_buckets(c),
                "distance_range": list(c.train_range),
                "test_distance_range": list(c.test_range),
                "max_sequence_length": max(c.max_distance, c.test_range[1]) + 2,
            },
        )


@hookimpl
def register_tasks(register) -> None:
    register(AgreementTask)
