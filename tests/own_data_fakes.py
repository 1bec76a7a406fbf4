"""Tiny folder data sets in the mask conventions users bring, with class pixel counts known.

Each convention writes ``root/{train,val,test}/{images,masks}/`` with two 64 x 64 scenes per split.
The class of pixel ``(r, c)`` of scene ``s`` is ``(r // 8 + 2 * (c // 16) + s) mod K`` except for a
few ignored pixels, so every class occurs in every split and the counts are known without decoding:
:meth:`Convention.counts` computes them from the same arrays the masks were encoded from.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

SIZE = 64
SPLITS = ("train", "val", "test")
SCENES_PER_SPLIT = 2
IGNORED = -1  # class-array value of pixels that must come out as ignore_index


@dataclass
class Convention:
    """One way of encoding masks, and the settings that read it.

    Attributes:
        name: Convention name.
        num_classes: K.
        overrides: The ``data.*`` command-line overrides that read it (besides root and K).
        suffix: File suffix of the masks.

    """

    name: str
    num_classes: int
    overrides: list[str] = field(default_factory=list)
    suffix: str = ".tif"

    def classes(self, split: str, scene: int) -> np.ndarray:
        """(H, W) int64 class per pixel, ``IGNORED`` where the mask says "ignore"/"no data"."""
        r, c = np.mgrid[0:SIZE, 0:SIZE]
        seed = SPLITS.index(split) * SCENES_PER_SPLIT + scene
        k = (r // 8 + 2 * (c // 16) + seed) % self.num_classes
        if self.name in ("index", "nodata0"):
            k[(r % 16 == 3) & (c < 10 + seed)] = IGNORED
        return k.astype(np.int64)

    def counts(self, split: str) -> np.ndarray:
        """(K,) class pixel counts of a split (ignored pixels not counted)."""
        total = np.zeros(self.num_classes, dtype=np.int64)
        for s in range(SCENES_PER_SPLIT):
            k = self.classes(split, s)
            total += np.bincount(k[k >= 0], minlength=self.num_classes)
        return total

    def encode(self, k: np.ndarray) -> tuple[np.ndarray, dict | None]:
        """Mask bands (C, H, W) of a class array and a colour table (or None)."""
        if self.name == "rgb":
            return np.moveaxis(np.asarray(RGB_PALETTE, np.uint8)[k], -1, 0).copy(), None
        if self.name == "index":
            return np.where(k == IGNORED, 255, k).astype(np.uint8)[None], None
        if self.name == "paletted":
            table = {i: (*colour, 255) for i, colour in enumerate(PALETTED_COLOURS)}
            return k.astype(np.uint8)[None], table
        if self.name == "binary":
            return (k * 255).astype(np.uint8)[None], None
        if self.name == "nodata0":  # LoveDA: 0 = no data, classes stored as 1..K
            return np.where(k == IGNORED, 0, k + 1).astype(np.uint8)[None], None
        raise ValueError(self.name)


RGB_PALETTE = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]
PALETTED_COLOURS = [(10, 20, 30), (200, 0, 0), (0, 200, 100)]

CONVENTIONS = {
    "rgb": Convention("rgb", 4, [f"data.dataset_kwargs.palette={RGB_PALETTE}".replace(" ", "")]),
    "index": Convention("index", 3),
    "paletted": Convention("paletted", 3, suffix=".png"),
    "binary": Convention("binary", 2, ["data.dataset_kwargs.palette=[0,255]"], suffix=".png"),
    "nodata0": Convention(
        "nodata0",
        3,
        ["data.dataset_kwargs.palette=[1,2,3]", "data.dataset_kwargs.ignore_values=[0]"],
    ),
}


def write_raster(path: Path, data: np.ndarray, colormap: dict | None = None, **profile) -> Path:
    """Write (C, H, W) as GeoTIFF (georeferenced) or PNG, with an optional colour table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    png = path.suffix == ".png"
    geo = {} if png else {"crs": "EPSG:32633", "transform": Affine(0.5, 0, 1e5, 0, -0.5, 5e6)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path,
            "w",
            driver="PNG" if png else "GTiff",
            width=data.shape[2],
            height=data.shape[1],
            count=data.shape[0],
            dtype=data.dtype.name,
            **geo,
            **profile,
        ) as dst:
            dst.write(data)
            if colormap is not None:
                dst.write_colormap(1, colormap)
    return path


def scene_image(k: np.ndarray, seed: int) -> np.ndarray:
    """A 3-band uint8 image whose colour follows the classes (learnable) plus texture."""
    r, c = np.mgrid[0:SIZE, 0:SIZE]
    base = np.where(k < 0, 0, k)[None] * np.array([60, 25, 90])[:, None, None]
    texture = (r * 3 + c * 5 + seed * 11)[None] % 40
    return (20 + base + texture).clip(0, 255).astype(np.uint8)


def make_convention_root(root: Path, name: str) -> Convention:
    """Write the folder data set of one convention; returns the convention."""
    conv = CONVENTIONS[name]
    for split in SPLITS:
        for s in range(SCENES_PER_SPLIT):
            k = conv.classes(split, s)
            stem = f"{split}_{s}"
            write_raster(root / split / "images" / f"{stem}.tif", scene_image(k, s))
            mask, table = conv.encode(k)
            write_raster(root / split / "masks" / f"{stem}{conv.suffix}", mask, table)
    return conv


#: Scene sizes of the README fixture: 12 training tiles of 256 px, one tile per val/test scene.
README_SCENES = {"train": [(512, 768), (512, 768)], "val": [(256, 256)], "test": [(256, 256)]}


def make_readme_root(root: Path) -> dict[str, np.ndarray]:
    """The README's own-data example: RGB colour masks of four classes (:data:`RGB_PALETTE`).

    Returns:
        Split -> (4,) class pixel counts.

    """
    counts = {}
    for split, sizes in README_SCENES.items():
        counts[split] = np.zeros(len(RGB_PALETTE), dtype=np.int64)
        for s, (h, w) in enumerate(sizes):
            r, c = np.mgrid[0:h, 0:w]
            k = (r // 24 + c // 40 + s) % len(RGB_PALETTE)
            image = 30 + 50 * k[None] * np.array([1, 2, 3])[:, None, None] % 200 + (r + c) % 17
            write_raster(root / split / "images" / f"{split}{s}.tif", image.astype(np.uint8))
            mask = np.moveaxis(np.asarray(RGB_PALETTE, np.uint8)[k], -1, 0).copy()
            write_raster(root / split / "masks" / f"{split}{s}.png", mask)
            counts[split] += np.bincount(k.ravel(), minlength=len(RGB_PALETTE))
    return counts


__all__ = [
    "CONVENTIONS",
    "RGB_PALETTE",
    "SIZE",
    "Convention",
    "make_convention_root",
    "make_readme_root",
    "write_raster",
]
