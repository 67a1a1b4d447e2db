"""Sampling novel sequences from a language model, as the notes describe it.

Start from x<1> = <BOS> and a<0>; at each step draw ŷ<t> from the softmax, feed it
back as x<t+1>, and stop at <EOS> or a length limit. ``temperature`` sharpens (< 1)
or flattens (> 1) the distribution; ``reject_unk`` never emits <UNK>, which is the
notes' "keep resampling until it is not <UNK>", i.e. sampling from the rest of the
vocabulary renormalised.

Stream models (trained on contiguous text, without <BOS>) start from the zero state
after the token that ends a unit of their text instead: see :func:`start_context`.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.core.vocab import BOS, EOS, PAD, UNK, Vocabulary


def start_context(vocab: Vocabulary) -> list[str]:
    """What a model's sequences start after, from the zero state: the context of sampling and scoring.

    <BOS> for sentence models (every training sentence starts with it); else <EOS> for word
    streams (every line ends with it, so the next token starts a sentence); else a newline
    for character streams (the next character starts a line); else the most frequent token.
    """
    for token in (BOS, EOS, "\n"):
        if token in vocab:
            return [token]
    return [vocab.tokens[len(vocab.specials)]]


@torch.no_grad()
def sample_sequences(
    net: nn.Module,
    vocab: Vocabulary,
    *,
    count: int,
    max_length: int,
    temperature: float = 1.0,
    reject_unk: bool = False,
    prime: list[str] | None = None,
    context: list[str] | None = None,
    generator: torch.Generator | None = None,
) -> list[list[str]]:
    """``count`` samples of at most ``max_length`` tokens each (without <EOS>).

    ``net`` is a language model: ``net(inputs (B, T), lengths, state) -> (logits (B, T, V), state)``.
    ``context`` tokens (default <BOS>; :func:`start_context` gives a model's own) are fed
    first from the zero state, then the ``prime`` tokens, which are included in each sample.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    forbidden = [vocab.id(t) for t in (PAD, BOS) if t in vocab]
    if reject_unk and UNK in vocab:
        forbidden.append(vocab.unk_id)
    start = vocab.encode(context if context is not None else [BOS]) + (vocab.encode(prime) if prime else [])
    inputs = torch.tensor([start] * count, device=device)  # (N, P)
    logits, state = net(inputs, None, None)
    last = logits[:, -1]  # (N, V)
    sampled: list[torch.Tensor] = []
    finished = torch.zeros(count, dtype=torch.bool, device=device)
    eos_id = vocab.id(EOS) if EOS in vocab else -1
    for _ in range(max_length):
        scores = last / temperature
        scores[:, forbidden] = float("-inf")
        probabilities = torch.softmax(scores, dim=-1).cpu()
        token = torch.multinomial(probabilities, 1, generator=generator).to(device)  # (N, 1)
        sampled.append(token[:, 0])
        finished |= token[:, 0] == eos_id
        if finished.all():
            break
        logits, state = net(token, None, state)
        last = logits[:, -1]
    net.train(was_training)
    samples = []
    for row in torch.stack(sampled, dim=1).tolist():
        row = row[: row.index(eos_id)] if eos_id in row else row
        samples.append((prime or []) + vocab.decode(row))
    return samples


@torch.no_grad()
def sample_multilabel(
    net: nn.Module,
    *,
    count: int,
    length: int,
    labels: int,
    prime: list[list[int]] | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[list[list[int]]]:
    """``count`` sequences of 0/1 label vectors from a ``multilabel_sequence`` network.

    Start from x<1> = zeros (after the ``prime`` steps, each a list of active label ids,
    when given); at each step draw every label from its own Bernoulli(σ(logit / temperature))
    and feed the drawn vector back as the next input. Returns (count, P + length, labels)
    nested lists: the primed steps first, then ``length`` sampled ones.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    was_training = net.training
    net.eval()
    device = next(net.parameters()).device
    primed = torch.zeros(len(prime or []), labels)
    for step, active in enumerate(prime or []):
        primed[step, list(active)] = 1.0
    inputs = torch.cat([torch.zeros(1, labels), primed]).expand(count, -1, -1).contiguous().to(device)  # (N, P+1, L)
    logits, state = net(inputs, None, None)
    steps = []
    for step in range(length):
        probabilities = torch.sigmoid(logits[:, -1] / temperature).cpu()  # (N, L)
        frame = torch.bernoulli(probabilities, generator=generator)
        steps.append(frame)
        if step + 1 < length:
            logits, state = net(frame.unsqueeze(1).to(device), None, state)
    net.train(was_training)
    sampled = torch.stack(steps, dim=1) if steps else torch.zeros(count, 0, labels)  # (N, length, L)
    rolls = torch.cat([primed.expand(count, -1, -1), sampled], dim=1)
    return rolls.to(torch.int64).tolist()
