"""The task interface: a task supplies data splits, vocabularies and its own metrics.

The harness supplies everything else: the network around the recurrent stack, the
loss and the standard metrics of the task's *family*. The families follow the
architectures of the lecture notes:

==================  ============================  =====================================
family              architecture                  Example.inputs → Example.target
==================  ============================  =====================================
``tagging``         many-to-many, Tx = Ty         token ids (T) → tag ids (T)
``classification``  many-to-one                   token ids (T) → class id
``regression``      many-to-one                   vectors (T, F) → float
``language_model``  x<t> = y<t-1>, sampling       token ids (T) → (unused, None)
``seq2seq``         encoder-decoder, Tx ≠ Ty      source ids (Tx) → target ids (Ty)
==================  ============================  =====================================

``multilabel_sequence`` (x<t> = y<t-1>, one sigmoid per label, sampling): inputs are the active
label ids of each step, e.g. the sounding piano keys 0..87 (T lists) → (unused, None); the task
sets ``input_size`` to the number of labels.

Token ids never include <BOS>/<EOS>: the family adds them where its architecture needs them.
A third-party task picks a family and implements :meth:`Task.load`; it never touches the core.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal


from harness.core.errors import BadInputError, HarnessError
from harness.core.schema import StrictModel
from harness.core.vocab import Vocabulary

if TYPE_CHECKING:
    from harness.data.datasets import DataSet

Family = Literal["tagging", "classification", "regression", "language_model", "seq2seq", "multilabel_sequence"]
FAMILIES: tuple[str, ...] = ("tagging", "classification", "regression", "language_model", "seq2seq",
                             "multilabel_sequence")


class EmptySplitError(HarnessError):
    """A data split has no examples; training on it would report a meaningless metric."""

    exit_code = 2


class TaskOptionError(BadInputError):
    """A task's :meth:`Task.load` refused its options or data by raising ``ValueError``; exit code 2."""


class TaskConfig(StrictModel):
    """Options every task accepts. Subclasses add their own fields with defaults; a field added
    after runs were recorded goes into ``_omit_when_default`` so their run keys stay the same."""


@dataclass
class Example:
    """One example. What ``inputs`` and ``target`` hold depends on the family (see module doc).

    ``group`` optionally names a bucket (e.g. the agreement distance "10-14"); the
    family then also reports its main metric per group.

    ``reference`` optionally keeps the target as raw text (before tokenization), for metrics
    the field computes on text, such as sacreBLEU on detokenized translations.
    """

    inputs: list[int] | list[list[float]]
    target: int | float | list[int] | None = None
    group: str | None = None
    reference: str | None = None


@dataclass
class TaskData:
    """Everything a task hands the harness.

    Attributes:
        train, validation, test: the splits, each non-empty.
        input_vocab: vocabulary of token inputs (None for vector inputs).
        input_size: number of features per step for vector inputs (None for tokens).
        output_vocab: classes (classification), tags (tagging) or target tokens (seq2seq);
            None for regression, and the same as ``input_vocab`` for language models.
        info: task facts worth recording (e.g. a baseline's score), logged as params.
        contiguous: language models only: each split is one token stream (a single Example
            holding every id in order) read with truncated BPTT, the state carried across
            windows (:mod:`harness.training.streams`), instead of independent sentences.
        token_unit: what one token of a stream is ("word", "character"); the language-model
            family also reports ``bits_per_<unit>`` (bits per character is the char-LM metric).
    """

    train: list[Example]
    validation: list[Example]
    test: list[Example]
    input_vocab: Vocabulary | None = None
    input_size: int | None = None
    output_vocab: Vocabulary | None = None
    info: dict[str, Any] = field(default_factory=dict)
    contiguous: bool = False
    token_unit: str = "token"

    def splits(self) -> dict[str, list[Example]]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def check(self, task: str) -> None:
        """Refuse empty splits and inconsistent vocabularies before any training starts."""
        for split, examples in self.splits().items():
            if not examples:
                raise EmptySplitError(f"task {task!r}: the {split} split is empty; nothing to train or score on.")
            if self.contiguous and (len(examples) != 1 or len(examples[0].inputs) < 2):
                raise EmptySplitError(f"task {task!r}: the {split} stream must be one sequence of at least two "
                                      "tokens (one input, one prediction)")
        if (self.input_vocab is None) == (self.input_size is None):
            raise HarnessError(f"task {task!r}: set exactly one of input_vocab (tokens) or input_size (vectors)")

    def check_declared_input_size(self, task: type[Task]) -> None:
        if task.input_size is not None and task.input_size != self.input_size:
            raise HarnessError(
                f"task {task.name!r} declares input_size {task.input_size} but its data has {self.input_size}"
            )


