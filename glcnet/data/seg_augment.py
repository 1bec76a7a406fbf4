"""Augmentation of labeled (image, mask) tiles for fine-tuning, through albumentations pipelines.

The pipelines are written in the configs (``configs/train_augment/*.yaml``) as ``_target_`` nodes,
one per albumentations transform, instantiated by Hydra like every other object of the package.
We chose this over albumentations' own serialisation (``A.from_dict`` / ``A.load``) because:

- every argument is a config key that the command line can override
  (``train_augment.transforms.3.p=0.8``) and ``${data.ignore_index}`` can be interpolated into it;
- the files read like the Python a user already writes (``A.Affine(rotate=..., p=...)``), without
  albumentations' version-tagged ``__class_fullname__`` wrappers;
- our own transforms (:class:`RGBOnly`) need no registry.

:class:`TileAugment` converts a tile once from the package's (C, H, W) float32 tensors to the
(H, W, C) numpy layout albumentations works on, runs image and mask through the pipeline together
and converts back. It refuses, at construction, pipelines that would corrupt the labels: a mask
interpolation other than nearest, or a mask fill value (for areas rotated or shifted in from outside
the tile) other than ``ignore_index``, so that such areas are ignored by the loss instead of being
taught as class 0. Each transform is also tried once on a blank tile of the data's band count, so
that an RGB-only op on 4-band tiles fails before training with a hint, not in a loader worker.

Randomness: each call draws one integer from torch's global generator (which the DataLoader seeds
per worker and Lightning's ``seed_everything(workers=True)`` makes reproducible) and seeds one numpy
generator and one ``random.Random`` from it, shared by every transform of the pipeline. So a seeded
run repeats exactly, and consecutive items draw different parameters. (albumentations'
``Compose.set_random_seed`` would instead give every transform its own generator seeded alike, which
correlates their random decisions.)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

_MASK_DTYPES = (np.uint8, np.uint16, np.int16)  # integer types OpenCV's warps accept
_FIRST_THREE = [0, 0, 1, 1, 2, 2]  # cv2.mixChannels pairs: band i of the source -> band i


class AugmentConfigError(ValueError):
    """A fine-tuning augmentation pipeline that would corrupt the labels or cannot run on the tiles."""


class RGBOnly(A.ImageOnlyTransform):
    """Apply an RGB-only albumentations transform to the first three bands; other bands unchanged.

    Hue, saturation, grayscale and other colour-space ops are defined for RGB images only
    (albumentations refuses 4-band input). Wrapped in this, they act on bands 1-3 and leave the
    rest, e.g. the IR band of RGBIR tiles, as they are. 3-band IRRG tiles are treated as RGB.

    Args:
        transform: The albumentations transform (its own ``p`` still applies).
        p: Probability of applying the wrapper (1: leave the decision to ``transform``).
    """

    def __init__(self, transform: A.BasicTransform, p: float = 1.0) -> None:
        self.transform = transform
        super().__init__(p=p)

    def set_random_state(self, random_generator: np.random.Generator, py_random: random.Random):
        """Share the generators with the wrapped transform."""
        super().set_random_state(random_generator, py_random)
        self.transform.set_random_state(random_generator, py_random)

    def set_random_seed(self, seed: int | None) -> None:
        """Seed the wrapper and the wrapped transform."""
        super().set_random_seed(seed)
        if hasattr(self, "transform"):  # BasicTransform.__init__ calls this before it is set
            self.transform.set_random_seed(seed)

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        """(H, W, C >= 3) -> (H, W, C), the wrapped transform applied to ``img[..., :3]``."""
        if img.ndim != 3 or img.shape[2] < 3:
            raise AugmentConfigError(
                f"RGBOnly({type(self.transform).__name__}) needs >= 3 bands, got shape {img.shape}"
            )
        if img.shape[2] == 3:
            return self.transform(image=img)["image"]
        rgb = np.empty((*img.shape[:2], 3), dtype=img.dtype)
        cv2.mixChannels([img], [rgb], _FIRST_THREE)  # 5-10x faster than numpy's strided copy
        rgb = self.transform(image=rgb)["image"]
        if rgb.shape != (*img.shape[:2], 3) or rgb.dtype != img.dtype:
            raise AugmentConfigError(
                f"RGBOnly({type(self.transform).__name__}) must return the 3 bands it gets, "
                f"got shape {rgb.shape}, dtype {rgb.dtype}"
            )
        out = img.copy()
        cv2.mixChannels([rgb], [out], _FIRST_THREE)
        return out


def _leaves(transforms: Sequence[Any]) -> Iterator[A.BasicTransform]:
    """Every transform of a pipeline, nested compositions (OneOf, SomeOf, ...) walked through."""
    for t in transforms:
        if isinstance(t, A.BaseCompose):
            yield from _leaves(t.transforms)
        else:
            yield t


def _mask_dtype(low: int, high: int) -> np.dtype:
    for dtype in _MASK_DTYPES:
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    raise AugmentConfigError(
        f"train_augment: mask values in [{low}, {high}] do not fit a 16-bit integer, which "
        "OpenCV's warps need; use class indices and an ignore_index in [-32768, 65535]"
    )


class TileAugment:
    """An albumentations pipeline applied to (image, mask) tiles of any band count.

    Args:
        transforms: albumentations transforms, applied in order (one ``A.Compose``).
        ignore_index: The label value for pixels without a class; the required mask fill value of
            every transform that fills (rotated / shifted-in areas).
        bands: Band count of the tiles; each transform is tried once on a blank tile of this many
            bands at construction. None skips the trial.

    Raises:
        AugmentConfigError: A mask interpolation other than nearest, a mask fill other than
            ``ignore_index``, or a transform that fails on ``bands``-band tiles.
    """

    def __init__(
        self, transforms: Sequence[A.BasicTransform], ignore_index: int = 255, bands: int | None = 4
    ) -> None:
        self.ignore_index = int(ignore_index)
        self.transforms = list(transforms)
        for t in _leaves(self.transforms):
            self._check_mask_handling(t)
        self.pipeline = A.Compose(self.transforms, p=1.0)
        if bands is not None:
            self._trial(int(bands))

    def _check_mask_handling(self, t: A.BasicTransform) -> None:
        name = type(t).__name__
        interpolation = getattr(t, "mask_interpolation", cv2.INTER_NEAREST)
        if interpolation != cv2.INTER_NEAREST:
            raise AugmentConfigError(
                f"train_augment: {name} has mask_interpolation={interpolation}, which blends class "
                f"indices; set mask_interpolation: 0 (cv2.INTER_NEAREST)"
            )
        fill = getattr(t, "fill_mask", None)
        fills = getattr(t, "border_mode", cv2.BORDER_CONSTANT) == cv2.BORDER_CONSTANT
        if fills and fill is not None and np.any(np.asarray(fill) != self.ignore_index):
            raise AugmentConfigError(
                f"train_augment: {name} fills the mask with {fill}, which would label areas from "
                f"outside the tile as a class; set fill_mask: ${{data.ignore_index}} "
                f"(= {self.ignore_index})"
            )

    def _trial(self, bands: int) -> None:
        rng = np.random.default_rng(0)
        image = rng.random((32, 32, bands), dtype=np.float32)
        mask = np.zeros((32, 32), dtype=_mask_dtype(0, max(self.ignore_index, 0)))
        for t in _leaves(self.transforms):
            t.set_random_state(np.random.default_rng(0), random.Random(0))
            try:
                t(image=image, mask=mask, force_apply=True)
            except (TypeError, ValueError) as err:
                hint = (
                    "; ops made for RGB act on the first three bands when wrapped as "
                    "{_target_: glcnet.data.seg_augment.RGBOnly, transform: {...}}"
                    if bands != 3 and not isinstance(t, RGBOnly)
                    else ""
                )
                raise AugmentConfigError(
                    f"train_augment: {type(t).__name__} fails on {bands}-band tiles "
                    f"({str(err).splitlines()[0]}){hint}"
                ) from None

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment one tile.

        Args:
            image: (C, H, W) float32 in [0, 1].
            mask: (H, W) integer class indices / ``ignore_index``.

        Returns:
            The augmented (image (C, H', W') float32, mask (H', W') of the input dtype); H', W'
            equal H, W unless the pipeline crops or resizes.
        """
        seed = int(torch.randint(0, 2**62, ()).item())
        self.pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
        hwc = np.ascontiguousarray(image.numpy().transpose(1, 2, 0))
        m = mask.numpy()
        low, high = (int(v) for v in (m.min(), m.max())) if m.size else (0, 0)
        dtype = _mask_dtype(min(low, self.ignore_index), max(high, self.ignore_index))
        out = self.pipeline(image=hwc, mask=m.astype(dtype, copy=False))
        img = torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1)))
        return img.to(image.dtype), torch.from_numpy(out["mask"].astype(m.dtype, copy=False))


def build_augment(cfg: Any) -> TileAugment | None:
    """Instantiate a ``train_augment`` config; its refusal surfaces as itself, not wrapped by Hydra.

    Args:
        cfg: A ``configs/train_augment/*.yaml`` node (or None: no augmentation).

    Raises:
        AugmentConfigError: See :class:`TileAugment`.
    """
    from hydra.errors import InstantiationException

    from glcnet.utils.config import instantiate

    try:
        return instantiate(cfg)
    except InstantiationException as err:
        if isinstance(err.__cause__, AugmentConfigError):
            raise err.__cause__ from None
        raise


class AugmentedTiles(Dataset):
    """Applies an (image, mask) augmentation to the items of a labeled tile data set.

    Args:
        tiles: Data set with ``image`` and ``mask`` items.
        augment: Callable ``augment(image, mask) -> (image, mask)`` (e.g. :class:`TileAugment`);
            None passes items through.
    """

    def __init__(
        self,
        tiles: Dataset,
        augment: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
    ) -> None:
        self.tiles = tiles
        self.augment = augment

    def __len__(self) -> int:
        return len(self.tiles)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.tiles[index])
        if self.augment is not None:
            item["image"], item["mask"] = self.augment(item["image"], item["mask"])
        return item
