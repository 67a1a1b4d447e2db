"""The training loader's position: the same batches as a plain DataLoader, and a resume goes on at the next one."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, DistributedSampler

from harness.training.positions import ResumableLoader


def _epochs(loader, count: int) -> list[list[list[int]]]:
    return [[batch.tolist() for batch in loader] for _ in range(count)]


def test_the_shuffled_order_is_the_plain_dataloaders_order() -> None:
    # Uninterrupted runs must not change: the same generator gives the same permutations, epoch after epoch.
    plain = DataLoader(list(range(23)), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(7))
    ours = ResumableLoader(list(range(23)), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(7))
    assert _epochs(ours, 3) == _epochs(plain, 3)


def test_a_loaded_position_goes_on_with_the_next_batch_of_the_same_permutation() -> None:
    def loader() -> ResumableLoader:
        return ResumableLoader(list(range(23)), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(7))

    reference = _epochs(loader(), 2)
    interrupted = loader()
    list(interrupted)  # epoch 1 in full, then 2 batches of epoch 2
    iterator = iter(interrupted)
    next(iterator), next(iterator)
    interrupted.batches_done = 2  # what the checkpoint callback sets after batch 2
    state = interrupted.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == reference[1][2:]
    assert resumed.batches_done == 2


def test_a_distributed_samplers_epoch_is_restored() -> None:
    data = list(range(16))
    sampler = DistributedSampler(data, num_replicas=2, rank=1, shuffle=True, seed=3)
    first = ResumableLoader(data, batch_size=2, sampler=sampler)
    sampler.set_epoch(4)
    expected = [b.tolist() for b in first]
    first.batches_done = 0  # an end-of-epoch position: the next epoch (5) starts at its beginning
    assert first.state_dict()["epoch"] == 5
    first.batches_done = 1  # mid-epoch: epoch 4, after its first batch
    other_sampler = DistributedSampler(data, num_replicas=2, rank=1, shuffle=True, seed=3)
    resumed = ResumableLoader(data, batch_size=2, sampler=other_sampler)
    resumed.load_state_dict(first.state_dict())
    assert other_sampler.epoch == 4
    assert [b.tolist() for b in resumed] == expected[1:]
