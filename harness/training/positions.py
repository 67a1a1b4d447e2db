"""A training loader that knows where it is in its epoch, so that a mid-epoch checkpoint resumes exactly.

:class:`ResumableLoader` is a plain ``DataLoader`` (same arguments, same batches in the same order)
with Lightning's ``state_dict`` / ``load_state_dict`` loader interface. Lightning's fit loop saves
that state in every checkpoint (``loops.fit_loop.state_dict.combined_loader``) and hands it back
before it iterates the loader again on resume. The state is the data order's position:

* ``order``: the loader's shuffling generator as it was when the epoch's iterator was created
  (``None`` for an unshuffled loader, or one whose ``DistributedSampler`` seeds from its epoch);
* ``epoch``: the sampler's epoch (a ``DistributedSampler``'s permutation is drawn from seed + epoch);
* ``done``: how many of the epoch's batches were trained when the checkpoint was written, set by
  the checkpoint callback (:mod:`harness.training.resume`); 0 at the end of an epoch.

Resuming with ``done`` = k > 0 restores ``order``, creates the epoch's iterator again (drawing the
same permutation) and skips its first k index batches without loading them: the next batch is
batch k + 1 of the interrupted epoch. Loading skips the global torch RNG draw a generator-less
iterator makes (the data-parallel loader's worker base seed), since the checkpoint's RNG state is
already past it. A TBPTT stream's carried hidden state is saved by the checkpoint callback.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader


class ResumableLoader(DataLoader):
    """A single-process ``DataLoader`` whose position in the epoch Lightning checkpoints."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.num_workers:
            raise ValueError("ResumableLoader skips batches in the main process: num_workers must be 0")
        self.batches_done = 0  # trained batches of the current epoch (the checkpoint callback sets it)
        self._epoch_order: torch.Tensor | None = None
        self._pending: dict[str, Any] | None = None

    def __iter__(self) -> Any:
        pending, self._pending = self._pending, None
        generator = self.generator
        if pending is not None and generator is not None and pending["order"] is not None:
            generator.set_state(pending["order"])
        self._epoch_order = generator.get_state() if generator is not None else None
        self.batches_done = 0
        skip = int(pending["done"]) if pending is not None else 0
        if skip and generator is None:
            rng = torch.get_rng_state()
            iterator = super().__iter__()
            torch.set_rng_state(rng)
        else:
            iterator = super().__iter__()
        for _ in range(skip):  # indices only: the skipped batches are never loaded or collated
            next(iterator._sampler_iter)
        self.batches_done = skip
        return iterator

    def state_dict(self) -> dict[str, Any]:
        epoch = getattr(self.sampler, "epoch", None)
        if self.batches_done == 0 and epoch is not None:
            epoch += 1  # an end-of-epoch position: the next epoch starts from its beginning
        return {"order": self._epoch_order if self.batches_done else None, "done": self.batches_done,
                "epoch": epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("epoch") is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(int(state["epoch"]))
        if int(state.get("done", 0)) > 0:
            self._pending = dict(state)


def loader_position(loader: Any) -> ResumableLoader | None:
    """``loader`` if it records its position (every training loader of :func:`make_loader` does)."""
    return loader if isinstance(loader, ResumableLoader) else None
