"""The probability a trained language model gives a sentence, as the notes define it.

    P(y<1>, …, y<T>) = P(y<1>) · P(y<2> | y<1>) · … · P(y<T> | y<1>, …, y<T-1>)

so log P is the sum of the conditional log-probabilities, each read from the softmax at
the step before. The sentence is read from the zero state after the model's start context
(:func:`harness.training.sampling.start_context`: <BOS> for sentence models, <EOS> for word
streams, a newline for character streams), and when the vocabulary has <EOS> the
sentence's end counts too: P(y<1>, …, y<T>, <EOS>), the probability of exactly this
sentence rather than of any sentence beginning with it. A word outside the vocabulary is
scored as <UNK> and flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from harness.core.errors import BadInputError
from harness.training.sampling import start_context
from harness.core.vocab import EOS, UNK, Vocabulary


@dataclass(frozen=True)
class TokenScore:
    """One predicted token: as given, as scored (<UNK> when unknown), and log P(token | before) in nats."""

    token: str
    scored_as: str
    log_prob: float

    @property
    def unknown(self) -> bool:
        return self.token != self.scored_as


@dataclass(frozen=True)
class SentenceScore:
    tokens: list[TokenScore]

    @property
    def log_prob(self) -> float:
        """log P(sentence) in nats: the sum of the conditionals."""
        return sum(t.log_prob for t in self.tokens)

    @property
    def log10_prob(self) -> float:
        return self.log_prob / math.log(10)

    @property
    def unknown(self) -> list[str]:
        return [t.token for t in self.tokens if t.unknown]


@torch.no_grad()
def score_tokens(net: nn.Module, vocab: Vocabulary, tokens: list[str]) -> SentenceScore:
    """log P of ``tokens`` (then <EOS> if the vocabulary has it) under ``net``, one forward pass."""
    if not tokens:
        raise BadInputError("nothing to score: the sentence has no tokens")
    unknown = [t for t in tokens if t not in vocab]
    if unknown and UNK not in vocab:
        raise BadInputError(f"not in the vocabulary, which has no {UNK}: {', '.join(unknown)}")
    context = vocab.encode(start_context(vocab))
    predicted = tokens + ([EOS] if EOS in vocab else [])
    targets = vocab.encode(predicted)  # (N,)
    inputs = context + targets[: len(tokens)]  # the context, then each token: x<t> = y<t-1>
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    logits, _ = net(torch.tensor([inputs], device=device), None, None)  # (1, C + T, V)
    net.train(was_training)
    # The step that reads the last context token predicts y<1>; the last step predicts the final target.
    relevant = logits[0, len(context) - 1 : len(context) - 1 + len(targets)]  # (N, V)
    log_probs = torch.log_softmax(relevant.double(), dim=-1)
    chosen = log_probs[torch.arange(len(targets)), torch.tensor(targets, device=device)].tolist()
    return SentenceScore([TokenScore(token, vocab.tokens[target], value)
                          for token, target, value in zip(predicted, targets, chosen)])
