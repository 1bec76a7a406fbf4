"""Which pixels of an input image hold data, window by window.

The first rule that applies decides, once per file:

1. ``nodata=`` given in the predict config: a pixel is no data where every band read equals it.
2. The file declares a per-dataset mask (an internal or ``.msk`` mask band, or an alpha band that
   is *not* among the bands read): GDAL's mask of the window (``read_masks``). An alpha-tagged band
   that the model reads as data (the IR band of some ISPRS RGBIR files) is never used as a mask.
3. The file declares a nodata value for some band read: a pixel is no data where every band read
   equals its band's nodata value (a band without one always counts as data), as GDAL's dataset
   mask does.
4. Otherwise every pixel is data; masks are not read at all.

Non-finite values (NaN, inf) of float images are no data under every rule: no model can use them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.windows import Window

log = logging.getLogger(__name__)

#: The rules of the module docstring, by name.
VALIDITY_RULES = ("override", "mask", "nodata", "none")


class ValidityReader:
    """Reads the data/no-data state of an input image's pixels, window by window.

    Args:
        ds: The open input image.
        band_indexes: 1-based bands the model reads, in model order.
        nodata: The ``nodata=`` override of the predict config, or None.

    Attributes:
        rule: Which rule of the module docstring applies (one of :data:`VALIDITY_RULES`).
        description: The rule in words, with the values found (for logs).
    """

    def __init__(
        self,
        ds: rasterio.io.DatasetReader,
        band_indexes: Sequence[int],
        nodata: float | None = None,
    ) -> None:
        self.ds = ds
        self.bands = [int(b) for b in band_indexes]
        self.is_float = any(np.dtype(ds.dtypes[b - 1]).kind == "f" for b in self.bands)
        self.nodata_values: list[float | None] = []
        name = ds.name
        alpha = [i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha]
        read_alpha = [b for b in alpha if b in self.bands]
        if read_alpha:
            log.warning(
                "%s: band %s is tagged alpha but the model reads it as data (bands %s); it is "
                "not used as a mask",
                name,
                read_alpha,
                self.bands,
            )
        flags = ds.mask_flag_enums[self.bands[0] - 1]
        per_dataset = MaskFlags.per_dataset in flags
        mask_is_read_alpha = MaskFlags.alpha in flags and bool(read_alpha)
        declared = [ds.nodatavals[b - 1] for b in self.bands]
        if nodata is not None:
            self.rule = "override"
            self.nodata_values = [float(nodata)] * len(self.bands)
            self.description = f"nodata={nodata} (predict setting): all bands equal to it"
        elif per_dataset and not mask_is_read_alpha:
            self.rule = "mask"
            kind = "alpha band" if MaskFlags.alpha in flags else "mask band"
            self.description = f"the file's {kind}"
        elif any(v is not None for v in declared):
            self.rule = "nodata"
            self.nodata_values = declared
            self.description = f"the file's nodata values {declared}"
        else:
            self.rule = "none"
            self.description = "no nodata value or mask declared: every pixel is data"
        if self.is_float:
            self.description += "; non-finite values are no data"

    @property
    def needs_pixels(self) -> bool:
        """Whether :meth:`valid` needs the window's pixel values (value rules, float images)."""
        return self.rule in ("override", "nodata") or self.is_float

    def valid(self, window: Window, pixels: np.ndarray | None = None) -> np.ndarray | None:
        """Data pixels of one window.

        Args:
            window: The window.
            pixels: The bands read in this window, (C, h, w) in the file's dtype; needed when
                :attr:`needs_pixels`.

        Returns:
            (h, w) bool, True where the pixel holds data; None when every pixel of the file does.
        """
        valid = None
        if self.rule == "mask":
            valid = self.ds.read_masks(self.bands[0], window=window) > 0
        elif self.rule in ("override", "nodata"):
            nodata = np.ones(pixels.shape[1:], dtype=bool)
            for band, value in zip(pixels, self.nodata_values):
                if value is None:
                    nodata[:] = False
                    break
                nodata &= (band != band) if math.isnan(value) else band == value  # NaN != NaN
            valid = ~nodata
        if self.is_float:
            finite = np.isfinite(pixels).all(axis=0)
            valid = finite if valid is None else valid & finite
        return valid
