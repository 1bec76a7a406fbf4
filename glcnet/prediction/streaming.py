"""Sliding-window prediction of a raster file in column blocks: memory independent of the scene.

The windows, their Gaussian (or uniform) blending weights and the flip test-time augmentation are
exactly those of :func:`glcnet.inference.sliding_window_predict`. What differs is what is kept:
instead of a ``(K, H, W)`` accumulator for the whole scene, the scene is cut into column blocks
``[x0, x1)`` of ``block_width`` pixels (:func:`column_blocks`), and each block is scanned top to
bottom over every window that overlaps it, in row-major order, holding only the rows that may still
receive contributions: ``capacity`` rows across the block's windows. After each batch, every row
above the next window's first row is final; the block's columns of those rows are divided by their
summed weights and handed out as a :class:`Block`, and the buffer moves down.

Exactness: a window that straddles a block border is read, run and blended again for each block it
overlaps, so every pixel gets the contributions of all the windows that cover it, added in the same
row-major order as in the whole-scene version. The probabilities, and therefore the argmax, are
bitwise identical, because a window's probabilities do not depend on which windows share its
batch: every model call gets exactly ``batch_size`` windows (:func:`glcnet.inference.
window_probabilities` pads the last batch), and with a fixed batch size PyTorch's kernels compute
each window alike wherever it sits in the batch (with another batch size they may not: its CPU
convolutions give other last bits for a batch of 1 than for a batch of 8).

Memory: ``4 * (K + 1) * capacity * (block_width + 2 * (T - 1))`` bytes at most for the sums and
weights, with ``capacity = T + stride * ceil((batch_size - 1) / windows_per_block_row)`` (a bit more
than one tile), plus one batch of windows: it depends on neither the scene's width nor its height.
For 6 classes, T = 256, 50 % overlap and 4096 px blocks that is 4 x 7 x 384 x 4352 B = 47 MB,
against 10.7 GB for a 20,000 x 20,000 scene held whole. Cost: the windows across each block border
are computed twice, about ``(T - stride) / block_width`` more windows (3 % for T = 256, 50 % overlap
and 4096 px blocks).

Windows whose pixels are all no data (the image's nodata rule, :mod:`glcnet.data.nodata`, or
non-finite values of a float image) are not passed to the model; their pixels come out as invalid.
A valid pixel lies only in windows that hold data, so it gets exactly the contributions it would get
without skipping. No-data pixels inside a window that is run are set to 0 in the model input (after
scaling), so fill values such as -9999 or NaN do not leak into their neighbours' predictions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from torch import Tensor
from tqdm import tqdm

from glcnet.data.nodata import NodataRule, read_validity
from glcnet.data.raster import read_window
from glcnet.inference import (
    blend_window,
    eval_mode,
    model_device,
    reflect_pad,
    window_probabilities,
    window_starts,
    window_weight,
)

#: Most rows handed out in one :class:`Block` (bounds the per-block temporaries).
MAX_BLOCK_ROWS = 64
#: Default width of the column blocks (a multiple of the output GeoTIFF's 256 px tiles).
DEFAULT_BLOCK_WIDTH = 4096


@dataclass
class Block:
    """Finished pixels of a scene: rows ``[row, row + n)`` of columns ``[col, col + w)``.

    Attributes:
        row: Scene row of the block's first row.
        col: Scene column of the block's first column.
        probabilities: Blended softmax probabilities, (K, n, w) float32; 0 where ``valid`` is False.
        valid: (n, w) bool: the pixel holds data and was predicted.
    """

    row: int
    col: int
    probabilities: Tensor
    valid: np.ndarray

    def class_indices(self, nodata: int) -> np.ndarray:
        """The argmax class of each pixel, ``nodata`` where not valid: (n, w) uint8.

        Equal to ``probabilities.argmax(0)`` (ties go to the lowest class), computed one class
        plane at a time, which is several times faster than a reduction across planes.
        """
        probs = self.probabilities.numpy()
        labels = np.zeros(probs.shape[1:], dtype=np.uint8)
        best = probs[0].copy()
        for k in range(1, probs.shape[0]):
            higher = probs[k] > best
            labels[higher] = k
            np.maximum(best, probs[k], out=best)
        labels[~self.valid] = nodata
        return labels


@dataclass(frozen=True)
class ColumnBlock:
    """Columns ``[x0, x1)`` of a scene and the start columns of the windows that overlap them."""

    x0: int
    x1: int
    window_cols: tuple[int, ...]


def column_blocks(
    width: int, tile_size: int, stride: int, block_width: int | None = None
) -> list[ColumnBlock]:
    """Cut a scene's columns into blocks, each with the windows that overlap it.

    Args:
        width: Scene width W.
        tile_size: Window side T.
        stride: Distance between window starts.
        block_width: Columns per block (the last block may be narrower); None or >= W: one block.

    Returns:
        Blocks left to right, covering ``[0, W)`` exactly once; a window whose columns overlap
        several blocks is listed in each.
    """
    if block_width is not None and block_width < 1:
        raise ValueError(f"block_width must be >= 1 or None, got {block_width}")
    starts = window_starts(width, tile_size, stride)
    w = min(tile_size, width)
    step = width if block_width is None else min(block_width, width)
    edges = [*range(0, width, step), width]
    return [
        ColumnBlock(x0, x1, tuple(c for c in starts if c < x1 and c + w > x0))
        for x0, x1 in zip(edges[:-1], edges[1:])
    ]


@dataclass
class ScanStats:
    """What a scan did (filled in while it runs).

    Attributes:
        windows: Windows covering the scene.
        visits: Windows scanned over all column blocks (a window across a block border counts once
            per block); ``visits - windows`` windows were computed again.
        run: Visits passed to the model.
        skipped: Visits skipped because all their pixels are no data.
        model_batches: Batches passed to the model (each once per flip with ``tta_flip``).
        column_blocks: Column blocks the scene was cut into.
        buffer_rows: Rows of the probability buffer (its capacity, the largest over the blocks).
        buffer_cols: Columns of the probability buffer (the largest over the blocks).
    """

    windows: int = 0
    visits: int = 0
    run: int = 0
    skipped: int = 0
    model_batches: int = 0
    column_blocks: int = 0
    buffer_rows: int = 0
    buffer_cols: int = 0

    @property
    def extra_windows(self) -> float:
        """Windows computed again at block borders, as a fraction of the scene's windows."""
        return (self.visits - self.windows) / self.windows if self.windows else 0.0


