"""What a trained model expects from new imagery: bands, scaling, tile size, classes and colours."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass, replace

#: Output value of pixels without a prediction (no-data input); must not be a class index.
DEFAULT_OUTPUT_NODATA = 255


def default_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """Distinct display colours for classes that come without a palette.

    Hues advance by the golden angle, so neighbouring class indexes get well separated colours.

    Args:
        num_classes: Number of classes K.

    Returns:
        K RGB triples in [0, 255].
    """
    colours = []
    for k in range(num_classes):
        hue = (k * 0.381966) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95 if k % 2 == 0 else 0.7)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return tuple(colours)


@dataclass(frozen=True)
class PredictionSettings:
    """The data contract of a trained segmentation model, as prediction needs it.

    Attributes:
        num_classes: Number of classes K the model predicts.
        class_names: K class names, in index order.
        palette: K RGB display colours, in index order.
        tile_size: Side of the windows the model was trained on (pixels).
        in_channels: Number of input bands the model takes.
        band_indexes: 1-based bands of an input file, in model order (the bands the training
            data read from its files). None: unknown; an input must then have exactly
            ``in_channels`` bands, read in file order, unless ``bands=`` is given.
        band_names: Names of the model's input bands (for messages), or None.
        input_dtype: Pixel type of the training imagery (e.g. ``uint8``), or None when unknown.
            Integer input is divided by the maximum of its dtype, float input used as is, so a
            different integer type would change the meaning of the values.
        input_scale: Divisor the training imagery was scaled by, or None for the dtype maximum.
        ignore_index: Label value ignored in training (not a class).
        mask_spec: How the training masks encoded the classes
            (:meth:`glcnet.data.masks.MaskSpec.to_dict`), or None; written into the outputs' tags.
        image_nodata: The training data's ``image_nodata`` setting (``auto``, ``none`` or a
            number), or None when the checkpoint does not say.
        source: Where these settings were read from (for messages).
    """

    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    tile_size: int
    in_channels: int
    band_indexes: tuple[int, ...] | None = None
    band_names: tuple[str, ...] | None = None
    input_dtype: str | None = None
    input_scale: float | None = None
    ignore_index: int = 255
    mask_spec: dict | None = None
    image_nodata: str | float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{len(self.class_names)} class names for {self.num_classes} classes: "
                f"{list(self.class_names)}"
            )
        if len(self.palette) != self.num_classes:
            raise ValueError(f"{len(self.palette)} palette colours for {self.num_classes} classes")
        if self.band_indexes is not None and len(self.band_indexes) != self.in_channels:
            raise ValueError(
                f"{len(self.band_indexes)} band indexes {list(self.band_indexes)} for a model with "
                f"{self.in_channels} input bands"
            )

    def with_overrides(
        self, bands: Sequence[int] | None = None, tile_size: int | None = None
    ) -> PredictionSettings:
        """A copy with the user's ``bands=`` / ``tile_size=`` in place of the checkpoint's.

        Args:
            bands: 1-based band indexes of the input files, in model order; None keeps them.
            tile_size: Window side; None keeps the training tile size.

        Raises:
            ValueError: ``bands`` is not ``in_channels`` positive integers.
        """
        out = self
        if bands is not None:
            idx = tuple(int(b) for b in bands)
            if len(idx) != self.in_channels or min(idx) < 1:
                names = f" ({', '.join(self.band_names)})" if self.band_names else ""
                raise ValueError(
                    f"bands={list(idx)}: the model takes {self.in_channels} bands{names}; give "
                    f"{self.in_channels} 1-based band indexes of the input files, in model order"
                )
            out = replace(out, band_indexes=idx)
        if tile_size is not None:
            out = replace(out, tile_size=int(tile_size))
        return out