class Task:
    """Base class of every task plugin.

    Subclasses set:
        name: registry name (``"agreement"``).
        family: one of :data:`FAMILIES`.
        Config: a :class:`TaskConfig` subclass.
        primary_metric: the metric reports rank cells by (a key of the test metrics,
            without the ``test_`` prefix), and ``higher_is_better`` for its direction.

    and implement :meth:`load`. :meth:`evaluate` and :meth:`evaluate_samples` add
    task-specific metrics to the family's standard ones.
    """

    name: ClassVar[str]
    family: ClassVar[Family]
    Config: ClassVar[type[TaskConfig]] = TaskConfig
    primary_metric: ClassVar[str] = "loss"
    higher_is_better: ClassVar[bool] = False
    #: What ``Example.group`` buckets by, as the report names it ("accuracy by distance").
    group_name: ClassVar[str] = "distance"
    #: Features per step of a vector-input task, when known before loading; lets the grid
    #: size networks (parameter budgets) without loading data. None for token inputs.
    input_size: ClassVar[int | None] = None
    #: ``harness tune`` defaults for this task's own options, ``{option: {type, low, high, ...}}``
    #: in the experiment file's ``tuning.search_space`` form without the ``task.`` prefix. Only
    #: options that are hyper-parameters belong here, never ones that change the test set.
    search_space: ClassVar[dict[str, dict[str, Any]]] = {}
    #: The files this task reads (:class:`harness.data.datasets.DataSet`): ``harness data list``
    #: shows them, ``harness data fetch NAME`` downloads and checks them. Empty for generated data.
    data_sets: ClassVar[tuple[DataSet, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "load" in cls.__dict__:
            cls.load = _value_errors_as_bad_input(cls.__dict__["load"])  # type: ignore[method-assign]

    def __init__(self, config: TaskConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()
        #: How the metrics were computed, in words a reader needs to compare numbers (the tag
        #: scheme and seqeval mode, a sacreBLEU signature, the split protocol). Set while loading
        #: or evaluating; recorded with every run (MLflow tags ``harness.note.<key>``) and shown
        #: in the report.
        self.notes: dict[str, str] = {}

    def chance_level(self) -> float | None:
        """The primary metric of a predictor without memory (a constant, or the class prior), or None
        where the task does not know it; reports draw it and measure memory horizons from it."""
        return None

    def tokenize(self, text: str) -> list[str]:
        """User text (a prime, a sentence to score or translate) as this task's input tokens."""
        return text.split()

    def detokenize(self, tokens: Sequence[str]) -> str:
        """Tokens back to text, the inverse of :meth:`tokenize` as far as the task can."""
        return " ".join(tokens)

    def load(self) -> TaskData:
        """Build or read the splits. Called once per run, before training.

        Raise ``ValueError`` (or :class:`harness.core.errors.BadInputError`) when an option or the
        data is wrong: the harness reports it in one line naming the task, with exit code 2,
        instead of a traceback. Any other exception is treated as a bug in the task.
        """
        raise NotImplementedError

    def evaluate(self, predictions: Sequence[Any], examples: Sequence[Example]) -> dict[str, float]:
        """Task-specific metrics on one split.

        Args:
            predictions: one per example, in order: a class id (classification), a float
                (regression), a list of tag ids over the real steps (tagging), or the
                greedily decoded target ids without <BOS>/<EOS> (seq2seq).
            examples: the split's examples.
        Returns:
            ``{metric name: value}``; the family's standard metrics are added separately.
        """
        return {}

    def evaluate_samples(self, samples: Sequence[list[str]]) -> dict[str, float]:
        """Metrics of sequences sampled from a trained language model (tokens, no <EOS>)."""
        return {}


def _value_errors_as_bad_input(load: Callable[[Task], TaskData]) -> Callable[[Task], TaskData]:
    """Wrap a subclass's ``load`` so a ValueError reaches the user as one line, not a traceback."""
    if getattr(load, "_reports_value_errors", False):
        return load

    @functools.wraps(load)
    def checked_load(self: Task) -> TaskData:
        try:
            return load(self)
        except ValueError as error:
            detail = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
            raise TaskOptionError(f"task {self.name!r}: {detail}") from error

    checked_load._reports_value_errors = True  # type: ignore[attr-defined]
    return checked_load
