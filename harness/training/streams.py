"""Contiguous token streams read with truncated backpropagation through time (TBPTT).

A stream language model (``TaskData.contiguous``) reads each split as one long token
stream, as Mikolov's RNNLM, Zaremba et al. (2014) and pytorch/examples
``word_language_model`` do:

1. *batchify*: the stream of L tokens is cut into B equal columns of C = L // B tokens
   (the tail that fills no column is dropped); row b of every batch continues column b,
   i.e. tokens [b·C, (b+1)·C) of the stream;
2. *windows*: consecutive windows of ``bptt_steps`` steps, x<t> = column[t] and
   y<t> = column[t+1]; the last window of a pass may be shorter;
3. *carried state*: the state after one window starts the next one, detached so that
   backpropagation stops at the window boundary; a pass starts from the zero state
   (window 0 of every training epoch and of every validation or test pass).

Every column's first token is only ever an input, so a pass predicts N = B·(C − 1)
tokens; with B = 1 that is every token but the first. Perplexity = exp(summed NLL / N)
and bits per token = summed NLL / (N ln 2), from the family's summed loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from harness.core.cells import State
from harness.core.tasks import EmptySplitError
from harness.training.positions import ResumableLoader


def batchify(ids: Sequence[int], columns: int) -> Tensor:
    """The stream as (B, C) = (columns, len(ids) // columns) token ids, column b in row b."""
    length = len(ids) // columns
    return torch.as_tensor(list(ids[: columns * length]), dtype=torch.long).view(columns, length)  # (B, C)


def predicted_tokens(stream_length: int, columns: int) -> int:
    """N, the number of tokens a pass over a stream of ``stream_length`` tokens predicts."""
    return columns * max(stream_length // columns - 1, 0)


class StreamWindows(Dataset):
    """The BPTT windows of one split's stream, in order; item i is a whole (B, T) batch.

    Each item is ``{"inputs": (B, T), "targets": (B, T), "lengths": (B,) all T,
    "stream": split name, "window": i}``: the family carries the state of ``stream``
    from window i - 1 to window i and starts from zero at window 0.
    """

    def __init__(self, ids: Sequence[int], *, columns: int, bptt_steps: int, split: str,
                 rows: slice = slice(None)) -> None:
        if len(ids) // columns < 2:
            raise EmptySplitError(
                f"the {split} stream has {len(ids)} tokens: too few for batch size {columns} (each of the "
                f"{columns} columns needs at least 2 tokens); lower the batch size or use more data"
            )
        self.data = batchify(ids, columns)[rows]  # (B, C), or the rows (columns of the stream) asked for
        self.bptt_steps, self.split = bptt_steps, split

    def __len__(self) -> int:
        return math.ceil((self.data.shape[1] - 1) / self.bptt_steps)

    def __getitem__(self, window: int) -> dict[str, Any]:
        if not 0 <= window < len(self):
            raise IndexError(window)
        start = window * self.bptt_steps
        steps = min(self.bptt_steps, self.data.shape[1] - 1 - start)
        inputs = self.data[:, start : start + steps]  # (B, T)
        targets = self.data[:, start + 1 : start + 1 + steps]  # (B, T)
        return {"inputs": inputs, "targets": targets, "lengths": torch.full((inputs.shape[0],), steps),
                "stream": self.split, "window": window}


def make_stream_loader(ids: Sequence[int], *, columns: int, bptt_steps: int, split: str,
                       rows: slice = slice(None)) -> DataLoader:
    """Windows in stream order (never shuffled: the carried state needs the previous window).

    ``rows``: the columns this loader reads (a data-parallel rank's share), all by default.
    """
    windows = StreamWindows(ids, columns=columns, bptt_steps=bptt_steps, split=split, rows=rows)
    if split == "train":  # records how many windows an epoch has trained (a mid-epoch checkpoint resumes there)
        return ResumableLoader(windows, batch_size=None, shuffle=False, num_workers=0)
    return DataLoader(windows, batch_size=None, shuffle=False, num_workers=0)


def detach_state(state: State) -> State:
    """The same state cut off from the graph: the next window's gradient stops here."""
    return tuple(part.detach() for part in state)
