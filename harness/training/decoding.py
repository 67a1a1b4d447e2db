"""Decoding an encoder-decoder: greedy or beam search, and translating a user's sentences.

Beam search as the notes describe it: keep the ``K`` most probable partial outputs (by the
summed log-probability log P(y<1> … y<t> | x)), extend each by every target token, keep the
``K`` best extensions, and set aside each one that ends in <EOS>. Length normalisation
divides a hypothesis' log-probability by Ty^α when the finished hypotheses are compared
(α = 0: none; the notes suggest α ≈ 0.7), so longer outputs are not penalised merely for
having more factors below one. ``K = 1`` is greedy decoding.

All sentences of a batch are searched together (B·K decoder rows per step) and a sentence
leaves the batch as soon as its search is over: Multi30k's 1,000 test sentences with K = 5
take about 15 CPU-seconds with the 14M-parameter GRU preset. The network only needs
``encode`` and ``decode`` as :class:`harness.networks.models.Seq2SeqNet` has them.

Hand-written on purpose: PyTorch has no beam search, and the libraries that do (fairseq,
Hugging Face ``generate``) need their own model classes; this one works on any network
with ``encode``/``decode`` and follows the notes' definition, length normalisation included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from harness.core.errors import BadInputError

if TYPE_CHECKING:
    from harness.training.checkpoints import TrainedRun

#: Output length limit when neither the task nor the caller gives one (``harness translate``).
DEFAULT_MAX_LENGTH = 100


@dataclass(frozen=True)
class DecodingSettings:
    """How a seq2seq task wants its validation and test outputs decoded.

    A task exposes one as its ``decoding`` attribute; without it the family decodes greedily
    up to twice the longest reference plus 5 tokens.
    """

    #: 1: greedy (arg-max fed back); K > 1: beam search with K hypotheses.
    beam_size: int = 1
    #: Most tokens generated per sentence, <EOS> included; None: the family's rule above.
    max_length: int | None = None
    #: α of the length normalisation log P / Ty^α used to rank finished hypotheses (0: off).
    length_penalty: float = 0.0


@dataclass
class Hypothesis:
    """One output of the search: target ids after <BOS>, ending in <EOS> when ``finished``."""

    tokens: list[int]
    log_prob: float
    finished: bool

    def score(self, length_penalty: float) -> float:
        """log P / Ty^α, with Ty counting <EOS>: the quantity the search ranks outputs by."""
        return self.log_prob / max(len(self.tokens), 1) ** length_penalty

    def output(self) -> list[int]:
        """The ids without <EOS>, as the task's metrics see them."""
        return self.tokens[:-1] if self.finished else list(self.tokens)


@dataclass
class _Search:
    """The beams of one sentence still being searched."""

    prefixes: list[list[int]]  # K token lists
    scores: list[float]  # K summed log-probabilities
    done: list[Hypothesis] = field(default_factory=list)


@torch.no_grad()
def beam_search(net: Any, source: Tensor, source_lengths: Tensor, *, bos_id: int, eos_id: int, beam_size: int,
                max_length: int, length_penalty: float = 0.0) -> list[Hypothesis]:
    """The best hypothesis per source sentence (source (B, Tx) padded ids, lengths (B,)).

    At each step the 2K best extensions of a sentence's beams are ranked; an extension by
    <EOS> among the first K is set aside as finished, and the first K others become the new
    beams. A sentence's search ends when it has K finished hypotheses, or, without length
    normalisation, as soon as its best finished hypothesis scores at least its best beam
    (extending a beam only lowers its log-probability). After ``max_length`` steps the
    unfinished beams compete too. The winner maximises :meth:`Hypothesis.score`.
    """
    if beam_size < 1 or max_length < 1:
        raise ValueError(f"beam_size and max_length must be positive, got {beam_size} and {max_length}")
    state, context = net.encode(source, source_lengths)  # each (L, B, H); (B, H) or None
    rows = torch.arange(source.shape[0], device=source.device).repeat_interleave(beam_size)  # (B*K,)
    state, context = _select(state, context, rows)
    searches = [_Search([[] for _ in range(beam_size)], [0.0] + [float("-inf")] * (beam_size - 1))
                for _ in range(source.shape[0])]
    every = list(searches)
    tokens = torch.full((len(rows), 1), bos_id, dtype=torch.long, device=source.device)
    for _ in range(max_length):
        logits, state = net.decode(tokens, None, state, context)  # (A*K, 1, V)
        log_probs = torch.log_softmax(logits[:, 0].float(), dim=-1)  # (A*K, V)
        vocab_size = log_probs.shape[1]
        scores = torch.tensor([s.scores for s in searches], device=log_probs.device)  # (A, K)
        candidates = (scores[:, :, None] + log_probs.view(len(searches), beam_size, vocab_size)).flatten(1)
        top_scores, top_index = candidates.topk(min(2 * beam_size, candidates.shape[1]), dim=1)  # (A, 2K)
        keep_rows, keep_tokens, still = [], [], []
        for row, (search, ranked_scores, ranked) in enumerate(zip(searches, top_scores.tolist(),
                                                                    top_index.tolist())):
            beams = _advance(search, ranked_scores, ranked, vocab_size, beam_size, eos_id, length_penalty)
            if beams is None:
                continue
            still.append(search)
            keep_rows += [row * beam_size + beam for beam, _ in beams]
            keep_tokens += [token for _, token in beams]
        searches = still
        if not searches:
            break
        index = torch.tensor(keep_rows, device=source.device)
        state, context = _select(state, context, index)
        tokens = torch.tensor(keep_tokens, device=source.device)[:, None]  # (A*K, 1)
    for search in searches:  # out of steps: the unfinished beams compete with the finished ones
        search.done += [Hypothesis(p, s, False) for p, s in zip(search.prefixes, search.scores) if s > float("-inf")]
    return [max(search.done, key=lambda h: h.score(length_penalty)) for search in every]


