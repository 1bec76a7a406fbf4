"""Does an input image fit the model? Which of its bands to read and what to divide them by.

Training divides integer pixels by the maximum of their dtype (uint8 by 255, uint16 by 65535) and
uses float pixels as they are (:func:`glcnet.data.raster.to_unit_float`); prediction must do the
same, so an image whose values would mean something else to the model is refused rather than
guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio

from glcnet.prediction.errors import InputMismatchError
from glcnet.prediction.settings import PredictionSettings


@dataclass(frozen=True)
class InputFit:
    """How one input image is read for the model.

    Attributes:
        band_indexes: 1-based bands of the file, in model order.
        divisors: Per band read, what its values are divided by.
        dtype: The file's pixel type for those bands.
    """

    band_indexes: tuple[int, ...]
    divisors: tuple[float, ...]
    dtype: str


def _describe(settings: PredictionSettings) -> str:
    names = f" ({', '.join(settings.band_names)})" if settings.band_names else ""
    return f"{settings.in_channels} bands{names}"


def fit_input(
    ds: rasterio.io.DatasetReader, settings: PredictionSettings, scale: float | None = None
) -> InputFit:
    """Check that an input image fits the model and say how to read it.

    Args:
        ds: The open input image.
        settings: The model's data contract (with the user's ``bands=`` already applied).
        scale: The ``scale=`` setting: divide every band by this instead of the dtype maximum.

    Returns:
        The bands to read and their divisors.

    Raises:
        InputMismatchError: Too few bands, bands the checkpoint does not identify, mixed or
            unsupported pixel types, or a pixel type whose scaling differs from training.
    """
    name = ds.name
    if settings.band_indexes is None:
        if ds.count != settings.in_channels:
            raise InputMismatchError(
                f"{name} has {ds.count} bands, the model reads {_describe(settings)} and the "
                f"checkpoint does not say which bands of a file those are; set bands=[...] "
                f"(1-based, in model order, e.g. bands={list(range(1, settings.in_channels + 1))})"
            )
        bands = tuple(range(1, ds.count + 1))
    else:
        bands = settings.band_indexes
        if max(bands) > ds.count:
            raise InputMismatchError(
                f"{name} has {ds.count} bands but the model reads bands {list(bands)} "
                f"({_describe(settings)}); set bands=[...] to choose others"
            )
    dtypes = sorted({ds.dtypes[b - 1] for b in bands})
    if len(dtypes) > 1 and scale is None:
        raise InputMismatchError(
            f"{name}: the bands read have different pixel types {dtypes}; set scale=<divisor> "
            f"to divide them all by one value"
        )
    dtype = np.dtype(dtypes[0])
    if dtype.kind not in "uif":
        raise InputMismatchError(f"{name}: pixel type {dtype} cannot be fed to the model")
    if scale is not None:
        if not scale > 0:
            raise InputMismatchError(f"scale must be > 0, got {scale}")
        return InputFit(bands, (float(scale),) * len(bands), str(dtype))
    trained = settings.input_dtype
    if trained is not None:
        t = np.dtype(trained)
        same_meaning = t == dtype or (t.kind == "f" and dtype.kind == "f")
        if not same_meaning:
            t_max = settings.input_scale or (np.iinfo(t).max if t.kind in "ui" else None)
            how = f"divided by {t_max:g}" if t_max else "used as is"
            mine = f"divided by {np.iinfo(dtype).max}" if dtype.kind in "ui" else "used as is"
            raise InputMismatchError(
                f"{name} holds {dtype} pixels ({mine}) but the model was trained on {t} imagery "
                f"({how}), so its values would mean something else to the model; set "
                f"scale=<divisor> (e.g. scale={t_max or 1:g}) or "
                f"convert the image to {t}"
            )
    if settings.input_scale is not None:
        return InputFit(bands, (float(settings.input_scale),) * len(bands), str(dtype))
    divisor = float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0
    return InputFit(bands, (divisor,) * len(bands), str(dtype))
