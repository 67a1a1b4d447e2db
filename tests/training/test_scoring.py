"""Scoring a sentence, and the start context sampling and scoring share, on a bigram model computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from harness.core.errors import BadInputError
from harness.training.sampling import sample_sequences, start_context
from harness.training.scoring import score_tokens
from harness.core.vocab import BOS, EOS, UNK, Vocabulary


class BigramLM(nn.Module):
    """Next-token log-probabilities depend only on the previous token: ``table[previous]``."""

    def __init__(self, probabilities: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(probabilities.log())  # (V, V)
        self.calls: list[list[int]] = []

    def forward(self, inputs, lengths, state):
        self.calls.append(inputs[0].tolist())
        return self.table[inputs], state  # (B, T, V)


def bigram(vocab: Vocabulary, rows: dict[str, dict[str, float]]) -> BigramLM:
    """Each listed row's probabilities; the rest of a row's mass is spread evenly over the other tokens."""
    size = len(vocab)
    table = torch.full((size, size), 1.0 / size)
    for previous, nexts in rows.items():
        rest = (1.0 - sum(nexts.values())) / (size - len(nexts))
        table[vocab.id(previous)] = rest
        for token, p in nexts.items():
            table[vocab.id(previous), vocab.id(token)] = p
    return BigramLM(table)


def test_start_context_by_vocabulary() -> None:
    assert start_context(Vocabulary(["a"])) == [BOS]  # sentence models
    assert start_context(Vocabulary(["a"], specials=(UNK, EOS))) == [EOS]  # word streams
    assert start_context(Vocabulary(["a", "\n"], specials=(UNK,))) == ["\n"]  # character streams
    assert start_context(Vocabulary(["z", "a"], specials=(UNK,))) == ["z"]  # else the most frequent token


def test_a_word_stream_sentence_is_scored_after_eos_and_ends_with_eos() -> None:
    vocab = Vocabulary(["the", "pear", "pair", "salad"], specials=(UNK, EOS))
    net = bigram(vocab, {EOS: {"the": 0.5}, "the": {"pear": 0.3, "pair": 0.1}, "pear": {"salad": 0.6},
                         "pair": {"salad": 0.05}, "salad": {EOS: 0.7}})
    pear = score_tokens(net, vocab, ["the", "pear", "salad"])
    assert net.calls[-1] == vocab.encode([EOS, "the", "pear", "salad"])  # the context, then each token
    assert [t.token for t in pear.tokens] == ["the", "pear", "salad", EOS]
    assert pear.log_prob == pytest.approx(math.log(0.5 * 0.3 * 0.6 * 0.7))
    assert pear.log10_prob == pytest.approx(math.log10(0.5 * 0.3 * 0.6 * 0.7))
    pair = score_tokens(net, vocab, ["the", "pair", "salad"])
    assert pair.log_prob == pytest.approx(math.log(0.5 * 0.1 * 0.05 * 0.7)) and pair.log_prob < pear.log_prob


def test_unknown_words_are_scored_as_unk_and_flagged() -> None:
    vocab = Vocabulary(["the"], specials=(UNK, EOS))
    net = bigram(vocab, {EOS: {"the": 0.5}, "the": {UNK: 0.2}, UNK: {EOS: 0.9}})
    scored = score_tokens(net, vocab, ["the", "quince"])
    assert scored.unknown == ["quince"] and scored.tokens[1].scored_as == UNK
    assert scored.log_prob == pytest.approx(math.log(0.5 * 0.2 * 0.9))
    with pytest.raises(BadInputError, match="which has no <UNK>: quince"):
        score_tokens(bigram(Vocabulary(["the"], specials=(EOS,)), {}), Vocabulary(["the"], specials=(EOS,)),
                     ["quince"])
    with pytest.raises(BadInputError, match="no tokens"):
        score_tokens(net, vocab, [])


def test_sentence_models_read_from_bos_and_character_streams_have_no_end() -> None:
    sentences = Vocabulary(["a"])
    net = bigram(sentences, {BOS: {"a": 0.4}, "a": {EOS: 0.25}})
    assert score_tokens(net, sentences, ["a"]).log_prob == pytest.approx(math.log(0.4 * 0.25))
    characters = Vocabulary(["\n", "h", "i"], specials=(UNK,))
    net = bigram(characters, {"\n": {"h": 0.5}, "h": {"i": 0.8}})
    scored = score_tokens(net, characters, ["h", "i"])
    assert [t.token for t in scored.tokens] == ["h", "i"]  # no <EOS> in the vocabulary: nothing after
    assert scored.log_prob == pytest.approx(math.log(0.5 * 0.8))


def test_stream_samples_start_after_the_context_and_never_emit_unk_when_rejected() -> None:
    vocab = Vocabulary(["the", "end"], specials=(UNK, EOS))
    net = bigram(vocab, {EOS: {UNK: 0.9, "the": 0.099}, "the": {"end": 0.99}, "end": {EOS: 0.99}})
    samples = sample_sequences(net, vocab, count=20, max_length=5, context=start_context(vocab), reject_unk=True,
                               generator=torch.Generator().manual_seed(0))
    assert net.calls[0] == [vocab.id(EOS)]  # the zero state after <EOS>, no <BOS> in this vocabulary
    assert all(UNK not in s for s in samples)
    assert sum(s == ["the", "end"] for s in samples) >= 18
