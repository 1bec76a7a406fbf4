"""A data set of paired views of unlabeled tiles, for contrastive pretraining."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


class PairedViewDataset(Dataset):
    """Wraps a tile data set; each item is two augmented views of one tile.

    Randomness comes from torch's generator: DataLoader seeds it per worker and per epoch (and
    Lightning's ``seed_everything(workers=True)`` makes that reproducible), so every epoch draws new
    views while a seeded run repeats exactly.

    Args:
        tiles: Data set whose items hold ``image`` (C, H, W) float in [0, 1].
        views: Callable ``views(image, rng) -> dict`` (e.g. :class:`glcnet.data.views.PairedViews`).
        keep: Keys of the tile item carried over into the pair (e.g. ``mask`` for SupCon).
    """

    def __init__(
        self, tiles: Dataset, views: Callable[..., dict], keep: tuple[str, ...] = ()
    ) -> None:
        self.tiles = tiles
        self.views = views
        self.keep = tuple(keep)

    def __len__(self) -> int:
        return len(self.tiles)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.tiles[index]
        seed = int(torch.randint(0, 2**62, ()).item())
        pair = self.views(item["image"], np.random.default_rng(seed))
        pair["index"] = torch.tensor(index)
        for key in self.keep:
            pair[key] = item[key]
        return pair
