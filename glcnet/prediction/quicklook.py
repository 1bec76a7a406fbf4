"""A small PNG of the input image and its prediction side by side.

Both rasters are read decimated (``out_shape``), so GDAL uses overviews where the file has them (the
prediction GeoTIFF always has) and otherwise reads only the sampled pixels of each block: the scene
is never held at full resolution. The image shows its first three model bands (one band: grey),
each stretched between its 2nd and 98th percentile over the pixels that hold a prediction; the
prediction shows the class palette, no-data pixels black.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.image import imsave
from rasterio.enums import Resampling

from glcnet.data.raster import open_raster

#: White gap between the two panels, in pixels.
GAP = 8


def quicklook_shape(height: int, width: int, max_size: int) -> tuple[int, int]:
    """Size of a panel: the scene shrunk so its longer side is at most ``max_size`` (never grown)."""
    factor = max(1.0, max(height, width) / max_size)
    return max(1, round(height / factor)), max(1, round(width / factor))


def stretch(bands: np.ndarray, valid: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """Percentile-stretch each band of (C, h, w) to [0, 1] over the ``valid`` (h, w) pixels."""
    out = np.zeros(bands.shape, dtype=np.float32)
    for i, band in enumerate(bands.astype(np.float64)):
        values = band[valid & np.isfinite(band)]
        if not values.size:
            continue
        lo, hi = np.percentile(values, percentiles)
        span = hi - lo if hi > lo else 1.0
        out[i] = np.clip((band - lo) / span, 0.0, 1.0)
    out[:, ~valid] = 0.0
    return out


def write_quicklook(
    image_path: str | Path,
    band_indexes: Sequence[int],
    class_path: str | Path,
    palette: Sequence[Sequence[int]],
    nodata: int,
    out_path: str | Path,
    max_size: int = 1024,
    percentiles: tuple[float, float] = (2.0, 98.0),
) -> Path:
    """Write ``<image | prediction>`` as one PNG.

    Args:
        image_path: The input image.
        band_indexes: Its model bands (the first three are shown).
        class_path: The prediction GeoTIFF (class indices) on the same grid.
        palette: RGB colour per class.
        nodata: Class raster value without a prediction.
        out_path: PNG to write.
        max_size: Longer side of each panel, in pixels.
        percentiles: Stretch limits of the image.

    Returns:
        The PNG path.
    """
    if max_size < 1:
        raise ValueError(f"quicklook_size must be >= 1, got {max_size}")
    with open_raster(str(image_path)) as src:
        h, w = quicklook_shape(src.height, src.width, max_size)
        shown = list(band_indexes)[:3]
        image = src.read(shown, out_shape=(len(shown), h, w), resampling=Resampling.nearest)
    with open_raster(str(class_path)) as cls:
        labels = cls.read(1, out_shape=(h, w), resampling=Resampling.nearest)
    valid = labels != nodata
    rgb = stretch(image, valid, percentiles)
    if rgb.shape[0] < 3:
        rgb = np.repeat(rgb[:1], 3, axis=0)
    table = np.zeros((256, 3), dtype=np.float32)
    table[: len(palette)] = np.asarray(palette, dtype=np.float32) / 255.0
    table[nodata] = 0.0
    pred = table[labels]
    canvas = np.ones((h, 2 * w + GAP, 3), dtype=np.float32)
    canvas[:, :w] = np.moveaxis(rgb, 0, -1)
    canvas[:, w + GAP :] = pred
    out = Path(out_path)
    imsave(out, canvas)
    return out
