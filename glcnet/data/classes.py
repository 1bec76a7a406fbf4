"""Classes: the six ISPRS classes and palette, generated names and display colours, palette codecs."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np

from glcnet.data.errors import UnknownColorError

#: Class names in index order (index 0..5), as used by Potsdam and Vaihingen.
ISPRS_CLASSES: tuple[str, ...] = (
    "impervious_surfaces",
    "building",
    "low_vegetation",
    "tree",
    "car",
    "clutter",
)

#: RGB colour of each class in the official colour-coded label files, in index order.
ISPRS_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 255, 255),
    (0, 0, 255),
    (0, 255, 255),
    (0, 255, 0),
    (255, 255, 0),
    (255, 0, 0),
)

#: Colour of the eroded class boundaries in the `noBoundary` label files (always ignored).
BOUNDARY_COLOR: tuple[int, int, int] = (0, 0, 0)

#: Default ignore index for pixels without a valid label.
IGNORE_INDEX: int = 255


__all__ = [
    "BOUNDARY_COLOR",
    "IGNORE_INDEX",
    "ISPRS_CLASSES",
    "ISPRS_PALETTE",
    "UnknownColorError",
    "decode_palette",
    "display_palette",
    "encode_palette",
    "generated_class_names",
]


def generated_class_names(num_classes: int) -> tuple[str, ...]:
    """Names for classes that have none: ``("class_0", "class_1", ...)``.

    Args:
        num_classes: Number of classes K (>= 1).

    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return tuple(f"class_{k}" for k in range(num_classes))


def display_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct RGB display colours for classes whose masks carry no colours (index/value masks).

    Two classes get black and white (the look of binary 0/255 masks); more classes get hues spread
    by the golden ratio (saturation 0.75, value 0.95), so neighbouring indices differ strongly and
    the colours of the first K classes do not change when K grows.

    Args:
        num_classes: Number of classes K (>= 1).

    Returns:
        K colours ``(r, g, b)`` in 0..255.

    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if num_classes == 2:
        return ((0, 0, 0), (255, 255, 255))
    colours = []
    for k in range(num_classes):
        r, g, b = colorsys.hsv_to_rgb((k * 0.6180339887) % 1.0, 0.75, 0.95)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return tuple(colours)


def decode_palette(
    rgb: np.ndarray,
    palette: Sequence[Sequence[int]] = ISPRS_PALETTE,
    *,
    ignore_colors: Sequence[Sequence[int]] = (),
    unknown: str = "error",
    ignore_index: int = IGNORE_INDEX,
    source: str = "<array>",
) -> np.ndarray:
    """Turn a colour-coded label image into class indices.

    Args:
        rgb: Label colours, shape (3, H, W), uint8 (band-first, as rasterio reads them).
        palette: RGB colour of each class, in class-index order.
        ignore_colors: Colours mapped to ``ignore_index`` (e.g. the black boundaries of eroded labels).
        unknown: What to do with a colour that is neither in ``palette`` nor in ``ignore_colors``:
            ``"error"`` raises :class:`UnknownColorError` naming ``source`` and the colour,
            ``"ignore"`` maps it to ``ignore_index``.
        ignore_index: Index written for ignored pixels.
        source: Name of the file the labels came from, used in error messages.

    Returns:
        Class indices, shape (H, W), int64.
    """
    if unknown not in ("error", "ignore"):
        raise ValueError(f"unknown must be 'error' or 'ignore', got {unknown!r}")
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[0] != 3:
        raise ValueError(
            f"{source}: expected a 3-band colour label image (3, H, W), got {arr.shape}"
        )
    arr = np.moveaxis(arr, 0, -1)
    arr = arr.astype(np.int64)
    codes = (arr[..., 0] << 16) | (arr[..., 1] << 8) | arr[..., 2]
    lookup = {((r << 16) | (g << 8) | b): i for i, (r, g, b) in enumerate(palette)}
    for r, g, b in ignore_colors:
        lookup[(r << 16) | (g << 8) | b] = ignore_index
    uniq, inverse = np.unique(codes, return_inverse=True)
    mapped = np.array([lookup.get(int(c), -1) for c in uniq], dtype=np.int64)
    out = mapped[inverse].reshape(codes.shape)
    bad = mapped < 0
    if bad.any():
        if unknown == "error":
            c = int(uniq[bad][0])
            color = ((c >> 16) & 255, (c >> 8) & 255, c & 255)
            count = int(np.isin(codes, uniq[bad]).sum())
            raise UnknownColorError(
                f"{source}: label colour {color} is not in the palette ({count} pixels with "
                f"{int(bad.sum())} unknown colour(s)); set unknown_colors='ignore' to map them to "
                f"ignore_index={ignore_index}"
            )
        out[out < 0] = ignore_index
    return out


def encode_palette(
    mask: np.ndarray, palette: Sequence[Sequence[int]] = ISPRS_PALETTE, ignore_color=(0, 0, 0)
) -> np.ndarray:
    """Turn class indices into a colour-coded label image.

    Args:
        mask: Class indices, shape (H, W); values outside the palette get ``ignore_color``.
        palette: RGB colour of each class.
        ignore_color: Colour for indices outside the palette.

    Returns:
        Colours, shape (3, H, W), uint8.
    """
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:] = ignore_color
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    m = np.asarray(mask)
    out = table[np.clip(m, 0, 255).astype(np.int64)]
    return np.moveaxis(out, -1, 0)
