"""What ``harness sample`` and ``harness score`` do with a trained run: sample text (or music written
as MIDI + PNG), or score sentences."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.training.checkpoints import TrainedRun
from harness.core.errors import BadInputError
from harness.training.sampling import sample_multilabel, sample_sequences, start_context
from harness.training.scoring import SentenceScore, score_tokens


def sample_language_model(trained: TrainedRun, *, count: int, length: int, temperature: float,
                          prime: str | None, reject_unk: bool, seed: int, prime_steps: int = 0,
                          reference: str = "") -> list[str]:
    """``count`` samples drawn as the notes describe, each as text (``Task.detokenize``).

    The prime is tokenized by the run's task (words, or characters for a character model)
    and fed after the model's start context (:func:`harness.training.sampling.start_context`).
    """
    if prime_steps:
        raise BadInputError("--prime-steps is for music runs; language models take --prime")
    _require_language_model(trained, reference, "sample")
    if temperature <= 0:
        raise BadInputError(f"--temperature must be positive, got {temperature}")
    vocab = trained.data.input_vocab
    primed = trained.task.tokenize(prime) if prime else None
    unknown = [t for t in primed or [] if t not in vocab]
    if unknown:
        shown = ", ".join(t if t.strip() == t and t else repr(t) for t in unknown)  # show spaces, newlines
        raise BadInputError(f"--prime tokens not in the vocabulary: {shown}")
    generator = torch.Generator().manual_seed(seed)
    samples = sample_sequences(trained.net, vocab, count=count, max_length=length, temperature=temperature,
                               reject_unk=reject_unk, prime=primed, context=start_context(vocab),
                               generator=generator)
    return [trained.task.detokenize(tokens) for tokens in samples]


def score_language_model(trained: TrainedRun, sentences: list[str], *, reference: str = "") -> list[SentenceScore]:
    """log P of each sentence (tokenized by the run's task) under a trained language model."""
    _require_language_model(trained, reference, "score")
    return [score_tokens(trained.net, trained.data.input_vocab, trained.task.tokenize(s)) for s in sentences]


def _require_language_model(trained: TrainedRun, reference: str, action: str) -> None:
    if trained.task.family != "language_model":
        raise BadInputError(f"run {reference} is a {trained.task.family} run; only language models {action}")


def sample_music(trained: TrainedRun, *, count: int, length: int, temperature: float, prime_steps: int,
                 seed: int, output: Path, prime: str | None = None, reject_unk: bool = False) -> list[Path]:
    """Sample a multilabel_sequence run; its task's ``write_samples`` writes MIDI + piano roll."""
    if prime or reject_unk:
        raise BadInputError("--prime and --reject-unk are for language models; music runs take --prime-steps")
    write = getattr(trained.task, "write_samples", None)
    if write is None:
        raise BadInputError(f"task {trained.task.name!r} cannot write samples (it has no write_samples)")
    if temperature <= 0 or count < 1 or length < 1:
        raise BadInputError("--temperature, --count and --length must be positive")
    primed = None
    if prime_steps:
        test = trained.task.load().test
        if not test or len(test[0].inputs) < prime_steps:
            raise BadInputError(f"--prime-steps {prime_steps}: the first test piece has only "
                                f"{len(test[0].inputs) if test else 0} steps")
        primed = [list(step) for step in test[0].inputs[:prime_steps]]
    generator = torch.Generator().manual_seed(seed)
    rolls = sample_multilabel(trained.net, count=count, length=length, labels=trained.data.input_size,
                              prime=primed, temperature=temperature, generator=generator)
    return write(rolls, output, prime_steps=prime_steps)
