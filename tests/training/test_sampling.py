"""The notes' sampling: softmax draws fed back, stop at <EOS> or a limit, temperature, <UNK> rejection."""

from __future__ import annotations

import torch
from torch import nn

from harness.training.sampling import sample_sequences
from harness.core.vocab import Vocabulary


class FixedLM(nn.Module):
    """A language model whose next-token logits depend only on the previous token (a bigram table)."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table)  # (V, V): row = previous token, column = next-token logit
        self.calls: list[torch.Tensor] = []

    def forward(self, inputs, lengths, state):
        self.calls.append(inputs.clone())
        return self.table[inputs], state  # (N, T, V)


def vocab() -> Vocabulary:
    return Vocabulary(["a", "b"])  # <PAD>=0 <UNK>=1 <BOS>=2 <EOS>=3 a=4 b=5


def table(rows: dict[int, dict[int, float]]) -> torch.Tensor:
    logits = torch.full((6, 6), -30.0)
    for previous, nexts in rows.items():
        for token, value in nexts.items():
            logits[previous, token] = value
    return logits


def test_each_sample_is_fed_back_and_stops_at_eos() -> None:
    # <BOS> → a → b → <EOS>, deterministically.
    model = FixedLM(table({2: {4: 10.0}, 4: {5: 10.0}, 5: {3: 10.0}}))
    samples = sample_sequences(model, vocab(), count=3, max_length=10, generator=torch.Generator().manual_seed(0))
    assert samples == [["a", "b"]] * 3
    fed = [call[0, -1].item() for call in model.calls]
    assert fed == [2, 4, 5]  # <BOS>, then each sampled token fed back as the next input


def test_length_limit_without_eos() -> None:
    model = FixedLM(table({2: {4: 10.0}, 4: {4: 10.0}}))  # a a a … never <EOS>
    samples = sample_sequences(model, vocab(), count=2, max_length=7)
    assert samples == [["a"] * 7] * 2


def test_reject_unk_never_emits_unk_and_renormalises() -> None:
    # After <BOS>: <UNK> is far likelier than a, but rejected.
    model = FixedLM(table({2: {1: 5.0, 4: 0.0}, 4: {3: 10.0}, 1: {3: 10.0}}))
    with_unk = sample_sequences(model, vocab(), count=200, max_length=3, generator=torch.Generator().manual_seed(1))
    without = sample_sequences(model, vocab(), count=200, max_length=3, reject_unk=True,
                               generator=torch.Generator().manual_seed(1))
    assert sum(s == ["<UNK>"] for s in with_unk) > 150
    assert all("<UNK>" not in s for s in without)
    assert all(s == ["a"] for s in without)


def test_temperature_sharpens_and_flattens() -> None:
    model = FixedLM(table({2: {4: 1.0, 5: 0.0}, 4: {3: 10.0}, 5: {3: 10.0}}))

    def share_of_a(temperature: float) -> float:
        samples = sample_sequences(model, vocab(), count=2000, max_length=1, temperature=temperature,
                                   generator=torch.Generator().manual_seed(2))
        first = [s[0] for s in samples if s and s[0] in ("a", "b")]
        return sum(token == "a" for token in first) / len(first)

    expected = torch.sigmoid(torch.tensor(1.0)).item()  # softmax over two logits 1 and 0
    assert abs(share_of_a(1.0) - expected) < 0.04
    assert share_of_a(0.1) > 0.99
    assert abs(share_of_a(100.0) - 0.5) < 0.05


def test_prime_tokens_are_fed_first_and_kept() -> None:
    model = FixedLM(table({5: {4: 10.0}, 4: {3: 10.0}}))
    samples = sample_sequences(model, vocab(), count=1, max_length=5, prime=["b"])
    assert samples == [["b", "a"]]
    assert model.calls[0].tolist() == [[2, 5]]
