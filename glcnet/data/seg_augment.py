"""Geometric augmentation of (image, mask) tiles for fine-tuning."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset


class FlipRotate:
    """Random horizontal/vertical flips and 90-degree rotations applied to image and mask alike.

    Args:
        flip_p: Probability of each of the horizontal and vertical flips.
        rotate_p: Probability of a rotation by 90, 180 or 270 degrees.
    """

    def __init__(self, flip_p: float = 0.5, rotate_p: float = 0.5) -> None:
        if not (0.0 <= flip_p <= 1.0 and 0.0 <= rotate_p <= 1.0):
            raise ValueError("flip_p and rotate_p must be probabilities")
        self.flip_p = flip_p
        self.rotate_p = rotate_p

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ):
        """Augment one tile.

        Args:
            image: (C, H, W).
            mask: (H, W).
            generator: Source of randomness (None: torch's global generator, seeded per worker).

        Returns:
            The augmented (image, mask).
        """
        u = torch.rand(4, generator=generator)
        if u[0] < self.flip_p:
            image, mask = image.flip(-1), mask.flip(-1)
        if u[1] < self.flip_p:
            image, mask = image.flip(-2), mask.flip(-2)
        if u[2] < self.rotate_p:
            k = 1 + int(u[3] * 3) % 3
            image, mask = image.rot90(k, (-2, -1)), mask.rot90(k, (-2, -1))
        return image.contiguous(), mask.contiguous()


class AugmentedTiles(Dataset):
    """Applies an (image, mask) augmentation to the items of a labeled tile data set.

    Args:
        tiles: Data set with ``image`` and ``mask`` items.
        augment: Callable ``augment(image, mask) -> (image, mask)``; None passes items through.
    """

    def __init__(self, tiles: Dataset, augment: FlipRotate | None) -> None:
        self.tiles = tiles
        self.augment = augment

    def __len__(self) -> int:
        return len(self.tiles)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.tiles[index])
        if self.augment is not None:
            item["image"], item["mask"] = self.augment(item["image"], item["mask"])
        return item
