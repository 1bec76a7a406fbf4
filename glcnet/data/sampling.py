"""A seeded, step-indexed sampler for runs that resume exactly.

The data order and every item's randomness depend only on (seed, epoch, position), so a run
resumed mid-epoch sees exactly the batches it would have seen.

- :class:`ResumableSampler` draws epoch ``e``'s order from ``(seed, e)`` alone (a permutation, or
  ``num_samples`` draws with replacement), splits it across processes, and after
  :meth:`ResumableSampler.resume` skips the items the interrupted run had already consumed.
  It yields keys ``(index, item_seed)`` with ``item_seed`` derived from ``(seed, epoch, position)``.
- :class:`SeededItems` turns such a key into an item: it seeds torch's, NumPy's and Python's global
  random generators from ``item_seed`` for the duration of ``dataset[index]`` (and restores them),
  so augmentations drawing from the global generators (``PairedViewDataset``, ``FlipRotate``) give
  the same views whichever worker process or restart reads the item.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def derived_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (NumPy's SeedSequence)."""
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFFFFFF for k in keys])
    low, high = state.generate_state(2, dtype=np.uint32)
    return int((int(high) << 32 | int(low)) & 0x7FFFFFFFFFFFFFFF)


@contextlib.contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Seed torch's CPU, NumPy's and Python's global generators; restore them afterwards."""
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    torch.random.default_generator.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(torch_state)
        np.random.set_state(np_state)
        random.setstate(py_state)


def _world() -> tuple[int, int]:
    """``(world_size, rank)`` of the default process group, ``(1, 0)`` without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class ResumableSampler(DistributedSampler):
    """Order of epoch ``e`` from ``(seed, e)``; resumable after any number of consumed items.

    It is a :class:`DistributedSampler` so that Lightning keeps it under DDP instead of wrapping
    it; the world size and rank are read from ``torch.distributed`` when an epoch starts. Each
    process takes positions ``rank, rank + world, ...`` of the epoch's order, padded by wrapping
    around so that every process gets ``ceil(total / world)`` items.

    Args:
        length: Number of items in the data set.
        seed: Seed of the run.
        num_samples: Items per epoch (None: ``length``).
        replacement: Draw with replacement (needed when ``num_samples > length``).
    """

    def __init__(
        self, length: int, seed: int, num_samples: int | None = None, replacement: bool = False
    ) -> None:
        if length < 1:
            raise ValueError(f"cannot sample from an empty data set (length {length})")
        total = length if num_samples is None else int(num_samples)
        if total < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if total > length and not replacement:
            raise ValueError(f"num_samples={total} > {length} items needs replacement=True")
        self.length = int(length)
        self.seed = int(seed)
        self.total = total
        self.replacement = bool(replacement)
        self.epoch = 0
        self._skip = 0
        self.shuffle = True  # what Lightning reads from a DistributedSampler
        self.drop_last = False

    def order(self, epoch: int) -> np.ndarray:
        """Item indices of one epoch in visiting order (all processes together), (total,)."""
        rng = np.random.default_rng([self.seed, int(epoch)])
        if self.replacement:
            return rng.integers(0, self.length, size=self.total)
        return rng.permutation(self.length)[: self.total]

    def __len__(self) -> int:
        """Items per epoch for this process (the same before and after a resume)."""
        world, _ = _world()
        return math.ceil(self.total / world)

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``; a pending resume offset only survives for its own epoch."""
        if int(epoch) != self.epoch:
            self._skip = 0
        self.epoch = int(epoch)

    def resume(self, epoch: int, consumed: int) -> None:
        """Continue epoch ``epoch`` after the first ``consumed`` items of this process."""
        self.epoch = int(epoch)
        self._skip = max(0, int(consumed))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Keys ``(index, item_seed)`` of the rest of the current epoch for this process."""
        world, rank = _world()
        per_rank = math.ceil(self.total / world)
        order = np.resize(self.order(self.epoch), per_rank * world)  # wraps around to pad
        positions = range(rank, per_rank * world, world)
        skip, self._skip = self._skip, 0
        keys = [(int(order[p]), derived_seed(self.seed, self.epoch, p)) for p in positions]
        return iter(keys[skip:])


class SeededItems(Dataset):
    """Reads ``dataset[index]`` for keys ``(index, item_seed)`` with the global RNGs seeded.

    Plain integer keys are passed through unchanged (e.g. for validation loaders).

    Args:
        dataset: Any map-style data set.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, tuple):
            index, seed = key
            with seeded_rngs(seed):
                return self.dataset[index]
        return self.dataset[key]


def resumable_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    seed: int,
    num_samples: int | None = None,
    replacement: bool = False,
) -> DataLoader:
    """A training DataLoader over ``dataset`` with a :class:`ResumableSampler`.

    The last incomplete batch is dropped when there is more than one batch (as
    :meth:`glcnet.data.tile_data.TileData.loader` does for training).

    Args:
        dataset: The training items.
        batch_size: Items per batch and process.
        num_workers: Loader worker processes.
        seed: The run's seed.
        num_samples: Items per epoch (None: one pass over ``dataset``).
        replacement: Draw with replacement.

    Returns:
        The loader; its sampler is ``loader.sampler``.
    """
    sampler = ResumableSampler(len(dataset), seed, num_samples, replacement)  # type: ignore[arg-type]
    return DataLoader(
        SeededItems(dataset),
        batch_size=batch_size,
        sampler=sampler,
        drop_last=sampler.total > batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
