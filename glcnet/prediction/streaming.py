"""Sliding-window prediction of a raster file with memory bounded by the window rows, not the scene.

The windows, their Gaussian (or uniform) blending weights, the flip test-time augmentation and the
batching are exactly those of :func:`glcnet.inference.sliding_window_predict`, and the windows are
run in the same row-major order and batches. What differs is what is kept: instead of a
``(K, H, W)`` accumulator for the whole scene, only the rows that may still receive contributions
are held, ``[top, top + capacity)``. After each batch, every row above the next window's first row
is final; those rows are divided by their summed weights and handed out as a :class:`RowBlock`, and
the buffer moves down. The per-pixel sums are added in the same order as in the whole-scene version,
so the probabilities, and therefore the argmax, are bitwise identical.

Memory: ``4 * (K + 1) * capacity * W`` bytes for the sums and weights, with
``capacity = T + stride * ceil((batch_size - 1) / windows_per_row)`` (a bit more than one tile
row), plus one batch of windows. For 6 classes, T = 256, 50 % overlap and a 20,000 px wide scene
that is about 0.2 GB whatever the scene's height, against 10.7 GB for a 20,000 x 20,000 scene held
whole.

Windows whose pixels are all no data (see :mod:`glcnet.prediction.validity`) are not passed to
the model; their pixels come out as invalid. A valid pixel lies only in windows that hold data, so
it gets exactly the contributions it would get without skipping. No-data pixels inside a window that
is run are set to 0 in the model input (after scaling), so fill values such as -9999 or NaN do not
leak into their neighbours' predictions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from torch import Tensor, nn
from tqdm import tqdm

from glcnet.data.raster import read_window
from glcnet.inference import (
    model_device,
    reflect_pad,
    sliding_windows,
    window_probabilities,
    window_starts,
    window_weight,
)
from glcnet.prediction.validity import ValidityReader

#: Most rows handed out in one :class:`RowBlock` (bounds the per-block temporaries).
MAX_BLOCK_ROWS = 64


@dataclass
class RowBlock:
    """Finished rows of a scene, top to bottom.

    Attributes:
        row: Scene row of the first row of the block.
        probabilities: Blended softmax probabilities, (K, n, W) float32; 0 where ``valid`` is False.
        valid: (n, W) bool: the pixel holds data and was predicted.
    """

    row: int
    probabilities: Tensor
    valid: np.ndarray

    def class_indices(self, nodata: int) -> np.ndarray:
        """The argmax class of each pixel, ``nodata`` where not valid: (n, W) uint8.

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


@dataclass
class ScanStats:
    """What a scan did (filled in while it runs).

    Attributes:
        windows: Windows covering the scene.
        run: Windows passed to the model.
        skipped: Windows skipped because all their pixels are no data.
        model_batches: Batches passed to the model (each once per flip with ``tta_flip``).
        buffer_rows: Rows of the probability buffer (its capacity).
    """

    windows: int = 0
    run: int = 0
    skipped: int = 0
    model_batches: int = 0
    buffer_rows: int = 0


class WindowReader:
    """Windows of an input image's model bands, scaled as in training, with their validity.

    Args:
        ds: The open input image.
        band_indexes: 1-based bands, in model order.
        divisors: Per band, the value the pixels are divided by (the dtype maximum for integer
            images, 1 for float images, or the ``scale=`` setting).
        validity: The image's validity reader.
    """

    def __init__(
        self,
        ds: rasterio.io.DatasetReader,
        band_indexes: Sequence[int],
        divisors: Sequence[float],
        validity: ValidityReader,
    ) -> None:
        self.ds = ds
        self.bands = tuple(int(b) for b in band_indexes)
        self.divisor = torch.tensor(list(divisors), dtype=torch.float32).view(-1, 1, 1)
        self.validity = validity
        self.height, self.width = ds.height, ds.width

    def read(self, row: int, col: int, h: int, w: int) -> tuple[Tensor | None, np.ndarray | None]:
        """One window: the scaled bands, or None when none of its pixels holds data.

        Returns:
            ``(pixels, valid)``: pixels (C, h, w) float32 with no-data pixels set to 0, or None;
            valid (h, w) bool, or None when every pixel of the image holds data.
        """
        window = Window(col, row, w, h)
        valid = None
        if not self.validity.needs_pixels:
            valid = self.validity.valid(window)
            if valid is not None and not valid.any():
                return None, valid
        raw = read_window(self.ds, self.bands, window, self.ds.name)
        if self.validity.needs_pixels:
            valid = self.validity.valid(window, raw)
            if valid is not None and not valid.any():
                return None, valid
        pixels = torch.from_numpy(raw.astype(np.float32)) / self.divisor
        if valid is not None and not valid.all():
            pixels[:, torch.from_numpy(~valid)] = 0.0
        return pixels, valid