def _advance(search: _Search, ranked_scores: list[float], ranked: list[int], vocab_size: int, beam_size: int,
             eos_id: int, length_penalty: float) -> list[tuple[int, int]] | None:
    """Update one sentence's beams from its ranked extensions; None when its search is over.

    Returns (beam it extends, token) for each of the K new beams.
    """
    beams: list[tuple[int, int]] = []
    prefixes, scores = [], []
    for rank, (score, flat) in enumerate(zip(ranked_scores, ranked)):
        if score == float("-inf") or len(beams) == beam_size:
            break
        beam, token = divmod(flat, vocab_size)
        if token == eos_id:
            if rank < beam_size:
                search.done.append(Hypothesis(search.prefixes[beam] + [token], score, True))
            continue
        beams.append((beam, token))
        prefixes.append(search.prefixes[beam] + [token])
        scores.append(score)
    finished_enough = len(search.done) >= beam_size
    if not finished_enough and search.done and length_penalty == 0 and scores:
        finished_enough = max(h.log_prob for h in search.done) >= scores[0]
    if finished_enough or not beams:
        return None
    while len(beams) < beam_size:  # fewer live extensions than beams (tiny vocabularies): pad with dead ones
        beams.append(beams[0])
        prefixes.append(prefixes[0])
        scores.append(float("-inf"))
    search.prefixes, search.scores = prefixes, scores
    return beams


def _select(state: tuple[Tensor, ...], context: Tensor | None, rows: Tensor) -> tuple[tuple[Tensor, ...],
                                                                                    Tensor | None]:
    """Keep (and repeat) decoder rows: each state part is (L, N, H), the context (N, H)."""
    picked = tuple(part.index_select(1, rows) for part in state)
    return picked, (context.index_select(0, rows) if context is not None else None)


def decode(net: Any, source: Tensor, source_lengths: Tensor, *, bos_id: int, eos_id: int,
           settings: DecodingSettings, max_length: int) -> list[list[int]]:
    """Target ids without <BOS>/<EOS> per sentence: greedy for beam size 1, else beam search."""
    if settings.beam_size == 1:
        return net.greedy_decode(source, source_lengths, bos_id, eos_id, max_length)
    hypotheses = beam_search(net, source, source_lengths, bos_id=bos_id, eos_id=eos_id,
                             beam_size=settings.beam_size, max_length=max_length,
                             length_penalty=settings.length_penalty)
    return [h.output() for h in hypotheses]


@dataclass
class Translation:
    """One translated sentence, and the source tokens the model has no embedding for (read as <UNK>)."""

    text: str
    unknown: list[str]


def translate(trained: TrainedRun, sentences: Sequence[str], *, beam_size: int | None = None,
              max_length: int | None = None) -> list[Translation]:
    """Translate user sentences with a trained seq2seq run (``harness translate``).

    Each sentence goes through the task's own source tokenizer (lower-casing as in training),
    is decoded with ``beam_size`` (default: the run's task setting) and detokenized by the task.
    """
    task = trained.task
    if task.family != "seq2seq":
        raise BadInputError(f"task {task.name!r} is a {task.family} task; only seq2seq runs translate")
    settings: DecodingSettings = getattr(task, "decoding", None) or DecodingSettings()
    if beam_size is not None:
        settings = DecodingSettings(beam_size, settings.max_length, settings.length_penalty)
    limit = max_length or settings.max_length or DEFAULT_MAX_LENGTH
    if settings.beam_size < 1 or limit < 1:
        raise BadInputError(f"--beam and --max-length must be positive, got {settings.beam_size} and {limit}")
    source_vocab, target_vocab = trained.data.input_vocab, trained.data.output_vocab
    tokenized = [task.tokenize(sentence) for sentence in sentences]
    empty = [str(number) for number, tokens in enumerate(tokenized, 1) if not tokens]
    if empty:
        raise BadInputError(f"sentence {', '.join(empty)} has no tokens; give the text to translate")
    ids = [torch.tensor(source_vocab.encode(tokens), dtype=torch.long) for tokens in tokenized]
    pad_id = source_vocab.pad_id if "<PAD>" in source_vocab else 0
    source = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=pad_id)  # (N, Tx)
    lengths = torch.tensor([len(tokens) for tokens in tokenized])
    trained.net.eval()
    outputs = decode(trained.net, source, lengths, bos_id=target_vocab.bos_id, eos_id=target_vocab.eos_id,
                     settings=settings, max_length=limit)
    return [Translation(task.detokenize(target_vocab.decode(output)), [t for t in tokens if t not in source_vocab])
            for output, tokens in zip(outputs, tokenized)]
