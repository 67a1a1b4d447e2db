"""Decoding an encoder-decoder: Cho-style context, greedy = beam 1, beam search against exhaustive search.

Beam search with K > 1 is *not* guaranteed to score at least as well as greedy decoding: the
greedy prefix can be outranked by K others whose continuations all end worse (on random
models this happens for a few per cent of sentences). What is guaranteed, and tested here:
K = 1 is greedy exactly; a beam wide enough to keep every prefix is exact search, so it
returns the most probable output, which is at least as probable as greedy's; every returned
log-probability is the model's own; finished hypotheses end at their only <EOS>.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from harness.experiment import ModelSettings
from harness.training.decoding import DecodingSettings, Hypothesis, beam_search, decode
from harness.networks.models import Encoder, Seq2SeqNet, build_stack
from harness.core.loading import load_plugins

CELLS = load_plugins().cells
BOS, EOS = 2, 3  # the Vocabulary specials' ids: <PAD> 0, <UNK> 1, <BOS> 2, <EOS> 3
SOURCE_VOCAB, EMBEDDING, HIDDEN = 7, 4, 8
MODELS = [  # (cell, decoder_context, bidirectional encoder)
    ("gru", "initial_state", False), ("gru", "every_step", False), ("lstm", "every_step", True),
    ("gru_simple", "initial_state", True),
]


def random_net(seed: int, cell: str, context: str, bidirectional: bool, target_vocab: int = 8) -> Seq2SeqNet:
    """A small network with N(0, 1) weights: peaked, varied output distributions."""
    torch.manual_seed(seed)
    encoder = Encoder(build_stack(CELLS.get(cell), None, EMBEDDING, HIDDEN, 1, bidirectional, 0.0),
                      vocab_size=SOURCE_VOCAB, embedding_size=EMBEDDING)
    decoder_input = EMBEDDING + HIDDEN if context == "every_step" else EMBEDDING
    decoder = Encoder(build_stack(CELLS.get(cell), None, decoder_input, HIDDEN, 1, False, 0.0),
                      vocab_size=target_vocab, embedding_size=EMBEDDING)
    net = Seq2SeqNet(encoder, decoder, target_vocab, 0.0, context)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0.0, 1.0)
    return net.eval()


def sources(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 3, 1, 4])
    tokens = torch.randint(4, SOURCE_VOCAB, (4, 5), generator=generator)
    tokens[torch.arange(5)[None, :] >= lengths[:, None]] = 0  # padding
    return tokens, lengths


@torch.no_grad()
def log_probs(net: Seq2SeqNet, source: torch.Tensor, length: torch.Tensor, outputs: list[list[int]]) -> list[float]:
    """log P(output | source) under the model for each output, by teacher forcing (outputs follow <BOS>)."""
    longest = max(len(y) for y in outputs)
    inputs = torch.tensor([[BOS] + y[:-1] + [0] * (longest - len(y)) for y in outputs])  # (N, T)
    targets = torch.tensor([y + [0] * (longest - len(y)) for y in outputs])  # (N, T)
    real = torch.tensor([[step < len(y) for step in range(longest)] for y in outputs])  # (N, T)
    count = len(outputs)
    logits = net(source[None].expand(count, -1), length[None].expand(count), inputs,
                 torch.tensor([len(y) for y in outputs]))  # (N, T, V)
    picked = torch.log_softmax(logits, -1).gather(2, targets[:, :, None])[:, :, 0]  # (N, T)
    return (picked * real).sum(1).tolist()


@pytest.mark.parametrize("cell,context,bidirectional", MODELS)
def test_teacher_forcing_equals_feeding_the_same_tokens_one_step_at_a_time(cell, context, bidirectional) -> None:
    net = random_net(0, cell, context, bidirectional)
    source, lengths = sources(0)
    targets = torch.randint(4, 8, (4, 6))
    forced = net(source, lengths, targets, torch.full((4,), 6))  # (B, T, V)
    state, c = net.encode(source, lengths)
    stepped = []
    for step in range(6):
        logits, state = net.decode(targets[:, step : step + 1], None, state, c)
        stepped.append(logits)
    assert torch.allclose(forced, torch.cat(stepped, dim=1), atol=1e-5)


def test_every_step_context_reaches_the_output_layer() -> None:
    # Cho et al.: the output layer reads [embedded y<t-1>, decoder output, context c].
    net = random_net(0, "gru", "every_step", False)
    assert net.head.in_features == EMBEDDING + 2 * HIDDEN
    assert net.decoder.stack.input_size == EMBEDDING + HIDDEN
    plain = random_net(0, "gru", "initial_state", False)
    assert plain.head.in_features == HIDDEN and plain.encode(*sources(0))[1] is None
    # The default is left out of the dumped config, so run keys of earlier experiment files stay the same.
    assert "decoder_context" not in ModelSettings().model_dump()
    assert ModelSettings(decoder_context="every_step").model_dump()["decoder_context"] == "every_step"


@pytest.mark.parametrize("cell,context,bidirectional", MODELS)
@pytest.mark.parametrize("seed", range(3))
def test_beam_of_one_is_greedy_decoding_exactly(cell, context, bidirectional, seed) -> None:
    net = random_net(seed, cell, context, bidirectional)
    source, lengths = sources(seed)
    greedy = net.greedy_decode(source, lengths, BOS, EOS, 12)
    beam = beam_search(net, source, lengths, bos_id=BOS, eos_id=EOS, beam_size=1, max_length=12)
    assert [h.output() for h in beam] == greedy
    assert decode(net, source, lengths, bos_id=BOS, eos_id=EOS, settings=DecodingSettings(1),
                  max_length=12) == greedy


def every_output(vocab: int, max_length: int) -> list[list[int]]:
    """All outputs of at most max_length tokens: y<1..k> <EOS> (k < max_length), or max_length non-EOS tokens."""
    tokens = [t for t in range(vocab) if t != EOS]
    outputs = []
    for length in range(max_length):
        outputs += [list(p) + [EOS] for p in itertools.product(tokens, repeat=length)]
    return outputs + [list(p) for p in itertools.product(tokens, repeat=max_length)]


@pytest.mark.parametrize("cell,context,bidirectional", MODELS)
@pytest.mark.parametrize("length_penalty", [0.0, 0.7])
def test_a_beam_wide_enough_for_every_prefix_finds_the_most_probable_output(cell, context, bidirectional,
                                                                            length_penalty) -> None:
    # 6 target tokens, at most 3 steps: 5 * 5 live prefixes * 6 extensions = 150 candidates at the
    # last step, so K = 150 never prunes: beam search is exhaustive and must match brute force.
    vocab, steps = 6, 3
    for seed in range(3):
        net = random_net(seed, cell, context, bidirectional, target_vocab=vocab)
        source, lengths = sources(seed)
        best = beam_search(net, source, lengths, bos_id=BOS, eos_id=EOS, beam_size=150, max_length=steps,
                           length_penalty=length_penalty)
        greedy = beam_search(net, source, lengths, bos_id=BOS, eos_id=EOS, beam_size=1, max_length=steps)
        for row in range(len(lengths)):
            outputs = every_output(vocab, steps)
            scored = [Hypothesis(y, score, y[-1] == EOS)
                      for y, score in zip(outputs, log_probs(net, source[row], lengths[row], outputs))]
            optimum = max(scored, key=lambda h: h.score(length_penalty))
            assert best[row].tokens == optimum.tokens
            assert best[row].score(length_penalty) == pytest.approx(optimum.score(length_penalty), abs=1e-5)
            assert best[row].score(length_penalty) >= greedy[row].score(length_penalty) - 1e-6


@pytest.mark.parametrize("cell,context,bidirectional", MODELS)
def test_beam_hypotheses_carry_the_model_log_probability_and_end_at_their_only_eos(cell, context,
                                                                                   bidirectional) -> None:
    for seed in range(3):
        net = random_net(seed, cell, context, bidirectional)
        source, lengths = sources(seed)
        for beam_size in (2, 3, 5):
            hypotheses = beam_search(net, source, lengths, bos_id=BOS, eos_id=EOS, beam_size=beam_size,
                                     max_length=10)
            for row, h in enumerate(hypotheses):
                (expected,) = log_probs(net, source[row], lengths[row], [h.tokens])
                assert h.log_prob == pytest.approx(expected, abs=1e-4)
                if h.finished:
                    assert h.tokens[-1] == EOS and EOS not in h.tokens[:-1] and h.output() == h.tokens[:-1]
                else:
                    assert len(h.tokens) == 10 and EOS not in h.tokens


def test_searching_a_batch_equals_searching_each_sentence_alone() -> None:
    net = random_net(1, "lstm", "every_step", True)
    source, lengths = sources(1)
    together = beam_search(net, source, lengths, bos_id=BOS, eos_id=EOS, beam_size=4, max_length=10)
    for row in range(len(lengths)):
        alone = beam_search(net, source[row : row + 1, : lengths[row]], lengths[row : row + 1], bos_id=BOS,
                            eos_id=EOS, beam_size=4, max_length=10)[0]
        assert alone.tokens == together[row].tokens
        assert alone.log_prob == pytest.approx(together[row].log_prob, abs=1e-5)


def test_length_normalisation_divides_by_the_length_including_eos() -> None:
    short, long = Hypothesis([5, EOS], -2.0, True), Hypothesis([5, 6, 7, EOS], -3.0, True)
    assert short.score(0.0) > long.score(0.0)  # raw log-probability prefers the short output
    assert long.score(1.0) == -0.75 and short.score(1.0) == -1.0  # per token, the long one wins
    assert short.score(0.7) == pytest.approx(-2.0 / 2**0.7)
