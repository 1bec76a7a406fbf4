"""One object that builds the data sets and loaders of a run from the `data` config group."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from glcnet.data.classes import IGNORE_INDEX
from glcnet.data.errors import ClassMismatchError, SubsetError


class TileData:
    """Builds tile data sets (Potsdam, Vaihingen, folder, sample) and their loaders.

    The `data` config group maps 1:1 onto this constructor.

    Args:
        dataset_class: Import path of the data-set class, e.g. ``glcnet.data.Potsdam``.
        root: Data-set root (official archives or extracted folders).
        bands: Band mode (``RGB``, ``IRRG``, ``RGBIR``) or, for folder data, 1-based band indexes.
        tile_size: Tile side in pixels.
        stride: Distance between tiles (None: ``tile_size``).
        eroded: Train/validate on the eroded (no-boundary) labels.
        unknown_colors: ``error`` or ``ignore`` for label colours outside the palette.
        ignore_index: Label index of ignored pixels.
        batch_size: Training batch size (pairs of views for pretraining).
        eval_batch_size: Batch size for validation/test (None: ``batch_size``).
        num_workers: DataLoader worker processes.
        pretrain_splits: Splits whose tiles (unlabeled) form the pretraining set.
        label_fraction: Fraction of the labeled training tiles used for fine-tuning (None: all).
        label_count: Number of labeled tiles used for fine-tuning (overrides label_fraction).
        sample_seed: When not None, the embedded sample data set is generated into ``root`` (if absent)
            from this seed before anything is read.
        sample_scene_size: Scene size of the generated sample data set.
        dataset_kwargs: Extra keyword arguments for the data-set class (e.g. folder layout, mask
            palette, ignore values, image nodata).
        num_classes: Number of classes K, passed to the data set, which checks it against its
            palette / fixed classes (the one source of truth of the model head and the metrics).
        class_names: K class names, passed to the data set (None: the data set's own, or
            generated ``class_0 ...``); after the first data set is built this holds its names.
        skip_bad_tiles: Training goes on when a tile cannot be read mid-run: the item is replaced
            by the next readable one, logged and counted (see :mod:`glcnet.data.bad_tiles`);
            False: the run stops with an error naming the file.
    """

    def __init__(
        self,
        dataset_class: str,
        root: str,
        bands: Any = "RGBIR",
        tile_size: int = 256,
        stride: int | None = None,
        eroded: bool = False,
        unknown_colors: str = "error",
        ignore_index: int = IGNORE_INDEX,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pretrain_splits: Sequence[str] = ("train",),
        label_fraction: float | None = None,
        label_count: int | None = None,
        sample_seed: int | None = None,
        sample_scene_size: int = 512,
        dataset_kwargs: dict | None = None,
        num_classes: int = 6,
        class_names: Sequence[str] | None = None,
        skip_bad_tiles: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if label_fraction is not None and not 0.0 < label_fraction <= 1.0:
            raise ValueError(f"data.label_fraction must be in (0, 1], got {label_fraction}")
        if label_count is not None and label_count < 1:
            raise ValueError(f"data.label_count must be >= 1, got {label_count}")
        self.dataset_cls = hydra.utils.get_class(dataset_class)
        self.root = str(root)
        self.bands = list(bands) if not isinstance(bands, str) else bands
        self.tile_size = tile_size
        self.stride = stride
        self.eroded = eroded
        self.unknown_colors = unknown_colors
        self.ignore_index = ignore_index
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pretrain_splits = list(pretrain_splits)
        self.label_fraction = label_fraction
        self.label_count = label_count
        self.sample_seed = sample_seed
        self.sample_scene_size = sample_scene_size
        self.dataset_kwargs = dict(dataset_kwargs or {})
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else None
        self.skip_bad_tiles = bool(skip_bad_tiles)
        self._prepared = False

    def prepare(self) -> None:
        """Generate the sample data set when configured (no-op otherwise or when present)."""
        if self._prepared:
            return
        if self.sample_seed is not None:
            from glcnet.data.sample import ensure_sample_dataset

            ensure_sample_dataset(
                self.root, seed=self.sample_seed, scene_size=self.sample_scene_size
            )
        self._prepared = True

    def dataset(self, split: str, labeled: bool = True, eroded: bool | None = None) -> Dataset:
        """Build the tile data set of one split.

        Args:
            split: ``train``, ``val``, ``test`` or ``all``.
            labeled: Read labels (False for pretraining: no label files needed).
            eroded: Use eroded labels (None: the configured default).

        Returns:
            The data set; items are dicts with ``image`` (C, T, T), ``mask`` (T, T), ``scene``,
            ``window``.
        """
        self.prepare()
        ds = self.dataset_cls(
            root=self.root,
            split=split,
            bands=self.bands,
            tile_size=self.tile_size,
            stride=self.stride,
            eroded=self.eroded if eroded is None else eroded,
            labeled=labeled,
            unknown_colors=self.unknown_colors,
            ignore_index=self.ignore_index,
            num_classes=self.num_classes,
            class_names=self.class_names,
            **self.dataset_kwargs,
        )
        found = getattr(ds, "num_classes", self.num_classes)
        if found != self.num_classes:  # a data-set class that does not check it itself
            raise ClassMismatchError(
                f"data.num_classes={self.num_classes} but the {split} data set has {found} "
                f"classes; set data.num_classes={found}"
            )
        if self.class_names is None:
            self.class_names = [str(n) for n in getattr(ds, "class_names", range(found))]
        return ds

    def pretrain_dataset(self, labeled: bool = False) -> Dataset:
        """Tiles of ``pretrain_splits`` concatenated (unlabeled unless the method needs labels)."""
        parts = [self.dataset(split, labeled=labeled) for split in self.pretrain_splits]
        return parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def labeled_indices(self, num_tiles: int, seed: int) -> list[int]:
        """Draw the labeled subset of the training tiles reproducibly.

        Args:
            num_tiles: Number of training tiles available.
            seed: Seed of the draw (the run's seed).

        Returns:
            Sorted tile indices. All tiles when neither fraction nor count is set.
        """
        if self.label_count is None and self.label_fraction is None:
            return list(range(num_tiles))
        count = self.label_count
        if count is None:
            count = int(round(self.label_fraction * num_tiles))
            if count < 1:
                raise SubsetError(
                    f"data.label_fraction={self.label_fraction} selects no tile out of {num_tiles} "
                    f"training tiles; use a larger fraction or data.label_count=N"
                )
        if count > num_tiles:
            raise SubsetError(f"data.label_count={count} exceeds the {num_tiles} training tiles")
        rng = np.random.default_rng(seed)
        return sorted(rng.choice(num_tiles, size=count, replace=False).tolist())

    def loader(self, dataset: Dataset, train: bool, batch_size: int | None = None) -> DataLoader:
        """A DataLoader with the configured workers.

        Args:
            dataset: Any map-style data set.
            train: Shuffle and drop the last incomplete batch (when there is more than one batch).
            batch_size: Override of the configured batch size.
        """
        bs = batch_size or (self.batch_size if train else self.eval_batch_size)
        drop_last = train and len(dataset) > bs
        return DataLoader(
            dataset,
            batch_size=bs,
            shuffle=train,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )


def save_subset(path: str | Path, dataset: Dataset, indices: Sequence[int], **meta: Any) -> None:
    """Write the chosen labeled tiles (index, scene, window) to a JSON file.

    Args:
        path: Output file.
        dataset: The full training data set (with a ``tiles`` attribute).
        indices: Chosen indices.
        **meta: Extra fields (seed, fraction, ...).
    """
    tiles = getattr(dataset, "tiles", None)
    rows = [
        {"index": int(i), "tile": list(tiles[i]) if tiles is not None else None} for i in indices
    ]
    Path(path).write_text(json.dumps({**meta, "count": len(rows), "tiles": rows}, indent=1))


def load_subset(path: str | Path, dataset: Dataset) -> Subset:
    """Reload a labeled subset written by :func:`save_subset`, checking it fits the data set."""
    spec = json.loads(Path(path).read_text())
    tiles = getattr(dataset, "tiles", None)
    idx = []
    for row in spec["tiles"]:
        i = row["index"]
        if i >= len(dataset) or (
            tiles is not None and row["tile"] is not None and list(tiles[i]) != row["tile"]
        ):
            raise SubsetError(f"{path}: tile {row} does not match the data set (different tiling?)")
        idx.append(i)
    return Subset(dataset, idx)
