"""The training loader of a run: seeded and resumable, optionally skipping unreadable tiles."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Dataset

from glcnet.data.bad_tiles import SkipBadTiles
from glcnet.data.sampling import resumable_loader
from glcnet.training.resume import ResumeDataOrder, SkippedTileCounter

#: File in the run folder listing the skipped tile reads (``data.skip_bad_tiles=true``).
SKIPPED_TILES_FILE = "skipped_tiles.txt"


def training_loader(
    items: Dataset,
    data,
    seed: int,
    output_dir: str | Path,
    num_samples: int | None = None,
    replacement: bool = False,
) -> tuple[DataLoader, list[L.Callback], SkippedTileCounter | None]:
    """Build the training loader and the callbacks that make it resumable and counted.

    Args:
        items: Training items (paired views or augmented labeled tiles).
        data: The run's :class:`glcnet.data.tile_data.TileData` (batch size, workers,
            ``skip_bad_tiles``).
        seed: The run's seed (data order and item randomness).
        output_dir: The run folder (receives ``skipped_tiles.txt``).
        num_samples: Items per epoch (None: one pass over ``items``).
        replacement: Draw with replacement.

    Returns:
        The loader, its callbacks, and the skipped-tile counter (None without
        ``data.skip_bad_tiles``).
    """
    counter = None
    if getattr(data, "skip_bad_tiles", False):
        items = SkipBadTiles(items, Path(output_dir) / SKIPPED_TILES_FILE)
        counter = SkippedTileCounter()
    loader = resumable_loader(
        items, data.batch_size, data.num_workers, seed, num_samples, replacement
    )
    callbacks: list[L.Callback] = [ResumeDataOrder(loader.sampler, data.batch_size)]
    if counter is not None:
        callbacks.append(counter)
    return loader, callbacks, counter
