"""GeoTIFFs on the grid of an input image, written column block by column block.

Pixels arrive as column blocks left to right (:func:`glcnet.prediction.streaming.column_blocks`),
each top to bottom in row ranges of any height; they are buffered until a full row of 256 x 256
tiles of the column block is there and written with one windowed write, so every compressed tile
is written once (column blocks start at multiples of 256, which ``block_width`` ensures). Finishing
either

- converts the file to a Cloud-Optimized GeoTIFF with GDAL's COG driver (``cog=True``): the rows
  go to a temporary tiled GeoTIFF next to the output, which the driver copies into 512 x 512
  tiles, overviews down to one tile, IFDs first and the smallest overview's data first
  (:func:`glcnet.prediction.cog_check.cog_layout_errors` checks that layout), or
- builds internal overviews in the tiled GeoTIFF itself (``cog=False``).

Memory: one row of tiles of a column block, ``count * 256 * block_width`` bytes, plus GDAL's block
cache.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

#: Tile side of the streamed GeoTIFF.
BLOCK = 256
#: Tile side of the Cloud-Optimized GeoTIFF (GDAL's COG default).
COG_BLOCK = 512


def overview_factors(height: int, width: int, smallest: int = BLOCK) -> list[int]:
    """Overview decimation factors 2, 4, 8, ... until the overview fits in ``smallest`` pixels."""
    factors, f = [], 2
    while max(height, width) / (f // 2) > smallest:
        factors.append(f)
        f *= 2
    return factors


class StreamingGeoTIFF:
    """A uint8 GeoTIFF written in column blocks, finished as a COG or a tiled GeoTIFF with overviews.

    Use as a context manager; an exception inside the block removes the partial output.

    Args:
        path: Output file.
        grid: The input image whose CRS, transform and size the output takes.
        count: Number of bands.
        nodata: Nodata value of every band, or None.
        colormap: Colour table of band 1, value -> RGBA.
        tags: Dataset metadata.
        band_tags: Metadata of band 1.
        descriptions: One description per band.
        with_mask: Write an internal per-dataset mask (0 where a block's ``valid`` is False).
        scale: GDAL scale of every band (value x scale = physical value), or None.
        cog: Finish as a Cloud-Optimized GeoTIFF.
        resampling: Overview resampling (``nearest`` for classes, ``average`` for probabilities).
    """

    def __init__(
        self,
        path: str | Path,
        grid: rasterio.io.DatasetReader,
        count: int,
        nodata: int | None = None,
        colormap: Mapping[int, tuple[int, int, int, int]] | None = None,
        tags: Mapping[str, str] | None = None,
        band_tags: Mapping[str, str] | None = None,
        descriptions: Sequence[str] | None = None,
        with_mask: bool = False,
        scale: float | None = None,
        cog: bool = True,
        resampling: str = "nearest",
    ) -> None:
        self.path = Path(path)
        self.cog = cog
        self.resampling = resampling
        self.with_mask = with_mask
        self.height, self.width, self.count = grid.height, grid.width, count
        self.written_path = self.path.with_name(self.path.stem + ".part.tif") if cog else self.path
        profile = {
            "driver": "GTiff",
            "height": grid.height,
            "width": grid.width,
            "count": count,
            "dtype": "uint8",
            "crs": grid.crs,
            "transform": grid.transform,
            "nodata": nodata,
            "tiled": True,
            "blockxsize": BLOCK,
            "blockysize": BLOCK,
            "compress": "deflate",
            "bigtiff": "if_safer",
        }
        if grid.crs is None:
            profile.pop("crs")
            if grid.transform == Affine.identity():  # not georeferenced: keep it that way
                profile.pop("transform")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():  # an input without georeference gives an output without
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self.dst = rasterio.open(self.written_path, "w", **profile)
        if colormap is not None:
            self.dst.write_colormap(1, dict(colormap))
        if tags:
            self.dst.update_tags(**tags)
        if band_tags:
            self.dst.update_tags(1, **band_tags)
        for i, text in enumerate(descriptions or ()):
            self.dst.set_band_description(i + 1, text)
        if scale is not None:
            self.dst.scales = (scale,) * count
        self.rows = np.zeros((count, 0, 0), dtype=np.uint8)
        self.mask = np.zeros((0, 0), dtype=bool)
        self.col = 0  # first column of the column block being received
        self.cols_done = 0  # columns [0, cols_done) are complete
        self.next_row = self.height  # first row not yet received (no column block open yet)
        self.buffer_top = self.height  # scene row of self.rows[:, 0]

    def write(self, row: int, col: int, data: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add the next pixels: rows ``[row, row + n)`` of the columns ``[col, col + w)``.

        Args:
            row: Scene row of ``data[:, 0]``; must follow the rows written so far in this column
                block (0 for a new block).
            col: Scene column of ``data[:, :, 0]``: the current column block's, or, once that is
                complete, the next one's (which starts where the previous one ended).
            data: (count, n, w) uint8.
            valid: (n, w) bool, for the internal mask; None: all valid.
        """
        n, w = data.shape[1:]
        if self.next_row == self.height and col == self.cols_done and row == 0:  # a new block
            self.col, self.next_row, self.buffer_top = col, 0, 0
            if self.rows.shape[2] != w:
                self.rows = np.zeros((self.count, BLOCK, w), dtype=np.uint8)
                self.mask = np.zeros((BLOCK, w), dtype=bool)
        if col != self.col or row != self.next_row or w != self.rows.shape[2]:
            raise ValueError(
                f"{self.path}: blocks must come column block by column block, each top to bottom: "
                f"expected rows from {self.next_row} of columns {self.col}..+{self.rows.shape[2]}"
                f", got rows from {row} of columns {col}..+{w}"
            )
        done = 0
        while done < n:
            at = self.next_row - self.buffer_top
            take = min(n - done, BLOCK - at)
            self.rows[:, at : at + take] = data[:, done : done + take]
            self.mask[at : at + take] = True if valid is None else valid[done : done + take]
            self.next_row += take
            done += take
            if self.next_row - self.buffer_top == BLOCK or self.next_row == self.height:
                self._flush()
        if self.next_row == self.height:
            self.cols_done = self.col + w

    def _flush(self) -> None:
        n, w = self.next_row - self.buffer_top, self.rows.shape[2]
        window = Window(self.col, self.buffer_top, w, n)
        self.dst.write(self.rows[:, :n], window=window)
        if self.with_mask:
            self.dst.write_mask(self.mask[:n], window=window)
        self.buffer_top = self.next_row

    def close(self) -> Path:
        """Finish the file (overviews, COG layout) and return its path."""
        if self.cols_done != self.width:
            raise ValueError(
                f"{self.path}: {self.cols_done} of {self.width} columns written completely"
            )
        factors = overview_factors(self.height, self.width)
        if not self.cog:
            if factors:
                self.dst.build_overviews(factors, Resampling[self.resampling])
                self.dst.update_tags(ns="rio_overview", resampling=self.resampling)
            self.dst.close()
            return self.path
        self.dst.close()
        try:
            rasterio.shutil.copy(
                self.written_path,
                self.path,
                driver="COG",
                compress="deflate",
                predictor="YES" if self.count > 1 else "NO",
                blocksize=str(COG_BLOCK),
                overviews="auto",
                resampling=self.resampling,
                bigtiff="if_safer",
            )
        finally:
            os.remove(self.written_path)
        return self.path

    def abort(self) -> None:
        """Close and delete what was written."""
        if not self.dst.closed:
            self.dst.close()
        for p in {self.written_path, self.path}:
            if p.exists():
                p.unlink()

    def __enter__(self) -> StreamingGeoTIFF:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def class_raster(
    path: str | Path,
    grid: rasterio.io.DatasetReader,
    class_names: Sequence[str],
    palette: Sequence[Sequence[int]],
    nodata: int,
    cog: bool = True,
    tags: Mapping[str, str] | None = None,
) -> StreamingGeoTIFF:
    """The class-index GeoTIFF: 1 band uint8, colour table, class names, nodata.

    The colour table maps class ``i`` to ``palette[i]`` and ``nodata`` to transparent, so GIS
    software (QGIS: "Paletted/Unique values") shows the classes in colour without styling. Class
    names are stored as dataset tags (``CLASS_NAMES``, a JSON list, and ``CLASS_<i>``), band tags
    and the band description.

    Args:
        path: Output file.
        grid: The input image (CRS, transform, size).
        class_names: K names.
        palette: K RGB colours.
        nodata: Value of pixels without a prediction (not a class index).
        cog: Finish as a Cloud-Optimized GeoTIFF.
        tags: Extra dataset tags (e.g. the source image and checkpoint).
    """
    colormap = {i: (*map(int, rgb), 255) for i, rgb in enumerate(palette)}
    colormap[nodata] = (0, 0, 0, 0)
    names = {f"CLASS_{i}": name for i, name in enumerate(class_names)}
    legend = ", ".join(f"{i}={name}" for i, name in enumerate(class_names))
    return StreamingGeoTIFF(
        path,
        grid,
        count=1,
        nodata=nodata,
        colormap=colormap,
        tags={"CLASS_NAMES": json.dumps(list(class_names)), **names, **(tags or {})},
        band_tags=names,
        descriptions=[f"class ({legend}; {nodata}=nodata)"],
        cog=cog,
        resampling="nearest",
    )


def probability_raster(
    path: str | Path,
    grid: rasterio.io.DatasetReader,
    class_names: Sequence[str],
    cog: bool = True,
    tags: Mapping[str, str] | None = None,
) -> StreamingGeoTIFF:
    """The per-class probability GeoTIFF: K bands uint8, ``round(255 * p)``, named by class.

    Pixels without a prediction are 0 in every band and masked out by an internal mask. The bands'
    GDAL scale is 1/255, so software that applies it reads probabilities in [0, 1].

    Args:
        path: Output file.
        grid: The input image (CRS, transform, size).
        class_names: K names (band descriptions).
        cog: Finish as a Cloud-Optimized GeoTIFF.
        tags: Extra dataset tags.
    """
    return StreamingGeoTIFF(
        path,
        grid,
        count=len(class_names),
        tags={"CLASS_NAMES": json.dumps(list(class_names)), **(tags or {})},
        descriptions=[f"p({name}) x 255" for name in class_names],
        with_mask=True,
        scale=1 / 255,
        cog=cog,
        resampling="average",
    )


def to_uint8_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] as uint8 ``round(255 * p)`` (same shape)."""
    scaled = probabilities * np.float32(255.0)  # one float temporary, rounded in place
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)
