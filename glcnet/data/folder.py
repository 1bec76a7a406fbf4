"""Tiles of your own images: any folder of GeoTIFF / PNG files with masks of the same file stem.

Layout (``image_dir`` and ``mask_dir`` are arguments)::

    root/images/<stem>.tif|.tiff|.png      root/masks/<stem>.tif|.tiff|.png

Each image is one scene (its id is the file stem) and is cut into tiles like the ISPRS scenes.
How masks encode classes is one :class:`~glcnet.data.masks.MaskSpec` (``palette``,
``ignore_values``; see :mod:`glcnet.data.masks`): class indices (``palette=None``, paletted files
included), single values (``palette=[0, 255]``) or RGB colours (``palette=[[R, G, B], ...]``).
Image nodata (a nodata value, an alpha band not read, an internal mask; see
:mod:`glcnet.data.nodata`) is ignored in the masks, and all-nodata tiles are left out.

Classes: ``num_classes``, ``class_names`` and ``palette`` must agree (each that is given); names
default to ``class_0 ...``. The display colours (:attr:`palette` attribute) are the palette's
colours for colour masks, the file's colour table for paletted masks, else generated.

Splits, first rule that applies:

1. ``split_file``: a JSON file ``{"train": [stems], "val": [stems], "test": [stems]}`` (a relative
   path is taken relative to ``root``); ``all`` is every image.
2. Split folders: when any of ``root/train``, ``root/val``, ``root/test`` exists, each holds its
   own ``image_dir``/``mask_dir``; ``all`` is the union.
3. Otherwise a by-file split of the sorted stems, shuffled by ``seed``: ``round(val_fraction * n)``
   files (at least one when ``val_fraction > 0`` and there are two or more files) go to ``val``,
   the rest to ``train``; ``test`` needs rule 1 or 2.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from glcnet.data.classes import IGNORE_INDEX, display_palette, generated_class_names
from glcnet.data.errors import (
    ClassMismatchError,
    DataError,
    EmptyFolderError,
    EmptySplitError,
    MaskSpecError,
    MissingDataError,
)
from glcnet.data.masks import MaskSpec
from glcnet.data.raster import raster_info, read_window
from glcnet.data.tiling import SceneTileDataset

#: File suffixes read as images or masks (case-insensitive).
SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".png")
SPLITS: tuple[str, ...] = ("train", "val", "test", "all")
#: Most mask pixels scanned when a data set is built, to tell 0/255 binary masks from index masks.
VALUE_SCAN_PIXELS: int = 1 << 24


def list_rasters(folder: Path) -> dict[str, Path]:
    """Map file stem -> path of the raster files directly inside ``folder``.

    Raises:
        MissingDataError: ``folder`` does not exist.
        DataError: Two files share a stem (e.g. ``a.tif`` and ``a.png``).

    """
    if not folder.is_dir():
        raise MissingDataError(f"folder not found: {folder}")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in SUFFIXES:
            if path.stem in found:
                raise DataError(f"{found[path.stem]} and {path} share the stem {path.stem!r}")
            found[path.stem] = path
    return found


def seeded_split(stems: Sequence[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Split file stems into ``train`` and ``val`` reproducibly.

    Args:
        stems: File stems (order does not matter; they are sorted first).
        val_fraction: Fraction of files for ``val``, in [0, 1).
        seed: Seed of the shuffle.

    Returns:
        ``{"train": [...], "val": [...]}``, each sorted.

    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(stems)
    n = len(ordered)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    val = {ordered[i] for i in perm[:n_val]}
    return {"train": [s for s in ordered if s not in val], "val": [s for s in ordered if s in val]}


class FolderDataset(SceneTileDataset):
    """Tiles of the images in a folder (see the module docstring for layout, masks and splits).

    Args:
        root: Data root.
        split: ``train``, ``val``, ``test`` or ``all``.
        image_dir: Image folder name (inside ``root`` or inside each split folder).
        mask_dir: Mask folder name, next to ``image_dir``.
        bands: 1-based band indexes to read, in model order; None: every band of the first
            image (sorted by stem); the other images need at least as many.
        tile_size: Tile side in pixels.
        stride: Distance between tiles (None: ``tile_size``).
        labeled: Read masks; False needs no mask folder.
        num_classes: Number of classes K (None: from ``class_names`` or ``palette``).
        class_names: K class names in index order (None: ``class_0``, ``class_1``, ...).
        palette: How masks encode classes: None (class indices), K single values, or K RGB
            colours (see :mod:`glcnet.data.masks`).
        ignore_values: Mask values (or colours) read as ``ignore_index``.
        image_nodata: ``auto`` (the images' own nodata value / alpha / mask), ``none`` or a number.
        unknown_colors: ``error`` or ``ignore`` for mask values that are neither class nor ignored.
        ignore_index: Mask value of ignored pixels (accepted in index masks).
        split_file: JSON file with the stems of each split.
        val_fraction: Fraction of files drawn for ``val`` by the seeded split.
        seed: Seed of the seeded split.
        eroded: Accepted for the ISPRS interface; with colour masks, True also maps black (the
            ISPRS boundary colour) to ``ignore_index``. No effect on index and value masks.

    Raises:
        ClassMismatchError: ``num_classes``, ``class_names`` and ``palette`` disagree.
        MaskSpecError: Masks that the settings would read another way than their format says
            (see :meth:`MaskSpec.check_file`), 0/255 masks read as class indices.

    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_dir: str = "images",
        mask_dir: str = "masks",
        bands: Sequence[int] | None = None,
        tile_size: int = 256,
        stride: int | None = None,
        labeled: bool = True,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        palette: Sequence[Any] | None = None,
        ignore_values: Sequence[Any] | None = (),
        image_nodata: str | float | None = "auto",
        unknown_colors: str = "error",
        ignore_index: int = IGNORE_INDEX,
        split_file: str | Path | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        eroded: bool = False,
    ) -> None:
        super().__init__(
            tile_size=tile_size,
            stride=stride,
            labeled=labeled,
            unknown_colors=unknown_colors,
            ignore_index=ignore_index,
            image_nodata=image_nodata,
        )
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise MissingDataError(f"folder data root not found: {self.root}")
        self.split = split
        self.eroded = bool(eroded)
        k = resolve_num_classes(num_classes, class_names, palette)
        self.class_names = (
            tuple(str(n) for n in class_names)
            if class_names is not None
            else generated_class_names(k)
        )
        self.mask_spec = MaskSpec.from_config(
            k, palette, ignore_values, self.ignore_index, unknown_colors
        )

        self._images, self._masks = self._find_files(image_dir, mask_dir, split_file)
        chosen = self._select(split, split_file, val_fraction, seed)
        if not chosen:
            raise EmptySplitError(f"folder data {self.root}: split {split!r} selects no image")
        if bands is None:
            bands = range(1, raster_info(str(self._images[chosen[0]])).count + 1)
        self.band_indexes = tuple(int(b) for b in bands)
        if not self.band_indexes or min(self.band_indexes) < 1:
            raise ValueError(f"bands must be 1-based band indexes, got {list(self.band_indexes)}")
        self.band_names = tuple(f"B{b}" for b in self.band_indexes)
        if self.labeled:
            for stem in chosen:
                if stem not in self._masks:
                    raise MissingDataError(
                        f"no mask for image {self._images[stem]}: looked for {stem}"
                        f"{{{','.join(SUFFIXES)}}} in {self._mask_dirs[stem]}"
                    )
        self._index_scenes(chosen, f"folder data {self.root} split {split!r}")
        self.palette = self._display_palette()
        if self.labeled:
            self._check_index_values()

    def _display_palette(self) -> tuple[tuple[int, int, int], ...]:
        """Display colours: the palette's colours, the masks' colour table, or generated ones."""
        spec = self.mask_spec
        if spec.kind == "colors":
            return tuple(spec.palette)
        if self.labeled:
            ds = self._cache.get(self.label_path(self.scenes[0]))
            try:
                table = ds.colormap(1)
            except ValueError:
                table = None
            stored = range(spec.num_classes) if spec.kind == "index" else spec.palette
            if table and all(v in table for v in stored):
                return tuple(tuple(int(c) for c in table[v][:3]) for v in stored)
        return display_palette(spec.num_classes)

    def _check_index_values(self) -> None:
        """Refuse 0/255 binary masks read as class indices (see :meth:`MaskSpec.binary_255_problem`).

        Scans the masks of the split in strips, in order, until a value other than 0 and
        ``ignore_index`` shows (they are index masks), or :data:`VALUE_SCAN_PIXELS` pixels.
        """
        spec = self.mask_spec
        if spec.kind != "index" or spec.ignore_index in spec.ignore_values:
            return
        found: set[int] = set()
        scanned: list[str] = []
        budget = VALUE_SCAN_PIXELS
        settled = False  # a value other than 0 and ignore_index was seen
        for scene in self.scenes:
            path = self.label_path(scene)
            ds = self._cache.get(path)
            scanned.append(path)
            rows = max(1, (1 << 20) // ds.width)  # strips of about a million pixels
            for top in range(0, ds.height, rows):
                window = Window(0, top, ds.width, min(rows, ds.height - top))
                found.update(np.unique(read_window(ds, (1,), window, path)).tolist())
                budget -= int(window.width * window.height)
                settled = not found <= {0, spec.ignore_index}
                if settled or budget <= 0:
                    break
            if settled or budget <= 0:
                break
        problem = spec.binary_255_problem(found, scanned)
        if problem:
            raise MaskSpecError(problem)

    def _find_files(
        self, image_dir: str, mask_dir: str, split_file: str | Path | None
    ) -> tuple[dict[str, Path], dict[str, Path]]:
        """Images and masks of every base folder (the root or the split folders) by stem."""
        split_dirs = [self.root / s for s in ("train", "val", "test") if (self.root / s).is_dir()]
        if split_file is None and split_dirs:
            if self.split == "all":
                bases = split_dirs
            elif (self.root / self.split).is_dir():
                bases = [self.root / self.split]
            else:
                raise MissingDataError(
                    f"{self.root} has split folders {[d.name for d in split_dirs]} but no "
                    f"{self.split}/ folder"
                )
        else:
            bases = [self.root]
        images: dict[str, Path] = {}
        masks: dict[str, Path] = {}
        self._mask_dirs: dict[str, Path] = {}
        for base in bases:
            found = list_rasters(base / image_dir)
            if not found:
                raise EmptyFolderError(
                    f"no images ({'/'.join(SUFFIXES)}) in folder {base / image_dir}"
                )
            clash = sorted(set(found) & set(images))
            if clash:
                raise DataError(f"images {clash} appear in more than one split folder")
            images.update(found)
            self._mask_dirs.update(dict.fromkeys(found, base / mask_dir))
            if (base / mask_dir).is_dir():
                masks.update(list_rasters(base / mask_dir))
            elif self.labeled:
                raise MissingDataError(
                    f"mask folder not found: {base / mask_dir} (labeled=False reads images "
                    f"without masks)"
                )
        return images, masks

    def _select(
        self, split: str, split_file: str | Path | None, val_fraction: float, seed: int
    ) -> list[str]:
        """Stems of the requested split."""
        stems = sorted(self._images)
        if split == "all":
            return stems
        if split_file is not None:
            path = Path(split_file).expanduser()
            path = path if path.is_absolute() else self.root / path
            if not path.is_file():
                raise MissingDataError(f"split file not found: {path}")
            try:
                spec = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise DataError(f"split file {path} is not valid JSON: {err}") from err
            if not isinstance(spec, dict) or split not in spec:
                raise DataError(f"split file {path} has no {split!r} list")
            missing = [s for s in spec[split] if s not in self._images]
            if missing:
                raise MissingDataError(f"split file {path} lists images not found: {missing}")
            return [str(s) for s in spec[split]]
        if any((self.root / s).is_dir() for s in ("train", "val", "test")):
            return stems  # the split folder was chosen in _find_files
        if split == "test":
            raise MissingDataError(
                f"{self.root} has no test/ folder and no split_file; the test split cannot be "
                f"drawn at random"
            )
        return seeded_split(stems, val_fraction, seed)[split]

    def image_path(self, scene: str) -> str:
        """Path of the image file of ``scene`` (its stem)."""
        if scene not in self._images:
            raise KeyError(f"no image with stem {scene!r} in {self.root}")
        return str(self._images[scene])

    def label_path(self, scene: str, eroded: bool | None = None) -> str:
        """Path of the mask file of ``scene`` (``eroded`` is accepted and ignored: one mask per image)."""
        if scene not in self._masks:
            raise KeyError(f"no mask with stem {scene!r} in {self.root}")
        return str(self._masks[scene])


def resolve_num_classes(
    num_classes: int | None, class_names: Sequence[str] | None, palette: Sequence[Any] | None
) -> int:
    """The number of classes K that every given setting agrees on.

    Raises:
        ClassMismatchError: Two settings disagree, or none is given.

    """
    given: list[tuple[str, int, str]] = []  # (setting, count, what is counted)
    if num_classes is not None:
        given.append(("data.num_classes", int(num_classes), ""))
    if class_names is not None:
        given.append(("data.class_names", len(class_names), "names"))
    if palette is not None:
        given.append(("data.dataset_kwargs.palette", len(palette), "entries"))
    if not given:
        raise ClassMismatchError(
            "folder data needs the number of classes: set data.num_classes (or data.class_names "
            "or data.dataset_kwargs.palette)"
        )

    def show(setting: str, n: int, what: str) -> str:
        return f"{setting} has {n} {what}" if what else f"{setting}={n}"

    first = given[0]
    for other in given[1:]:
        if other[1] != first[1]:
            fix = f", or set data.num_classes={other[1]}" if not first[2] else ""
            raise ClassMismatchError(f"{show(*other)} but {show(*first)}: give one per class{fix}")
    if class_names is not None and len(set(map(str, class_names))) != len(class_names):
        raise ClassMismatchError(f"data.class_names={list(class_names)} holds a name twice")
    return first[1]
