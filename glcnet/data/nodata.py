"""Image nodata: which pixels of a scene hold no data, read window by window.

An image says where it has no data in one of three ways (GDAL's), found from its header:

- a **nodata value** per band: a pixel is nodata where *every* band read equals its band's
  nodata value (a dark pixel with one band at 0 stays valid);
- an **alpha band** that is *not among the bands read*: alpha 0 is nodata. An alpha band that is
  read (the IR band of ISPRS RGBIR files is often tagged alpha) is data and says nothing about
  validity. An alpha band must hold only 0 and its dtype's maximum; other values mean it is data
  tagged alpha, which is an error naming the file and the setting that fixes it;
- an **internal mask band** (``.msk`` or GDAL internal mask): 0 is nodata.

``image_nodata`` chooses: ``"auto"`` (the file's own, as above), ``"none"`` (every pixel valid;
ISPRS and the sample set have no nodata) or a number (pixels where every band read equals it are
nodata, e.g. ``255`` for the white fill of Massachusetts images).

These are the rules of training, evaluation and prediction alike: the data sets call
:func:`nodata_rule` and :func:`read_validity` with ``data.dataset_kwargs.image_nodata``, and
``scripts/predict.py`` calls them with its ``image_nodata=`` setting (``setting_name`` makes the
messages name the setting of the command at hand).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.windows import Window

from glcnet.data.errors import NodataError
from glcnet.data.raster import read_window

#: The setting the messages name unless a caller says otherwise (the data sets').
DATA_SETTING = "data.dataset_kwargs.image_nodata"


@dataclass(frozen=True)
class NodataRule:
    """How one image's nodata pixels are found.

    Attributes:
        kind: ``value``, ``alpha`` or ``mask``.
        values: ``value``: the nodata value of each band in ``bands``.
        bands: 1-based bands compared (``value``), the alpha band (``alpha``) or the band whose
            mask is read (``mask``).

    """

    kind: str
    bands: tuple[int, ...]
    values: tuple[float, ...] = ()

    def describe(self) -> str:
        """One line, e.g. ``nodata value 0 in bands 1, 2, 3``."""
        bands = ", ".join(str(b) for b in self.bands)
        if self.kind == "value":
            vals = sorted({_num(v) for v in self.values}, key=str)
            return f"nodata value {vals[0] if len(vals) == 1 else vals} in bands {bands}"
        if self.kind == "alpha":
            return f"alpha band {bands} (not read as data): alpha 0 is nodata"
        return "internal mask band: 0 is nodata"


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() else v


def parse_setting(
    setting: str | float | int | None, setting_name: str = DATA_SETTING
) -> str | float:
    """Check ``image_nodata``: ``"auto"``, ``"none"`` or a number (returned as float).

    Args:
        setting: The value given (None means ``"none"``).
        setting_name: The setting, for the message.

    Raises:
        NodataError: Anything else.
    """
    if setting is None:
        return "none"
    if isinstance(setting, str):
        if setting.lower() in ("auto", "none"):
            return setting.lower()
        try:
            return float(setting)
        except ValueError:
            pass
    elif isinstance(setting, int | float) and not isinstance(setting, bool):
        return float(setting)
    raise NodataError(f"{setting_name} must be auto, none or a number, got {setting!r}")


def nodata_rule(
    ds: rasterio.io.DatasetReader,
    bands: Sequence[int],
    setting: str | float,
    setting_name: str = DATA_SETTING,
) -> NodataRule | None:
    """The nodata rule of an open image, or None when every pixel is valid.

    Args:
        ds: The open image.
        bands: 1-based bands read as data.
        setting: Parsed ``image_nodata`` (see :func:`parse_setting`).
        setting_name: The setting, for messages.

    Raises:
        NodataError: Some bands read declare a nodata value and others do not.
    """
    bands = tuple(int(b) for b in bands)
    if setting == "none":
        return None
    if not isinstance(setting, str):
        return NodataRule("value", bands, tuple(float(setting) for _ in bands))
    nodata = [ds.nodatavals[b - 1] for b in bands]
    if any(v is not None for v in nodata):
        if any(v is None for v in nodata):
            missing = [b for b, v in zip(bands, nodata, strict=True) if v is None]
            raise NodataError(
                f"{ds.name}: bands {missing} have no nodata value while the other bands read do; "
                f"set {setting_name} to a number or to none"
            )
        return NodataRule("value", bands, tuple(float(v) for v in nodata))
    alpha = [i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha]
    unread = [b for b in alpha if b not in bands]
    if unread:
        return NodataRule("alpha", (unread[0],))
    flags = ds.mask_flag_enums[bands[0] - 1]
    if MaskFlags.per_dataset in flags and not ({MaskFlags.alpha, MaskFlags.nodata} & set(flags)):
        return NodataRule("mask", (bands[0],))
    return None


def alpha_bands_read(ds: rasterio.io.DatasetReader, bands: Sequence[int]) -> list[int]:
    """Bands tagged alpha that are read as data (so never used as a mask), e.g. ISPRS IR bands."""
    return [
        i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha and i + 1 in bands
    ]


def read_validity(
    ds: rasterio.io.DatasetReader,
    rule: NodataRule,
    window: Window,
    path: str,
    pixels: np.ndarray | None = None,
    setting_name: str = DATA_SETTING,
) -> np.ndarray:
    """Valid pixels of one window of an image.

    Args:
        ds: The open image.
        rule: Its :class:`NodataRule`.
        window: Pixel window.
        path: File name for messages.
        pixels: ``rule.bands`` of this window, (C, h, w), when the caller has read them already
            (``value`` rules compare them instead of reading them again).
        setting_name: The setting, for messages.

    Returns:
        (h, w) bool, True where the image holds data.

    Raises:
        NodataError: The alpha band holds values other than 0 and its maximum.

    """
    if rule.kind == "value":
        data = read_window(ds, rule.bands, window, path) if pixels is None else pixels
        nodata = np.ones(data.shape[1:], dtype=bool)
        for band, value in zip(data, rule.values, strict=True):
            nodata &= np.isnan(band) if np.isnan(value) else band == value
        return ~nodata
    if rule.kind == "alpha":
        alpha = read_window(ds, rule.bands, window, path)[0]
        top = np.iinfo(alpha.dtype).max if np.issubdtype(alpha.dtype, np.integer) else 1.0
        odd = np.unique(alpha[(alpha != 0) & (alpha != top)])
        if odd.size:
            raise NodataError(
                f"{path}: band {rule.bands[0]} is tagged alpha but holds values other than 0 and "
                f"{_num(top)} (e.g. {[_num(v) for v in odd[:5].tolist()]}), so it looks like data "
                f"(an IR band tagged alpha?), not transparency; read it as a band or set "
                f"{setting_name}=none"
            )
        return alpha != 0
    return ds.read_masks(rule.bands[0], window=window) != 0


__all__ = [
    "DATA_SETTING",
    "NodataRule",
    "alpha_bands_read",
    "nodata_rule",
    "parse_setting",
    "read_validity",
]