class WindowReader:
    """Windows of an input image's model bands, scaled as in training, with their validity.

    Args:
        ds: The open input image.
        band_indexes: 1-based bands, in model order.
        divisors: Per band, the value the pixels are divided by (the dtype maximum for integer
            images, 1 for float images, or the ``scale=`` setting).
        nodata: The image's nodata rule (:func:`glcnet.data.nodata.nodata_rule`), or None when it
            has none. Non-finite values of float images are no data as well: no model can use them.
        setting_name: The nodata setting, for messages.
    """

    def __init__(
        self,
        ds: rasterio.io.DatasetReader,
        band_indexes: Sequence[int],
        divisors: Sequence[float],
        nodata: NodataRule | None,
        setting_name: str = "image_nodata",
    ) -> None:
        self.ds = ds
        self.bands = tuple(int(b) for b in band_indexes)
        self.divisor = torch.tensor(list(divisors), dtype=torch.float32).view(-1, 1, 1)
        self.nodata = nodata
        self.setting_name = setting_name
        self.is_float = any(np.dtype(ds.dtypes[b - 1]).kind == "f" for b in self.bands)
        self.height, self.width = ds.height, ds.width

    def _validity(self, window: Window, pixels: np.ndarray | None = None) -> np.ndarray:
        pixels = pixels if pixels is not None and self.nodata.bands == self.bands else None
        return read_validity(
            self.ds, self.nodata, window, self.ds.name, pixels, setting_name=self.setting_name
        )

    def read(self, row: int, col: int, h: int, w: int) -> tuple[Tensor | None, np.ndarray | None]:
        """One window: the scaled bands, or None when none of its pixels holds data.

        Returns:
            ``(pixels, valid)``: pixels (C, h, w) float32 with no-data pixels set to 0, or None;
            valid (h, w) bool, or None when every pixel of the image holds data.
        """
        window = Window(col, row, w, h)
        valid = None
        if self.nodata is not None and self.nodata.kind != "value":  # a mask: read it first
            valid = self._validity(window)
            if not valid.any():
                return None, valid
        raw = read_window(self.ds, self.bands, window, self.ds.name)
        if self.nodata is not None and self.nodata.kind == "value":
            valid = self._validity(window, raw)
        if self.is_float:
            finite = np.isfinite(raw).all(axis=0)
            valid = finite if valid is None else valid & finite
        if valid is not None and not valid.any():
            return None, valid
        pixels = torch.from_numpy(raw.astype(np.float32)) / self.divisor
        if valid is not None and not valid.all():
            pixels[:, torch.from_numpy(~valid)] = 0.0
        return pixels, valid


