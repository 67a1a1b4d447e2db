"""Batching: turn a family's Examples into padded tensors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from harness.training.distributed import Shard
from harness.training.positions import ResumableLoader
from harness.training.streams import make_stream_loader
from harness.core.tasks import Example, TaskData

IGNORE_INDEX = -100  # targets at padded steps; cross-entropy skips them


class ExampleDataset(Dataset):
    def __init__(self, examples: Sequence[Example]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[int, Example]:
        return index, self.examples[index]


def _pad(sequences: Sequence[Sequence[int]], value: int) -> Tensor:
    """(B, T) ids, ``value`` past each sequence's end."""
    rows = [torch.as_tensor(sequence, dtype=torch.long) for sequence in sequences]
    return pad_sequence(rows, batch_first=True, padding_value=value)


def _pad_vectors(sequences: Sequence[Sequence[Sequence[float]]]) -> Tensor:
    """(B, T, D) float vectors, zeros past each sequence's end."""
    rows = [torch.as_tensor(sequence, dtype=torch.float32).reshape(len(sequence), len(sequences[0][0]))
            for sequence in sequences]
    return pad_sequence(rows, batch_first=True)


def _multi_hot(sequences: Sequence[Sequence[Sequence[int]]], labels: int) -> Tensor:
    """(B, T, labels) float 0/1 frames from each step's active label ids; zeros past a sequence's end."""
    longest = max(len(s) for s in sequences)
    rows, steps, active = [], [], []
    for row, sequence in enumerate(sequences):
        for step, ids in enumerate(sequence):
            rows += [row] * len(ids)
            steps += [step] * len(ids)
            active += ids
    out = torch.zeros(len(sequences), longest, labels)
    out[torch.tensor(rows, dtype=torch.long), torch.tensor(steps, dtype=torch.long),
        torch.tensor(active, dtype=torch.long)] = 1.0
    return out


class Collator:
    """Builds the batch dict of one family. Keys are documented per family below."""

    def __init__(self, family: str, data: TaskData) -> None:
        self.family, self.data = family, data
        vocab = data.input_vocab
        self.pad_id = vocab.pad_id if vocab is not None and "<PAD>" in vocab else 0

    def __call__(self, items: list[tuple[int, Example]]) -> dict[str, Any]:
        indices = torch.tensor([i for i, _ in items])
        examples = [e for _, e in items]
        batch: dict[str, Any] = {"index": indices}
        if self.family == "language_model":
            # x<1> = <BOS>, x<t> = y<t-1>; the last target is <EOS> (the notes' sentence end).
            vocab = self.data.input_vocab
            sequences = [list(e.inputs) for e in examples]
            batch["inputs"] = _pad([[vocab.bos_id] + s for s in sequences], self.pad_id)  # (B, T+1)
            batch["targets"] = _pad([s + [vocab.eos_id] for s in sequences], IGNORE_INDEX)  # (B, T+1)
            batch["lengths"] = torch.tensor([len(s) + 1 for s in sequences])
            return batch
        if self.family == "multilabel_sequence":
            # x<1> = zeros, x<t> = y<t-1>: targets are the (B, T, L) 0/1 frames, inputs the same shifted by one.
            frames = _multi_hot([e.inputs for e in examples], self.data.input_size)
            batch["targets"] = frames
            batch["inputs"] = torch.nn.functional.pad(frames[:, :-1], (0, 0, 1, 0))  # (B, T, L)
            batch["lengths"] = torch.tensor([len(e.inputs) for e in examples])
            return batch
        if self.data.input_size is not None:
            batch["inputs"] = _pad_vectors([e.inputs for e in examples])  # (B, T, F)
        else:
            batch["inputs"] = _pad([e.inputs for e in examples], self.pad_id)  # (B, T)
        batch["lengths"] = torch.tensor([len(e.inputs) for e in examples])
        if self.family == "classification":
            batch["targets"] = torch.tensor([int(e.target) for e in examples])  # (B,)
        elif self.family == "regression":
            batch["targets"] = torch.tensor([float(e.target) for e in examples])  # (B,)
        elif self.family == "tagging":
            batch["targets"] = _pad([e.target for e in examples], IGNORE_INDEX)  # (B, T)
        elif self.family == "seq2seq":
            vocab = self.data.output_vocab
            targets = [list(e.target) for e in examples]
            batch["decoder_inputs"] = _pad([[vocab.bos_id] + t for t in targets], vocab.pad_id)  # (B, Ty+1)
            batch["targets"] = _pad([t + [vocab.eos_id] for t in targets], IGNORE_INDEX)  # (B, Ty+1)
            batch["decoder_lengths"] = torch.tensor([len(t) + 1 for t in targets])
        return batch


def make_loader(family: str, data: TaskData, split: str, batch_size: int, *, seed: int,
                bptt_steps: int | None = None, shard: Shard = Shard()) -> DataLoader:
    """A loader over one split; only the training split is shuffled, with a seeded generator.

    A contiguous stream (``data.contiguous``) is read in order as ``batch_size`` columns and
    windows of ``bptt_steps`` steps instead (:mod:`harness.training.streams`).

    ``shard``: rank r of W data-parallel processes reads batch_size / W of each batch: stream
    columns [r·b, (r+1)·b) of the same batchified stream; the training examples a seeded
    ``DistributedSampler`` deals it (reshuffled every epoch); every W-th evaluation example.

    The training loader is a :class:`~harness.training.positions.ResumableLoader`: the same batches
    in the same order, and a mid-epoch checkpoint records its position in the epoch.
    """
    examples = data.splits()[split]
    exact = split == "train" or data.contiguous  # TrainingSettings checks these divide evenly
    local_batch = batch_size // shard.world if exact else math.ceil(batch_size / shard.world)
    if data.contiguous:
        if bptt_steps is None:
            raise ValueError("a contiguous stream needs bptt_steps")
        return make_stream_loader(examples[0].inputs, columns=batch_size, bptt_steps=bptt_steps, split=split,
                                  rows=slice(shard.rank * local_batch, (shard.rank + 1) * local_batch))
    dataset, collate = ExampleDataset(examples), Collator(family, data)
    if split != "train":
        if shard.world > 1:  # a partition, never padded: each example is scored once
            dataset = Subset(dataset, range(shard.rank, len(examples), shard.world))
        return DataLoader(dataset, batch_size=local_batch, shuffle=False, collate_fn=collate, num_workers=0)
    if shard.world > 1:
        sampler = DistributedSampler(dataset, num_replicas=shard.world, rank=shard.rank, shuffle=True, seed=seed)
        return ResumableLoader(dataset, batch_size=local_batch, sampler=sampler, collate_fn=collate, num_workers=0)
    return ResumableLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed),
                      collate_fn=collate, num_workers=0)


def count_tokens(batch: dict[str, Any]) -> int:
    """Real (non-padding) input steps in a batch, for throughput."""
    total = int(batch["lengths"].sum())
    if "decoder_lengths" in batch:
        total += int(batch["decoder_lengths"].sum())
    return total
