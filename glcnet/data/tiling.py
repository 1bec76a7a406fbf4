"""Cutting whole scenes into tiles: the tile grid and a data set that reads tiles by windows.

The grid puts tiles every ``stride`` pixels from the top-left corner; the last tile of each row and
column is shifted to end exactly at the scene border, so the whole scene is covered, no tile is
dropped and edge tiles may overlap their neighbours. Tiles are read with rasterio windows; no scene
is ever loaded whole or pre-cut.
"""

from __future__ import annotations

import logging
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
from glcnet.data.masks import MaskSpec
from glcnet.data.nodata import NodataRule, nodata_rule, parse_setting, read_validity
from glcnet.data.raster import RasterCache, raster_info, read_window, to_unit_float

log = logging.getLogger(__name__)


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
    :attr:`palette`, :attr:`mask_spec` and :attr:`eroded`, implement :meth:`image_path` and
    :meth:`label_path`, then call :meth:`_index_scenes`.

    Plain-data attributes every data set has (what a checkpoint records, see :meth:`describe`):
    ``band_indexes`` (1-based, model order), ``band_names``, ``class_names`` (K names),
    ``palette`` (K RGB display colours), ``num_classes`` (K), ``ignore_index``, ``mask_spec``
    (:class:`~glcnet.data.masks.MaskSpec`; ``mask_spec.to_dict()``) and ``image_nodata``.

    Items are dicts:
        - ``image``: float32 tensor (C, T, T) in [0, 1] (integer pixels divided by their dtype's
          maximum, e.g. 255 for uint8; float pixels unchanged);
        - ``mask``: int64 tensor (T, T) of class indices / ``ignore_index`` (labeled mode only),
          decoded by :meth:`read_labels`, image nodata pixels ignored;
        - ``scene``: scene id (str);
        - ``window``: int64 tensor ``[row_off, col_off, height, width]`` in scene pixels.

    Tiles whose image pixels are all nodata are left out (counted in :attr:`nodata_tiles_dropped`
    and logged); this reads each tile's validity once when the data set is built, only for images
    that have nodata (see :mod:`glcnet.data.nodata`).

    Args:
        tile_size: Tile side T in pixels.
        stride: Distance between tiles (None: ``tile_size``).
        labeled: Read masks; False needs no label files at all.
        unknown_colors: ``"error"`` or ``"ignore"`` for label values outside the classes.
        ignore_index: Mask value of ignored pixels.
        image_nodata: ``"auto"``, ``"none"`` or a number (see :mod:`glcnet.data.nodata`).

    """

    band_indexes: tuple[int, ...] = ()
    band_names: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    mask_spec: MaskSpec
    eroded: bool = False

    def __init__(
        self,
        *,
        tile_size: int,
        stride: int | None,
        labeled: bool,
        unknown_colors: str,
        ignore_index: int,
        image_nodata: str | float | None = "none",
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
        self.image_nodata = parse_setting(image_nodata)
        self.scenes: list[str] = []
        self.tiles: list[tuple[str, int, int]] = []
        self.nodata_tiles_dropped = 0
        self._sizes: dict[str, tuple[int, int]] = {}
        self._nodata: dict[str, NodataRule | None] = {}
        self._cache = RasterCache()

    # --- to be provided by subclasses -------------------------------------------------------

    def image_path(self, scene: str) -> str:
        """Path of the image raster of ``scene`` (rasterio-openable)."""
        raise NotImplementedError

    def label_path(self, scene: str, eroded: bool | None = None) -> str:
        """Path of the label raster of ``scene`` (``eroded`` None: the data set's setting)."""
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

    def describe(self) -> dict:
        """What the data set reads and produces, as plain data (for checkpoints and reports).

        Returns:
            ``dataset`` (class name), ``band_indexes``, ``band_names``, ``num_classes``,
            ``class_names``, ``palette`` (display colours), ``ignore_index``, ``mask_spec``
            (:meth:`MaskSpec.to_dict`), ``image_nodata``, ``tile_size``, ``stride``, ``eroded``.

        """
        return {
            "dataset": type(self).__name__,
            "band_indexes": list(self.band_indexes),
            "band_names": list(self.band_names),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "palette": [list(c) for c in self.palette],
            "ignore_index": self.ignore_index,
            "mask_spec": self.mask_spec.to_dict(),
            "image_nodata": self.image_nodata,
            "tile_size": self.tile_size,
            "stride": self.stride,
            "eroded": self.eroded,
        }

    def scene_size(self, scene: str) -> tuple[int, int]:
        """``(height, width)`` of a scene in pixels."""
        if scene not in self._sizes:
            raise KeyError(f"unknown scene {scene!r}; this data set holds {self.scenes}")
        return self._sizes[scene]

    def nodata_rule(self, scene: str) -> NodataRule | None:
        """How the nodata pixels of ``scene``'s image are found (None: it has none)."""
        self.scene_size(scene)
        return self._nodata.get(scene)

    def _window(self, scene: str, window: Window | None) -> Window:
        if window is None:
            h, w = self.scene_size(scene)
            return Window(0, 0, w, h)
        return window

    def read_valid(self, scene: str, window: Window | None = None) -> np.ndarray | None:
        """Which pixels of a window of ``scene``'s image hold data.

        Args:
            scene: Scene id.
            window: Pixel window (None: the whole scene).

        Returns:
            (H, W) bool, True where the image holds data; None when the image has no nodata
            (every pixel valid), so callers can skip the work.

        """
        rule = self.nodata_rule(scene)
        if rule is None:
            return None
        path = self.image_path(scene)
        return read_validity(self._cache.get(path), rule, self._window(scene, window), path)

    def read_image(self, scene: str, window: Window | None = None) -> np.ndarray:
        """Raw pixels of the bands read (``band_indexes``), in the files' dtype.

        Args:
            scene: Scene id.
            window: Pixel window (None: the whole scene).

        Returns:
            (C, H, W) array; :func:`~glcnet.data.raster.to_unit_float` makes the model input.

        """
        path = self.image_path(scene)
        return read_window(
            self._cache.get(path), self.band_indexes, self._window(scene, window), path
        )

    def read_labels(
        self, scene: str, window: Window | None = None, eroded: bool | None = None
    ) -> np.ndarray:
        """Class indices of a window of ``scene``: the one label reader of training and evaluation.

        Args:
            scene: Scene id.
            window: Pixel window (None: the whole scene).
            eroded: Read the eroded labels (None: the data set's ``eroded`` setting).

        Returns:
            (H, W) int64 of ``0..K-1`` and ``ignore_index`` (image nodata pixels included).

        """
        eroded = self.eroded if eroded is None else bool(eroded)
        window = self._window(scene, window)
        path = self.label_path(scene, eroded=eroded)
        raw = read_window(self._cache.get(path), self.mask_spec.bands, window, path)
        labels = self.mask_spec.decode(raw, path, eroded=eroded)
        valid = self.read_valid(scene, window)
        if valid is not None:
            labels[~valid] = self.ignore_index
        return labels

    def _check_mask_file(self, scene: str, image_info, mask_path: str) -> None:
        """Header checks of one mask file: size, and the mask spec's band rules."""
        info = raster_info(mask_path)
        if (info.height, info.width) != (image_info.height, image_info.width):
            raise SizeMismatchError(
                f"scene {scene}: image {self.image_path(scene)} is {image_info.height}x"
                f"{image_info.width} px but its labels {mask_path} are {info.height}x{info.width} px"
            )

        def sample() -> np.ndarray:
            n = min(256, info.height), min(256, info.width)
            ds = self._cache.get(mask_path)
            return read_window(ds, (1, 2, 3), Window(0, 0, n[1], n[0]), mask_path)

        self.mask_spec.check_file(mask_path, info.count, info.has_colormap, sample)

    def _index_scenes(self, scenes: Sequence[str], what: str) -> None:
        """Check every scene's files (headers only) and lay out the tile grid.

        Images with nodata have every tile's validity read, and all-nodata tiles are left out.

        Args:
            scenes: Scene ids in order.
            what: Description of the selection for error messages (e.g. "Potsdam split 'val'").

        """
        if not scenes:
            raise EmptySplitError(f"{what} selects no scene")
        need = max(self.band_indexes)
        total = 0
        for scene in scenes:
            path = self.image_path(scene)
            info = raster_info(path)
            if info.count < need:
                raise BandCountError(
                    f"{path} has {info.count} band(s) but bands {self.band_indexes} "
                    f"({'/'.join(self.band_names)}) are to be read from it"
                )
            if self.labeled:
                self._check_mask_file(scene, info, self.label_path(scene))
            if info.height < self.tile_size or info.width < self.tile_size:
                raise SceneTooSmallError(
                    f"scene {scene} ({path}) is {info.height}x{info.width} px, smaller than "
                    f"tile_size={self.tile_size}"
                )
            self._sizes[scene] = (info.height, info.width)
            rule = nodata_rule(self._cache.get(path), self.band_indexes, self.image_nodata)
            self._nodata[scene] = rule
            grid = tile_grid(info.height, info.width, self.tile_size, self.stride)
            total += len(grid)
            if rule is not None:
                t = self.tile_size
                grid = [(r, c) for r, c in grid if self.read_valid(scene, Window(c, r, t, t)).any()]
            self.tiles.extend((scene, r, c) for r, c in grid)
        self.scenes = list(scenes)
        self.nodata_tiles_dropped = total - len(self.tiles)
        rules = {str(self._nodata[s].describe()) for s in scenes if self._nodata[s] is not None}
        if rules:
            log.info("%s: image nodata from %s", what, "; ".join(sorted(rules)))
        if self.nodata_tiles_dropped:
            log.info(
                "%s: left out %d of %d tiles that are entirely nodata",
                what,
                self.nodata_tiles_dropped,
                total,
            )
        if not self.tiles:
            raise EmptySplitError(
                f"{what}: every one of its {total} tiles is entirely nodata; check "
                f"data.dataset_kwargs.image_nodata"
            )

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> dict:
        if not -len(self.tiles) <= index < len(self.tiles):
            raise IndexError(f"tile index {index} out of range for {len(self.tiles)} tiles")
        scene, row, col = self.tiles[index]
        t = self.tile_size
        window = Window(col, row, t, t)
        image = self.read_image(scene, window)
        item = {
            "image": torch.from_numpy(to_unit_float(image)),
            "scene": scene,
            "window": torch.tensor([row, col, t, t], dtype=torch.int64),
        }
        if self.labeled:
            item["mask"] = torch.from_numpy(self.read_labels(scene, window))
        return item

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self.scenes)} scenes, {len(self.tiles)} tiles of "
            f"{self.tile_size} px, stride {self.stride}, bands {'/'.join(self.band_names)}, "
            f"labeled={self.labeled})"
        )