class _BlockBuffer:
    """Blended probability sums, weights and validity of a block of the scene.

    It holds rows ``[top, top + capacity)`` of columns ``[left, left + width)``. The storage is
    allocated once per scan, for the largest block, and reused by every block (:meth:`start`).
    """

    def __init__(self, num_classes: int, capacity: int, width: int) -> None:
        self._acc = torch.zeros(num_classes, capacity, width, dtype=torch.float32)
        self._norm = torch.zeros(capacity, width, dtype=torch.float32)
        self._valid = np.zeros((capacity, width), dtype=bool)
        self.start(0, width, capacity)

    def start(self, left: int, width: int, capacity: int) -> None:
        """Begin a block: rows ``[0, capacity)`` of columns ``[left, left + width)``, all zero."""
        self.top, self.left, self.capacity = 0, left, capacity
        self.acc = self._acc[:, :capacity, :width]
        self.norm = self._norm[:capacity, :width]
        self.valid = self._valid[:capacity, :width]
        self.acc.zero_()
        self.norm.zero_()
        self.valid[:] = False

    def holds(self, row: int, h: int) -> bool:
        return row >= self.top and row + h <= self.top + self.capacity

    def mark(self, win: tuple[int, int, int, int], valid: np.ndarray | None) -> None:
        r, c, h, w = win
        r, c = r - self.top, c - self.left
        self.valid[r : r + h, c : c + w] = True if valid is None else valid

    def add(self, probs: Tensor, win: tuple[int, int, int, int], weight: Tensor) -> None:
        r, c, h, w = win
        blend_window(self.acc, self.norm, probs, (r - self.top, c - self.left, h, w), weight)

    def pop(self, upto: int, x0: int, x1: int) -> Block | None:
        """Hand out columns [x0, x1) of the rows [top, upto) (all final); move the buffer down."""
        n = upto - self.top
        if n <= 0:
            return None
        lo, hi = x0 - self.left, x1 - self.left
        norm = self.norm[:n, lo:hi]
        probs = self.acc[:, :n, lo:hi] / norm
        seen = (norm > 0).numpy()
        if not seen.all():
            probs[:, torch.from_numpy(~seen)] = 0.0
        block = Block(self.top, x0, probs, self.valid[:n, lo:hi] & seen)
        keep = self.capacity - n
        for start in range(0, keep, n):  # chunks of n rows: source and target never overlap
            stop = min(start + n, keep)
            self.acc[:, start:stop] = self.acc[:, start + n : stop + n]
            self.norm[start:stop] = self.norm[start + n : stop + n]
            self.valid[start:stop] = self.valid[start + n : stop + n]
        self.acc[:, keep:] = 0
        self.norm[keep:] = 0
        self.valid[keep:] = False
        self.top = upto
        return block


def buffer_rows(
    height: int, windows_per_row: int, tile_size: int, stride: int, batch_size: int
) -> int:
    """Rows of probability buffer a block scan holds (see the module docstring).

    Args:
        height: Scene height H.
        windows_per_row: Windows per window row of the block.
        tile_size: Window side T.
        stride: Distance between window starts.
        batch_size: Windows per model call.
    """
    return min(height, tile_size + stride * math.ceil((batch_size - 1) / windows_per_row))