class _RowBuffer:
    """Blended probability sums, weights and validity of the scene rows [top, top + capacity)."""

    def __init__(self, num_classes: int, capacity: int, width: int) -> None:
        self.top = 0
        self.capacity = capacity
        self.acc = torch.zeros(num_classes, capacity, width, dtype=torch.float32)
        self.norm = torch.zeros(capacity, width, dtype=torch.float32)
        self.valid = np.zeros((capacity, width), dtype=bool)

    def holds(self, row: int, h: int) -> bool:
        return row >= self.top and row + h <= self.top + self.capacity

    def mark(self, win: tuple[int, int, int, int], valid: np.ndarray | None) -> None:
        r, c, h, w = win
        self.valid[r - self.top : r - self.top + h, c : c + w] = True if valid is None else valid

    def add(self, probs: Tensor, win: tuple[int, int, int, int], weight: Tensor) -> None:
        r, c, h, w = win
        r -= self.top
        wt = weight[:h, :w]
        self.acc[:, r : r + h, c : c + w] += probs[:, :h, :w] * wt
        self.norm[r : r + h, c : c + w] += wt

    def pop(self, upto: int) -> RowBlock | None:
        """Hand out the rows [top, upto) (all final) and move the buffer down."""
        n = upto - self.top
        if n <= 0:
            return None
        norm = self.norm[:n]
        probs = self.acc[:, :n] / norm
        seen = (norm > 0).numpy()
        if not seen.all():
            probs[:, torch.from_numpy(~seen)] = 0.0
        block = RowBlock(self.top, probs, self.valid[:n] & seen)
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


def buffer_rows(height: int, width: int, tile_size: int, stride: int, batch_size: int) -> int:
    """Rows of probability buffer a scan holds (see the module docstring)."""
    per_row = len(window_starts(width, tile_size, stride))
    return min(height, tile_size + stride * math.ceil((batch_size - 1) / per_row))


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
) -> Iterator[RowBlock]:
    """Predict a raster window by window and yield its rows as soon as they are final.

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

    Yields:
        Consecutive :class:`RowBlock` s covering rows 0 .. H-1 exactly once, in order.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stats = stats if stats is not None else ScanStats()
    height, width = reader.height, reader.width
    windows = sliding_windows(height, width, tile_size, stride)
    weight = window_weight(tile_size, blend)
    device = torch.device(device) if device is not None else model_device(model)
    capacity = buffer_rows(height, width, tile_size, stride, batch_size)
    stats.windows, stats.buffer_rows = len(windows), capacity
    was_training = model.training if isinstance(model, nn.Module) else None
    if was_training is not None:
        model.eval()
    pending: list[tuple[tuple[int, int, int, int], Tensor]] = []
    bar = tqdm(total=len(windows), desc=progress, unit="win", disable=progress is None)
    try:
        with torch.inference_mode():
            buffer = _RowBuffer(num_classes, capacity, width)

        def run_pending() -> None:
            if not pending:
                return
            with torch.inference_mode():
                x = torch.stack([reflect_pad(p, tile_size, tile_size) for _, p in pending])
                probs = window_probabilities(model, x.to(device), num_classes, tta_flip).cpu()
                for p, (win, _) in zip(probs, pending):
                    buffer.add(p, win, weight)
            stats.run += len(pending)
            stats.model_batches += 1
            pending.clear()

        def pop(upto: int) -> Iterator[RowBlock]:
            while buffer.top < upto:  # small blocks keep the per-block temporaries small
                with torch.inference_mode():
                    block = buffer.pop(min(upto, buffer.top + MAX_BLOCK_ROWS))
                yield block

        for i, win in enumerate(windows):
            row, col, h, w = win
            if not buffer.holds(row, h):  # only after skipped windows: run what waits, move down
                run_pending()
                yield from pop(row)
            pixels, valid = reader.read(row, col, h, w)
            buffer.mark(win, valid)
            bar.update(1)
            if pixels is None:
                stats.skipped += 1
                continue
            pending.append((win, pixels))
            if len(pending) == batch_size:
                run_pending()
                upto = windows[i + 1][0] if i + 1 < len(windows) else height
                yield from pop(upto)
        run_pending()
        yield from pop(height)
    finally:
        bar.close()
        if was_training is not None:
            model.train(was_training)
