"""The networks around the recurrent stack, one plain ``nn.Module`` per task family.

No Lightning here: the training layer (``harness.training.trainer``) injects these networks
into its LightningModules. Every network reads its recurrent features from a
:class:`~harness.networks.stack.RecurrentStack`, so any registered cell fits any family.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from harness.core.cells import CellConfig, RecurrentCell, State
from harness.networks.stack import Implementation, RecurrentStack


class Encoder(nn.Module):
    """Token embedding (or raw vectors) followed by the recurrent stack."""

    def __init__(
        self,
        stack: RecurrentStack,
        *,
        vocab_size: int | None,
        embedding_size: int | None,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=pad_id) if vocab_size else None
        self.stack = stack

    def forward(self, inputs: Tensor, lengths: Tensor | None, state: State | None = None) -> tuple[Tensor, State]:
        """inputs: (B, T) token ids or (B, T, F) vectors → outputs (B, T, D*H), final state."""
        features = self.embedding(inputs) if self.embedding is not None else inputs  # (B, T, E|F)
        return self.stack(features, lengths, state)


def last_features(outputs: Tensor, lengths: Tensor, final_state: State, stack: RecurrentStack,
                  pooling: Literal["last", "mean", "max"] = "last") -> Tensor:
    """One vector per sequence for many-to-one tasks, (B, D*H).

    ``last`` is the notes' many-to-one: the forward state after the last real token,
    and for a bidirectional stack also the backward state after x<1> (its last step).
    """
    if pooling == "last":
        directions = stack.num_directions
        top = final_state[0][-directions:]  # (D, B, H), the last layer's directions
        return torch.cat(list(top), dim=1)
    mask = (torch.arange(outputs.shape[1], device=outputs.device)[None, :] < lengths[:, None]).unsqueeze(2)
    if pooling == "mean":
        return (outputs * mask).sum(1) / lengths[:, None].to(outputs.dtype)
    return outputs.masked_fill(~mask, float("-inf")).max(1).values


class TaggerNet(nn.Module):
    """Many-to-many (Tx = Ty): ŷ<t> = softmax(W_y a<t> + b_y) at every step."""

    def __init__(self, encoder: Encoder, num_tags: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder, self.dropout = encoder, nn.Dropout(dropout)
        self.head = nn.Linear(encoder.stack.output_size, num_tags)

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        outputs, _ = self.encoder(inputs, lengths)  # (B, T, D*H)
        return self.head(self.dropout(outputs))  # (B, T, C)


class ClassifierNet(nn.Module):
    """Many-to-one: one output after reading the whole sequence (C classes, or 1 value)."""

    def __init__(self, encoder: Encoder, num_outputs: int, dropout: float = 0.0,
                 pooling: Literal["last", "mean", "max"] = "last") -> None:
        super().__init__()
        self.encoder, self.dropout, self.pooling = encoder, nn.Dropout(dropout), pooling
        self.head = nn.Linear(encoder.stack.output_size, num_outputs)

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        outputs, final_state = self.encoder(inputs, lengths)
        features = last_features(outputs, lengths, final_state, self.encoder.stack, self.pooling)  # (B, D*H)
        return self.head(self.dropout(features))  # (B, C)


class LanguageModelNet(nn.Module):
    """x<t> = y<t-1>: predicts each next token; the state can be carried across segments."""

    def __init__(self, encoder: Encoder, vocab_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        if encoder.stack.bidirectional:
            raise ValueError("a language model cannot be bidirectional: it would see the tokens it predicts")
        self.encoder, self.dropout = encoder, nn.Dropout(dropout)
        self.head = nn.Linear(encoder.stack.output_size, vocab_size)

    def forward(self, inputs: Tensor, lengths: Tensor | None, state: State | None = None) -> tuple[Tensor, State]:
        outputs, state = self.encoder(inputs, lengths, state)  # (B, T, H)
        # torch.nn's batch-first outputs are a transposed view; contiguous, the softmax layer runs as one
        # addmm instead of mm + a separate bias add (about 5% of a PTB training step on the CPU).
        return self.head(self.dropout(outputs.contiguous())), state  # (B, T, V)


class MultilabelSequenceNet(nn.Module):
    """x<t> = y<t-1> with one sigmoid per label (the notes' music generation): logits (B, T, L).

    The inputs are the previous step's 0/1 label vectors, fed raw to the stack (no embedding);
    the sigmoids live in the loss (``binary_cross_entropy_with_logits``) and in sampling.
    """

    def __init__(self, encoder: Encoder, num_labels: int, dropout: float = 0.0) -> None:
        super().__init__()
        if encoder.stack.bidirectional:
            raise ValueError("a next-step model cannot be bidirectional: it would see the steps it predicts")
        self.encoder, self.dropout = encoder, nn.Dropout(dropout)
        self.head = nn.Linear(encoder.stack.output_size, num_labels)

    def forward(self, inputs: Tensor, lengths: Tensor | None, state: State | None = None) -> tuple[Tensor, State]:
        outputs, state = self.encoder(inputs, lengths, state)  # (B, T, H)
        return self.head(self.dropout(outputs)), state  # (B, T, L)


class Seq2SeqNet(nn.Module):
    """Encoder-decoder (Tx ≠ Ty): the decoder starts from the encoder's final state.

    A bidirectional encoder's two final states per layer are joined by a linear bridge
    into the unidirectional decoder's initial state.

    ``decoder_context="every_step"`` is Cho et al. (2014)'s decoder: the context c (the top
    layer's first component of that initial state, (B, H)) is also concatenated to every
    decoder input, and [embedded y<t-1>, decoder output, c] feed the output layer, so the
    source need not survive in the decoder's state alone. The decoder stack must then take
    inputs of width E + H. ``initial_state`` (the default) is Sutskever et al.'s plain form.
    """

    def __init__(self, encoder: Encoder, decoder: Encoder, target_vocab_size: int, dropout: float = 0.0,
                 decoder_context: Literal["initial_state", "every_step"] = "initial_state") -> None:
        super().__init__()
        if decoder.stack.bidirectional:
            raise ValueError("the decoder must be unidirectional")
        self.encoder, self.decoder, self.dropout = encoder, decoder, nn.Dropout(dropout)
        self.decoder_context = decoder_context
        hidden = decoder.stack.hidden_size
        self.bridge = nn.Linear(2 * hidden, hidden) if encoder.stack.bidirectional else None
        head_input = hidden
        if decoder_context == "every_step":
            embedding = decoder.embedding.embedding_dim
            if decoder.stack.input_size != embedding + hidden:
                raise ValueError(f"with decoder_context every_step the decoder stack reads embedding + context "
                                 f"({embedding} + {hidden}), not {decoder.stack.input_size}")
            head_input = embedding + 2 * hidden
        self.head = nn.Linear(head_input, target_vocab_size)

    def encode(self, source: Tensor, source_lengths: Tensor) -> tuple[State, Tensor | None]:
        """The decoder's initial state (each (L, B, H)) and the context c (B, H), or None without one."""
        _, state = self.encoder(source, source_lengths)  # each (L*D, B, H)
        if self.bridge is not None:
            layers = self.decoder.stack.num_layers
            state = tuple(
                self.bridge(part.view(layers, 2, *part.shape[1:]).permute(0, 2, 1, 3).flatten(2)) for part in state
            )  # each (L, B, H)
        context = state[0][-1] if self.decoder_context == "every_step" else None
        return state, context

    def decode(self, tokens: Tensor, lengths: Tensor | None, state: State,
               context: Tensor | None) -> tuple[Tensor, State]:
        """Decoder steps from ``state``: tokens (B, T) are y<t-1>; returns logits (B, T, V) and the new state."""
        if context is None:
            outputs, state = self.decoder(tokens, lengths, state)  # (B, T, H)
            return self.head(self.dropout(outputs)), state
        embedded = self.decoder.embedding(tokens)  # (B, T, E)
        repeated = context[:, None, :].expand(-1, tokens.shape[1], -1)  # (B, T, H)
        outputs, state = self.decoder.stack(torch.cat([embedded, repeated], dim=2), lengths, state)  # (B, T, H)
        return self.head(self.dropout(torch.cat([embedded, outputs, repeated], dim=2))), state

    def forward(self, source: Tensor, source_lengths: Tensor, decoder_inputs: Tensor,
                decoder_lengths: Tensor) -> Tensor:
        """Teacher forcing: decoder_inputs are <BOS> y<1> … y<Ty>; returns logits (B, Ty+1, V)."""
        state, context = self.encode(source, source_lengths)
        logits, _ = self.decode(decoder_inputs, decoder_lengths, state, context)
        return logits

    @torch.no_grad()
    def greedy_decode(self, source: Tensor, source_lengths: Tensor, bos_id: int, eos_id: int,
                      max_length: int) -> list[list[int]]:
        """Feed back the arg-max token until <EOS> or ``max_length``; ids without <BOS>/<EOS>."""
        batch = source.shape[0]
        state, context = self.encode(source, source_lengths)
        token = torch.full((batch, 1), bos_id, dtype=torch.long, device=source.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=source.device)
        steps = []
        for _ in range(max_length):
            logits, state = self.decode(token, None, state, context)  # (B, 1, V)
            token = logits.argmax(-1)  # (B, 1)
            steps.append(token[:, 0])
            finished |= token[:, 0] == eos_id
            if finished.all():
                break
        decoded = []
        for row in torch.stack(steps, dim=1).tolist():  # (B, steps)
            decoded.append(row[: row.index(eos_id)] if eos_id in row else row)
        return decoded


def stack_param_count(cell_class: type[RecurrentCell], config: CellConfig | None, input_size: int,
                      hidden_size: int, num_layers: int, bidirectional: bool) -> int:
    """Parameters of a whole recurrent stack, from the cell's ``param_count``."""
    directions = 2 if bidirectional else 1
    total = 0
    for layer in range(num_layers):
        layer_input = input_size if layer == 0 else hidden_size * directions
        total += directions * cell_class.param_count(layer_input, hidden_size, config)
    return total


def hidden_size_for_budget(cell_class: type[RecurrentCell], config: CellConfig | None, input_size: int,
                           budget: int, num_layers: int, bidirectional: bool) -> int:
    """The hidden size whose recurrent stack has the parameter count closest to ``budget``."""
    def count(hidden: int) -> int:
        return stack_param_count(cell_class, config, input_size, hidden, num_layers, bidirectional)

    low, high = 1, 1
    while count(high) < budget and high < 1 << 16:
        low, high = high, high * 2
    while high - low > 1:  # the count grows with the hidden size
        middle = (low + high) // 2
        low, high = (middle, high) if count(middle) < budget else (low, middle)
    return min((low, high), key=lambda h: (abs(count(h) - budget), h))


def build_stack(cell_class: type[RecurrentCell], config: CellConfig | None, input_size: int, hidden_size: int,
                num_layers: int, bidirectional: bool, dropout: float,
                implementation: Implementation = "auto") -> RecurrentStack:
    return RecurrentStack(cell_class, input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
                          dropout=dropout, config=config, implementation=implementation)
