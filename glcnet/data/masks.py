"""How mask files encode classes: one specification built from the config, one decoder.

Three kinds of mask files, chosen by ``palette`` (``data.dataset_kwargs.palette`` for folder data):

- ``palette: null`` -- **index masks**: one band whose values are the class indices
  ``0..K-1``; the value ``ignore_index`` is accepted as "ignored". Paletted PNG / GeoTIFF files (a
  colour table in the file) are index masks too: the stored value is the class, the colours are
  for display only.
- ``palette: [v0, v1, ...]`` (single values) -- **value masks**: one band; value ``v_k`` is class
  ``k``. ``[0, 255]`` reads the binary 0/255 convention (Massachusetts, Inria, DeepGlobe roads):
  255 is class 1 there, not ignored. ``[1, 2, 3, 4, 5, 6, 7]`` with ``ignore_values: [0]`` reads
  LoveDA (0 = no data, classes shift down by one). In value masks only ``ignore_values`` are
  ignored; the value of ``ignore_index`` has no special meaning.
- ``palette: [[R, G, B], ...]`` -- **colour masks**: three bands (R, G, B); colour ``k`` is
  class ``k`` (the ISPRS labels, DeepGlobe land cover).

``ignore_values`` lists mask values (or colours) read as ``ignore_index``. With index masks they
must lie outside ``0..K-1``: when the classes are the *other* values (LoveDA: 0 = no data, classes
1..7), a value palette says how they shift; nothing is shifted by guesswork.

Anything that can be read two ways is a :class:`~glcnet.data.errors.MaskSpecError` naming the
file, the values found and the setting that fixes it; values that are neither a class nor ignored
raise :class:`~glcnet.data.errors.UnknownColorError` (``unknown_colors="error"``) or become
``ignore_index`` (``"ignore"``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from glcnet.data.classes import BOUNDARY_COLOR
from glcnet.data.errors import ClassMismatchError, MaskSpecError, UnknownColorError

#: Mask kinds, chosen by the palette: None, single values, RGB triplets.
MASK_KINDS: tuple[str, ...] = ("index", "values", "colors")
#: Most distinct values a 1-band mask is decoded through a lookup table for (else ``np.unique``).
_LUT_LIMIT = 1 << 16


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _as_entries(entries: Iterable[Any] | None, what: str) -> tuple | None:
    """Plain tuples of ints or of RGB int triplets (config lists arrive as ListConfig)."""
    if entries is None:
        return None
    out = []
    for e in entries:
        if _is_int(e) or (isinstance(e, float) and float(e).is_integer()):
            out.append(int(e))
        elif not isinstance(e, str | bytes) and hasattr(e, "__len__") and len(e) == 3:
            if not all(_is_int(c) and 0 <= int(c) <= 255 for c in e):
                raise MaskSpecError(f"{what}: colour {list(e)} is not three integers in 0..255")
            out.append(tuple(int(c) for c in e))
        else:
            raise MaskSpecError(
                f"{what}: entry {e!r} is neither a mask value (an integer) nor an RGB colour "
                f"[R, G, B]"
            )
    return tuple(out)


def _code(colour: Sequence[int]) -> int:
    r, g, b = colour
    return (int(r) << 16) | (int(g) << 8) | int(b)


def _colour(code: int) -> tuple[int, int, int]:
    return ((code >> 16) & 255, (code >> 8) & 255, code & 255)


@dataclass(frozen=True)
class MaskSpec:
    """How the mask files of a data set encode classes (see the module docstring).

    Build it with :meth:`from_config`, which checks the settings against each other.

    Attributes:
        num_classes: Number of classes K; decoded masks hold ``0..K-1`` or ``ignore_index``.
        palette: None (index masks), K mask values (value masks) or K RGB triplets (colour masks).
        ignore_values: Mask values (index/value masks) or colours (colour masks) read as ignored.
        ignore_index: Value written for ignored pixels.
        unknown_colors: ``"error"`` or ``"ignore"`` for values that are neither class nor ignored.

    """

    num_classes: int
    palette: tuple | None = None
    ignore_values: tuple = ()
    ignore_index: int = 255
    unknown_colors: str = "error"

    @classmethod
    def from_config(
        cls,
        num_classes: int,
        palette: Iterable[Any] | None = None,
        ignore_values: Iterable[Any] | None = (),
        ignore_index: int = 255,
        unknown_colors: str = "error",
    ) -> MaskSpec:
        """Check and normalise the settings (config lists become tuples).

        Raises:
            ClassMismatchError: The palette does not have one entry per class.
            MaskSpecError: Mixed palette entries, duplicates, ignore values that are classes.

        """
        if not _is_int(num_classes) or num_classes < 1:
            raise ClassMismatchError(
                f"data.num_classes must be an integer >= 1, got {num_classes!r}"
            )
        if unknown_colors not in ("error", "ignore"):
            raise MaskSpecError(
                f"data.unknown_colors must be 'error' or 'ignore', got {unknown_colors!r}"
            )
        if not _is_int(ignore_index):
            raise MaskSpecError(f"data.ignore_index must be an integer, got {ignore_index!r}")
        if 0 <= ignore_index < num_classes:
            raise MaskSpecError(
                f"data.ignore_index={ignore_index} is one of the class indices 0..{num_classes - 1}; "
                f"choose a value outside them (e.g. 255)"
            )
        pal = _as_entries(palette, "data.dataset_kwargs.palette")
        ign = _as_entries(ignore_values or (), "data.dataset_kwargs.ignore_values") or ()
        spec = cls(int(num_classes), pal, ign, int(ignore_index), unknown_colors)
        spec._check()
        return spec

    @classmethod
    def from_dict(cls, record: dict) -> MaskSpec:
        """Rebuild a spec from :meth:`to_dict` (e.g. as recorded in a checkpoint)."""
        return cls.from_config(
            record["num_classes"],
            record.get("palette"),
            record.get("ignore_values", ()),
            record.get("ignore_index", 255),
            record.get("unknown_colors", "error"),
        )

    def _check(self) -> None:
        k = self.num_classes
        pal, ign = self.palette, self.ignore_values
        if pal is not None:
            if len(pal) == 0:
                raise MaskSpecError(
                    "data.dataset_kwargs.palette is empty; use null for class-index masks"
                )
            kinds = {isinstance(e, tuple) for e in pal}
            if len(kinds) > 1:
                raise MaskSpecError(
                    f"data.dataset_kwargs.palette={[list(e) if isinstance(e, tuple) else e for e in pal]} "
                    f"mixes single values and RGB colours; use one kind"
                )
            if len(pal) != k:
                raise ClassMismatchError(
                    f"data.dataset_kwargs.palette has {len(pal)} entries but data.num_classes={k}: "
                    f"give one palette entry per class, or set data.num_classes={len(pal)}"
                )
            dup = sorted({e for e in pal if pal.count(e) > 1}, key=str)
            if dup:
                raise MaskSpecError(
                    f"data.dataset_kwargs.palette lists {dup} more than once; each class needs "
                    f"its own value or colour"
                )
        colours = self.kind == "colors"
        wrong = [e for e in ign if isinstance(e, tuple) != colours]
        if wrong:
            need = "RGB colours [R, G, B]" if colours else "single mask values"
            raise MaskSpecError(
                f"data.dataset_kwargs.ignore_values={self._show(ign)} must be {need} like the "
                f"palette ({self.kind} masks)"
            )
        both = [e for e in ign if pal is not None and e in pal]
        if both:
            raise MaskSpecError(
                f"{self._show(both)} is both a class (in data.dataset_kwargs.palette) and in "
                f"data.dataset_kwargs.ignore_values; remove it from one of them"
            )
        if self.kind == "index":
            classes = [v for v in ign if 0 <= v < k]
            if classes:
                others = [v for v in range(k + len(classes)) if v not in ign][:k]
                raise MaskSpecError(
                    f"data.dataset_kwargs.ignore_values={list(ign)} holds class indices "
                    f"{classes} of the {k} classes of index masks (palette: null); if the classes "
                    f"are the other values, list them in class order, e.g. "
                    f"data.dataset_kwargs.palette={others}"
                )

    @staticmethod
    def _show(entries: Iterable) -> list:
        return [list(e) if isinstance(e, tuple) else e for e in entries]

    # --- facts --------------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        """``index``, ``values`` or ``colors`` (see :data:`MASK_KINDS`)."""
        if self.palette is None:
            return "index"
        return "colors" if isinstance(self.palette[0], tuple) else "values"

    @property
    def bands(self) -> tuple[int, ...]:
        """1-based mask bands read: ``(1, 2, 3)`` for colour masks, else ``(1,)``."""
        return (1, 2, 3) if self.kind == "colors" else (1,)

    def to_dict(self) -> dict:
        """Plain-data record (lists, ints, str) that :meth:`from_dict` rebuilds the spec from."""
        return {
            "kind": self.kind,
            "num_classes": self.num_classes,
            "palette": None if self.palette is None else self._show(self.palette),
            "ignore_values": self._show(self.ignore_values),
            "ignore_index": self.ignore_index,
            "unknown_colors": self.unknown_colors,
        }

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``value masks: 0 -> 0, 255 -> 1``."""
        if self.kind == "index":
            text = f"index masks: values 0..{self.num_classes - 1} are the classes"
        else:
            pairs = ", ".join(
                f"{list(e) if isinstance(e, tuple) else e} -> {k}"
                for k, e in enumerate(self.palette)
            )
            text = f"{'colour' if self.kind == 'colors' else 'value'} masks: {pairs}"
        ignored = self._show(self.ignore_values)
        if self.kind == "index":
            ignored = [*ignored, self.ignore_index]
        return text + (f"; ignored: {ignored}" if ignored else "")

    # --- checks on files ----------------------------------------------------------------------

    def check_file(
        self,
        path: str,
        count: int,
        has_colormap: bool,
        sample: Callable[[], np.ndarray] | None = None,
    ) -> None:
        """Refuse a mask file that this spec would read another way than its format says.

        Args:
            path: The mask file (for the message).
            count: Its number of bands.
            has_colormap: Band 1 carries a colour table (a paletted PNG / GeoTIFF).
            sample: Returns some of its pixels (bands, h, w), to name the colours found.

        Raises:
            MaskSpecError: A multi-band mask without colour palette, a 1-band mask with one.

        """
        if self.kind == "colors":
            if count >= 3:
                return
            if has_colormap:
                raise MaskSpecError(
                    f"{path} is a 1-band mask with a colour table (paletted: the stored value is "
                    f"the class, the colours are for display) but data.dataset_kwargs.palette lists "
                    f"RGB colours; set data.dataset_kwargs.palette=null to read the stored values "
                    f"as class indices (or a value palette [v0, v1, ...])"
                )
            raise MaskSpecError(
                f"{path} has {count} band(s) but data.dataset_kwargs.palette lists RGB colours "
                f"(3-band colour masks); for 1-band masks set data.dataset_kwargs.palette=null "
                f"(class indices) or single values [v0, v1, ...]"
            )
        if count == 1:
            return
        found = ""
        if sample is not None and count >= 3:
            rgb = np.asarray(sample())[:3].reshape(3, -1)
            codes = np.unique(_rgb_codes(rgb))
            shown = ", ".join(str(_colour(int(c))) for c in codes[:6])
            more = f" and {len(codes) - 6} more" if len(codes) > 6 else ""
            found = f" (colours found: {shown}{more})"
        setting = (
            "data.dataset_kwargs.palette is null, which reads 1-band class-index masks"
            if self.kind == "index"
            else "data.dataset_kwargs.palette lists single values (1-band value masks)"
        )
        raise MaskSpecError(
            f"{path} is a {count}-band mask{found} but {setting}; for colour masks set "
            f"data.dataset_kwargs.palette=[[R, G, B], ...] with one colour per class in class order"
        )

    def binary_255_problem(self, values: Iterable[int], paths: Sequence[str]) -> str | None:
        """The message refusing 0/255 masks read as class indices, or None when they are not.

        Index masks whose values are only 0 and ``ignore_index`` (255) are almost surely binary
        masks whose foreground 255 would all be ignored. Listing ``ignore_index`` in
        ``ignore_values`` says that 255 really is "ignore" and silences this.

        Args:
            values: Every mask value found in the masks scanned.
            paths: The mask files scanned (the first is named).

        """
        found = {int(v) for v in values}
        ii = self.ignore_index
        if self.kind != "index" or ii in self.ignore_values or ii not in found:
            return None
        if not found <= {0, ii}:
            return None
        where = paths[0] + (f" (and {len(paths) - 1} more mask files)" if len(paths) > 1 else "")
        return (
            f"{where}: masks hold only the values 0 and {ii} and are read as class indices "
            f"(data.dataset_kwargs.palette=null), where {ii} is ignore_index={ii}, so every {ii} "
            f"pixel would be ignored; for binary 0/{ii} masks set "
            f"data.dataset_kwargs.palette=[0,{ii}] (0 -> class 0, {ii} -> class 1); if {ii} "
            f"really marks ignored pixels set data.dataset_kwargs.ignore_values=[{ii}]"
        )

    # --- decoding -------------------------------------------------------------------------------

    def decode(self, raw: np.ndarray, path: str, eroded: bool = False) -> np.ndarray:
        """Class indices of raw mask bands.

        Args:
            raw: Mask bands as read, shape (len(:attr:`bands`), H, W) (extra bands are not read).
            path: The mask file (named in errors).
            eroded: Colour masks only: black (the ISPRS boundary colour of eroded labels) is
                ignored too.

        Returns:
            (H, W) int64 of ``0..K-1`` and ``ignore_index``.

        Raises:
            UnknownColorError: Values that are neither class nor ignored (``unknown_colors="error"``).
            MaskSpecError: Fractional values in a float mask; ``eroded`` with black as a class.

        """
        arr = np.asarray(raw)
        if self.kind == "colors":
            codes = _rgb_codes(arr[:3].reshape(3, -1)).reshape(arr.shape[1:])
            keys = {_code(c): k for k, c in enumerate(self.palette)}
            ignored = {_code(c) for c in self.ignore_values}
            if eroded:
                if BOUNDARY_COLOR in self.palette:
                    raise MaskSpecError(
                        f"{path}: eroded labels ignore black {BOUNDARY_COLOR} (boundaries), but "
                        f"black is class {self.palette.index(BOUNDARY_COLOR)} of "
                        f"data.dataset_kwargs.palette; set data.eroded=false"
                    )
                ignored.add(_code(BOUNDARY_COLOR))
        else:
            band = arr[0]
            if np.issubdtype(band.dtype, np.floating):
                if not np.all(np.isfinite(band) & (band == np.round(band))):
                    bad = band[~(np.isfinite(band) & (band == np.round(band)))][:5].tolist()
                    raise MaskSpecError(
                        f"{path}: float mask holds non-integer values {bad}; masks must hold "
                        f"integer class values"
                    )
            codes = band.astype(np.int64)
            if self.kind == "index":
                keys = None
                ignored = {*self.ignore_values, self.ignore_index}
            else:
                keys = {v: k for k, v in enumerate(self.palette)}
                ignored = set(self.ignore_values)
        return self._map(codes, keys, ignored, path)

    def _map(
        self, codes: np.ndarray, keys: dict[int, int] | None, ignored: set[int], path: str
    ) -> np.ndarray:
        """Map value codes (H, W) to classes; ``keys`` None: codes 0..K-1 are the classes."""
        if codes.size == 0:
            return codes.astype(np.int64)
        lo, hi = int(codes.min()), int(codes.max())
        if lo >= 0 and hi < _LUT_LIMIT:  # small non-negative values: a lookup table
            uniq = np.arange(hi + 1)
            table, unknown = self._table(uniq, keys, ignored)
            unknown &= np.bincount(codes.ravel(), minlength=hi + 1) > 0
            out = table[codes]
        else:
            uniq, inverse = np.unique(codes, return_inverse=True)
            table, unknown = self._table(uniq, keys, ignored)
            out = table[inverse].reshape(codes.shape)
        if unknown.any() and self.unknown_colors == "error":
            raise UnknownColorError(self._unknown_message(path, codes, uniq[unknown]))
        return out  # unknown values already hold ignore_index

    def _table(
        self, uniq: np.ndarray, keys: dict[int, int] | None, ignored: set[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class of each value in ``uniq`` (unknown ones: ``ignore_index``) and the unknown flags."""
        k, ii = self.num_classes, self.ignore_index
        if keys is None:
            table = np.where((uniq >= 0) & (uniq < k), uniq, -1)
        else:
            table = np.array([keys.get(int(v), -1) for v in uniq], dtype=np.int64)
        is_ignored = np.isin(uniq, list(ignored)) if ignored else np.zeros(uniq.shape, bool)
        unknown = (table < 0) & ~is_ignored
        table = np.where(is_ignored | unknown, ii, table).astype(np.int64)
        return table, unknown

    def _unknown_message(self, path: str, codes: np.ndarray, unknown: np.ndarray) -> str:
        count = int(np.isin(codes, unknown).sum())
        shown = (
            [_colour(int(c)) for c in unknown[:10]]
            if self.kind == "colors"
            else [int(v) for v in unknown[:10]]
        )
        more = f" and {unknown.size - 10} more" if unknown.size > 10 else ""
        what = "colours" if self.kind == "colors" else "values"
        if self.kind == "index":
            known = f"class indices 0..{self.num_classes - 1} nor ignore_index={self.ignore_index}"
        else:
            known = "in data.dataset_kwargs.palette nor in data.dataset_kwargs.ignore_values"
        return (
            f"{path}: mask {what} {shown}{more} ({count} pixels) are neither {known}; set "
            f"data.unknown_colors=ignore to map them to ignore_index={self.ignore_index}, or list "
            f"them in data.dataset_kwargs.ignore_values"
        )


def _rgb_codes(rgb: np.ndarray) -> np.ndarray:
    """24-bit codes ``r << 16 | g << 8 | b`` of colours (3, N) -> (N,) int64."""
    c = rgb.astype(np.int64)
    return (c[0] << 16) | (c[1] << 8) | c[2]


__all__ = ["MASK_KINDS", "MaskSpec"]
