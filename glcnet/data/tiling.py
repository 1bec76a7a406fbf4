"""Cutting whole scenes into tiles: the tile grid and a data set that reads tiles by windows.

The grid puts tiles every ``stride`` pixels from the top-left corner; the last tile of each row and
column is shifted to end exactly at the scene border, so the whole scene is covered, no tile is
dropped and edge tiles may overlap their neighbours. Tiles are read with rasterio windows; no scene
is ever loaded whole or pre-cut.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from rasterio.windows import Window
from torch.utils.data import Dataset

from glcnet.data.errors import (
    BandCountError,
    EmptySplitError,
    SceneTooSmallError,
    SizeMismatchError,
)
from glcnet.data.raster import RasterCache, raster_info, read_window, to_unit_float


def tile_offsets(length: int, tile: int, stride: int | None = None) -> list[int]:
    """Start offsets of the tiles along one axis.

    Args:
        length: Axis length in pixels (>= ``tile``).
        tile: Tile side in pixels.
        stride: Distance between tile starts (None: ``tile``). A stride larger than the tile
            leaves gaps between tiles (the last tile still ends at the border).

    Returns:
        Increasing offsets ``0, stride, 2*stride, ...`` plus, when the last of these does not end
        at ``length``, the shifted offset ``length - tile``.

    Raises:
        ValueError: Non-positive tile or stride, or ``length < tile``.

    """
    stride = tile if stride is None else stride
    if tile < 1 or stride < 1:
        raise ValueError(f"tile and stride must be >= 1, got tile={tile}, stride={stride}")
    if length < tile:
        raise ValueError(f"axis of {length} px is shorter than the tile ({tile} px)")
    offsets = list(range(0, length - tile + 1, stride))
    if offsets[-1] + tile < length:
        offsets.append(length - tile)
    return offsets


def tile_grid(
    height: int, width: int, tile: int, stride: int | None = None
) -> list[tuple[int, int]]:
    """Top-left corners ``(row_off, col_off)`` of the tiles of a scene, row by row.

    Args:
        height: Scene rows.
        width: Scene columns.
        tile: Tile side (square tiles).
        stride: Distance between tiles (None: ``tile``); see :func:`tile_offsets`.

    """
    rows = tile_offsets(height, tile, stride)
    cols = tile_offsets(width, tile, stride)
    return [(r, c) for r in rows for c in cols]


class SceneTileDataset(Dataset):
    """Base of the data sets whose items are square tiles cut from whole scenes.

    Subclasses set :attr:`band_indexes`, :attr:`band_names`, :attr:`class_names`,
    :attr:`palette` and implement :meth:`image_path`, :meth:`_mask_path` and :meth:`_decode_mask`,
    then call :meth:`_index_scenes`.

    Items are dicts:
        - ``image``: float32 tensor (C, T, T) in [0, 1] (integer pixels divided by their dtype's
          maximum, e.g. 255 for uint8; float pixels unchanged);
        - ``mask``: int64 tensor (T, T) of class indices / ``ignore_index`` (labeled mode only);
        - ``scene``: scene id (str);
        - ``window``: int64 tensor ``[row_off, col_off, height, width]`` in scene pixels.

    Args:
        tile_size: Tile side T in pixels.
        stride: Distance between tiles (None: ``tile_size``).
        labeled: Read masks; False needs no label files at all.
        unknown_colors: ``"error"`` or ``"ignore"`` for label values outside the classes.
        ignore_index: Mask value of ignored pixels.

    """

    band_indexes: tuple[int, ...] = ()
    band_names: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] | None = None
    _mask_bands: tuple[int, ...] = (1, 2, 3)

    def __init__(
        self,
        *,
        tile_size: int,
        stride: int | None,
        labeled: bool,
        unknown_colors: str,
        ignore_index: int,
    ) -> None:
        if int(tile_size) != tile_size or tile_size < 1:
            raise ValueError(f"tile_size must be a positive integer, got {tile_size!r}")
        if stride is not None and (int(stride) != stride or stride < 1):
            raise ValueError(f"stride must be a positive integer or None, got {stride!r}")
        if unknown_colors not in ("error", "ignore"):
            raise ValueError(f"unknown_colors must be 'error' or 'ignore', got {unknown_colors!r}")
        self.tile_size = int(tile_size)
        self.stride = self.tile_size if stride is None else int(stride)
        self.labeled = bool(labeled)
        self.unknown_colors = unknown_colors
        self.ignore_index = int(ignore_index)
        self.scenes: list[str] = []
        self.tiles: list[tuple[str, int, int]] = []
        self._sizes: dict[str, tuple[int, int]] = {}
        self._cache = RasterCache()

    # --- to be provided by subclasses -------------------------------------------------------

    def image_path(self, scene: str) -> str:
        """Path of the image raster of ``scene`` (rasterio-openable)."""
        raise NotImplementedError

    def _mask_path(self, scene: str) -> str:
        """Path of the label raster the masks are read from."""
        raise NotImplementedError

    def _decode_mask(self, raw: np.ndarray, path: str) -> np.ndarray:
        """Turn raw label bands (len(_mask_bands), h, w) into class indices (h, w) int64."""
        raise NotImplementedError

    # --- shared machinery -------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        """Number of image channels of each tile."""
        return len(self.band_indexes)

    def scene_size(self, scene: str) -> tuple[int, int]:
        """``(height, width)`` of a scene in pixels."""
        if scene not in self._sizes:
            raise KeyError(f"unknown scene {scene!r}; this data set holds {self.scenes}")
        return self._sizes[scene]

    def _index_scenes(self, scenes: Sequence[str], what: str) -> None:
        """Check every scene's files (headers only) and lay out the tile grid.

        Args:
            scenes: Scene ids in order.
            what: Description of the selection for error messages (e.g. "Potsdam split 'val'").

        """
        if not scenes:
            raise EmptySplitError(f"{what} selects no scene")
        need = max(self.band_indexes)
        for scene in scenes:
            path = self.image_path(scene)
            info = raster_info(path)
            if info.count < need:
                raise BandCountError(
                    f"{path} has {info.count} band(s) but bands {self.band_indexes} "
                    f"({'/'.join(self.band_names)}) are to be read from it"
                )
            if self.labeled:
                mpath = self._mask_path(scene)
                minfo = raster_info(mpath)
                if (minfo.height, minfo.width) != (info.height, info.width):
                    raise SizeMismatchError(
                        f"scene {scene}: image {path} is {info.height}x{info.width} px but its "
                        f"labels {mpath} are {minfo.height}x{minfo.width} px"
                    )
                if minfo.count < max(self._mask_bands):
                    raise BandCountError(
                        f"label raster {mpath} has {minfo.count} band(s), expected at least "
                        f"{max(self._mask_bands)}"
                    )
            if info.height < self.tile_size or info.width < self.tile_size:
                raise SceneTooSmallError(
                    f"scene {scene} ({path}) is {info.height}x{info.width} px, smaller than "
                    f"tile_size={self.tile_size}"
                )
            self._sizes[scene] = (info.height, info.width)
            grid = tile_grid(info.height, info.width, self.tile_size, self.stride)
            self.tiles.extend((scene, r, c) for r, c in grid)
        self.scenes = list(scenes)

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> dict:
        if not -len(self.tiles) <= index < len(self.tiles):
            raise IndexError(f"tile index {index} out of range for {len(self.tiles)} tiles")
        scene, row, col = self.tiles[index]
        t = self.tile_size
        window = Window(col, row, t, t)
        path = self.image_path(scene)
        image = read_window(self._cache.get(path), self.band_indexes, window, path)
        item = {
            "image": torch.from_numpy(to_unit_float(image)),
            "scene": scene,
            "window": torch.tensor([row, col, t, t], dtype=torch.int64),
        }
        if self.labeled:
            mpath = self._mask_path(scene)
            raw = read_window(self._cache.get(mpath), self._mask_bands, window, mpath)
            item["mask"] = torch.from_numpy(self._decode_mask(raw, mpath).astype(np.int64))
        return item

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self.scenes)} scenes, {len(self.tiles)} tiles of "
            f"{self.tile_size} px, stride {self.stride}, bands {'/'.join(self.band_names)}, "
            f"labeled={self.labeled})"
        )