def stream_predict(
    model: Callable[[Tensor], Tensor],
    reader: WindowReader,
    num_classes: int,
    tile_size: int,
    stride: int,
    batch_size: int = 8,
    tta_flip: bool = False,
    blend: str = "gaussian",
    device: str | torch.device | None = None,
    progress: str | None = None,
    stats: ScanStats | None = None,
    block_width: int | None = DEFAULT_BLOCK_WIDTH,
) -> Iterator[Block]:
    """Predict a raster column block by column block and yield its pixels as soon as they are final.

    Args:
        model: Maps (B, C, T, T) float32 to logits (B, K, T, T); an ``nn.Module`` runs in eval
            mode (its mode is restored afterwards).
        reader: The input image.
        num_classes: K.
        tile_size: Window side T.
        stride: Distance between window starts, in [1, T].
        batch_size: Windows per model call.
        tta_flip: Average over the identity and the horizontal and vertical flips.
        blend: ``gaussian`` or ``mean`` window weights (:func:`glcnet.inference.window_weight`).
        device: Where the model runs; None: its parameters' device.
        progress: Label of a progress bar over the windows; None: no bar.
        stats: Filled in with what the scan did.
        block_width: Columns per block (see :func:`column_blocks`); None: the whole width.

    Yields:
        :class:`Block` s covering every pixel exactly once: column blocks left to right, each
        from its top row to the bottom in consecutive row ranges.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stats = stats if stats is not None else ScanStats()
    height, width = reader.height, reader.width
    rows = window_starts(height, tile_size, stride)
    blocks = column_blocks(width, tile_size, stride, block_width)
    weight = window_weight(tile_size, blend)
    device = torch.device(device) if device is not None else model_device(model)
    stats.windows = len(rows) * len(window_starts(width, tile_size, stride))
    stats.visits = len(rows) * sum(len(b.window_cols) for b in blocks)
    stats.column_blocks = len(blocks)
    h, w = min(tile_size, height), min(tile_size, width)
    spans = [(b.window_cols[-1] + w - b.window_cols[0]) for b in blocks]
    capacities = [
        buffer_rows(height, len(b.window_cols), tile_size, stride, batch_size) for b in blocks
    ]
    stats.buffer_rows, stats.buffer_cols = max(capacities), max(spans)
    with torch.inference_mode():
        buffer = _BlockBuffer(num_classes, stats.buffer_rows, stats.buffer_cols)
    bar = tqdm(total=stats.visits, desc=progress, unit="win", disable=progress is None)
    with eval_mode(model), bar:
        for block, span, capacity in zip(blocks, spans, capacities):
            with torch.inference_mode():
                buffer.start(block.window_cols[0], span, capacity)
            windows = [(r, c, h, w) for r in rows for c in block.window_cols]
            yield from _scan_block(
                model, reader, block, windows, buffer, num_classes, tile_size, weight, batch_size,
                tta_flip, device, bar, stats,
            )  # fmt: skip


def _scan_block(
    model: Callable[[Tensor], Tensor],
    reader: WindowReader,
    block: ColumnBlock,
    windows: list[tuple[int, int, int, int]],
    buffer: _BlockBuffer,
    num_classes: int,
    tile_size: int,
    weight: Tensor,
    batch_size: int,
    tta_flip: bool,
    device: torch.device,
    bar: tqdm,
    stats: ScanStats,
) -> Iterator[Block]:
    """Run one column block's windows (row-major order) through ``buffer``; yield finished rows."""
    height = reader.height
    pending: list[tuple[tuple[int, int, int, int], Tensor]] = []

    def run_pending() -> None:
        if not pending:
            return
        with torch.inference_mode():
            x = torch.stack([reflect_pad(p, tile_size, tile_size) for _, p in pending])
            probs = window_probabilities(
                model, x.to(device), num_classes, tta_flip, pad_to=batch_size
            ).cpu()
            for p, (win, _) in zip(probs, pending):
                buffer.add(p, win, weight)
        stats.run += len(pending)
        stats.model_batches += 1
        pending.clear()

    def pop(upto: int) -> Iterator[Block]:
        while buffer.top < upto:  # small blocks keep the per-block temporaries small
            with torch.inference_mode():
                out = buffer.pop(min(upto, buffer.top + MAX_BLOCK_ROWS), block.x0, block.x1)
            yield out

    for i, win in enumerate(windows):
        row, col, wh, ww = win
        if not buffer.holds(row, wh):  # only after skipped windows: run what waits, move down
            run_pending()
            yield from pop(row)
        pixels, valid = reader.read(row, col, wh, ww)
        buffer.mark(win, valid)
        bar.update(1)
        if pixels is None:
            stats.skipped += 1
            continue
        pending.append((win, pixels))
        if len(pending) == batch_size:
            run_pending()
            yield from pop(windows[i + 1][0] if i + 1 < len(windows) else height)
    run_pending()
    yield from pop(height)
