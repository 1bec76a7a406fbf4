"""Whole-scene prediction with blended sliding windows, and prediction GeoTIFF writing.

A scene (a tensor, an array or a raster path read window by window) is cut into overlapping
``tile_size`` windows that cover every pixel; the last window of each row/column is shifted back to
the border and scenes smaller than a tile are reflection-padded and cropped back. The softmax
probabilities of all windows are blended with a Gaussian (or uniform) window weight, so a pixel seen
by several windows gets their weighted mean rather than the last window's vote.

Memory: the blend accumulates ``(num_classes, H, W)`` probability sums and ``(H, W)`` weights in
float32 on the CPU, i.e. ``4 * (num_classes + 1) * H * W`` bytes; for a 6000 x 6000 Potsdam scene
with 6 classes that is about 1.0 GB (0.86 GB of which is returned as the probability map). A raster
path is never read whole: only one batch of windows is in memory at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F
from rasterio.windows import Window
from torch import Tensor, nn
from tqdm import tqdm

from glcnet.data.classes import ISPRS_PALETTE, encode_palette

#: Window blending modes accepted by :func:`sliding_window_predict`.
BLEND_MODES = ("gaussian", "mean")

#: Standard deviation of the Gaussian window weight, as a fraction of the tile side.
GAUSSIAN_SIGMA_FRACTION = 1.0 / 8.0


def window_starts(size: int, tile_size: int, stride: int) -> list[int]:
    """Start offsets of the windows along one axis.

    Windows start every ``stride`` pixels; the last one is shifted back so that it ends exactly at
    the border. An axis not longer than the tile gets one window at 0.

    Args:
        size: Length of the axis in pixels.
        tile_size: Window length.
        stride: Distance between consecutive starts, ``1 <= stride <= tile_size``.

    Returns:
        Increasing start offsets; consecutive starts are at most ``stride`` apart.

    """
    if size < 1 or tile_size < 1 or not 1 <= stride <= tile_size:
        raise ValueError(
            f"need size >= 1, tile_size >= 1 and 1 <= stride <= tile_size, got size={size}, "
            f"tile_size={tile_size}, stride={stride}"
        )
    if size <= tile_size:
        return [0]
    return [*range(0, size - tile_size, stride), size - tile_size]


def sliding_windows(
    height: int, width: int, tile_size: int, stride: int
) -> list[tuple[int, int, int, int]]:
    """Windows covering a ``height x width`` scene, in row-major order.

    Args:
        height: Scene height.
        width: Scene width.
        tile_size: Window side.
        stride: Distance between window starts (``1 <= stride <= tile_size``).

    Returns:
        ``(row, col, h, w)`` per window; ``h``/``w`` are smaller than ``tile_size`` only when the
        scene itself is smaller than a tile along that axis.

    """
    h, w = min(tile_size, height), min(tile_size, width)
    return [
        (r, c, h, w)
        for r in window_starts(height, tile_size, stride)
        for c in window_starts(width, tile_size, stride)
    ]


def window_weight(tile_size: int, blend: str = "gaussian") -> Tensor:
    """Blending weight of one window.

    Args:
        tile_size: Window side T.
        blend: ``"gaussian"``: separable Gaussian centred on the window centre ``(T - 1) / 2`` with
            sigma ``T / 8``, maximum 1 (strictly positive everywhere); ``"mean"``: all ones.

    Returns:
        Weights, shape (T, T), float32.

    """
    if blend not in BLEND_MODES:
        raise ValueError(f"blend must be one of {BLEND_MODES}, got {blend!r}")
    if blend == "mean":
        return torch.ones(tile_size, tile_size)
    pos = torch.arange(tile_size, dtype=torch.float64)
    sigma = tile_size * GAUSSIAN_SIGMA_FRACTION
    g = torch.exp(-0.5 * ((pos - (tile_size - 1) / 2) / sigma) ** 2)
    return torch.outer(g, g).float()


def blend_window(
    acc: Tensor, norm: Tensor, probs: Tensor, win: tuple[int, int, int, int], weight: Tensor
) -> None:
    """Add one window's weighted probabilities to running sums, in place.

    The one place the blend is computed, so that the whole-scene and the streamed predictions add
    exactly the same numbers.

    Args:
        acc: Probability sums, (K, H', W').
        norm: Weight sums, (H', W').
        probs: The window's probabilities, (K, T, T) (padded windows: only ``[:h, :w]`` counts).
        win: ``(row, col, h, w)`` of the window in ``acc``'s coordinates.
        weight: The window weight, (T, T) (:func:`window_weight`).
    """
    r, c, h, w = win
    wt = weight[:h, :w]
    acc[:, r : r + h, c : c + w] += probs[:, :h, :w] * wt
    norm[r : r + h, c : c + w] += wt


@contextmanager
def eval_mode(model: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Run an ``nn.Module`` in eval mode and restore its mode afterwards (other callables as is)."""
    was_training = model.training if isinstance(model, nn.Module) else None
    if was_training is not None:
        model.eval()
    try:
        yield
    finally:
        if was_training is not None:
            model.train(was_training)


def reflect_pad(patch: Tensor, height: int, width: int) -> Tensor:
    """Pad (C, h, w) at the bottom/right by reflection up to (C, height, width)."""
    while patch.shape[-2] < height or patch.shape[-1] < width:
        h, w = patch.shape[-2:]
        ph, pw = min(height - h, max(h - 1, 0)), min(width - w, max(w - 1, 0))
        if ph == 0 and pw == 0:  # a 1-pixel axis cannot be reflected: repeat it
            return F.pad(patch[None], (0, width - w, 0, height - h), mode="replicate")[0]
        patch = F.pad(patch, (0, pw, 0, ph), mode="reflect")
    return patch


def _dtype_max(dtype: np.dtype) -> float:
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0


class _ArraySource:
    """Windows of an in-memory (C, H, W) image."""

    def __init__(self, image: Tensor | np.ndarray, band_indexes, scale: float | None) -> None:
        if isinstance(image, np.ndarray):
            divisor = scale if scale is not None else _dtype_max(image.dtype)
            image = torch.from_numpy(np.ascontiguousarray(image))
        elif isinstance(image, Tensor):
            is_int = not (image.dtype.is_floating_point or image.dtype == torch.bool)
            dmax = torch.iinfo(image.dtype).max if is_int else 1
            divisor = scale if scale is not None else dmax
        else:
            raise TypeError(f"image must be a Tensor, an np.ndarray or a path, got {type(image)}")
        if image.ndim != 3:
            raise ValueError(f"image must have shape (C, H, W), got {tuple(image.shape)}")
        if band_indexes is not None:
            idx = _check_bands(band_indexes, image.shape[0], "the image")
            image = image[[i - 1 for i in idx]]
        self.image = image
        self.divisor = float(divisor)
        self.shape = tuple(image.shape)

    def read(self, row: int, col: int, h: int, w: int) -> Tensor:
        patch = self.image[:, row : row + h, col : col + w].float()
        return patch / self.divisor if self.divisor != 1.0 else patch

    def close(self) -> None:
        pass


class _RasterSource:
    """Windows of a raster file, read on demand with rasterio (the scene is never read whole)."""

    def __init__(self, path: str | Path, band_indexes, scale: float | None) -> None:
        self.path = str(path)
        self.src = rasterio.open(self.path)
        try:
            count = self.src.count
            self.bands = (
                list(range(1, count + 1))
                if band_indexes is None
                else _check_bands(band_indexes, count, self.path)
            )
            divisors = [
                scale if scale is not None else _dtype_max(self.src.dtypes[b - 1])
                for b in self.bands
            ]
        except Exception:
            self.src.close()
            raise
        self.divisor = torch.tensor(divisors, dtype=torch.float32).view(-1, 1, 1)
        self.shape = (len(self.bands), self.src.height, self.src.width)

    def read(self, row: int, col: int, h: int, w: int) -> Tensor:
        arr = self.src.read(indexes=self.bands, window=Window(col, row, w, h))
        return torch.from_numpy(arr.astype(np.float32)) / self.divisor

    def close(self) -> None:
        self.src.close()


def _check_bands(band_indexes: Sequence[int], count: int, what: str) -> list[int]:
    idx = [int(b) for b in band_indexes]
    if not idx or any(not 1 <= b <= count for b in idx):
        raise ValueError(f"band_indexes must be 1-based in [1, {count}] for {what}, got {idx}")
    return idx


def resolve_stride(tile_size: int, overlap: float, stride: int | None) -> int:
    """Distance between window starts: ``stride`` when given, else ``round(T * (1 - overlap))``."""
    if tile_size < 1:
        raise ValueError(f"tile_size must be >= 1, got {tile_size}")
    if stride is not None:
        if not 1 <= stride <= tile_size:
            raise ValueError(f"stride must be in [1, tile_size={tile_size}], got {stride}")
        return int(stride)
    if not 0.0 <= overlap < 1.0:
        raise ValueError(
            f"overlap is the overlapping fraction of a tile, in [0, 1), got {overlap}; "
            f"pass stride= for a distance in pixels"
        )
    return max(1, int(round(tile_size * (1.0 - overlap))))


def model_device(model: Callable[[Tensor], Tensor]) -> torch.device:
    """Device of the model's first parameter (the CPU for parameter-free callables)."""
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def window_probabilities(
    model: Callable[[Tensor], Tensor],
    x: Tensor,
    num_classes: int,
    tta_flip: bool,
    pad_to: int | None = None,
) -> Tensor:
    """Softmax probabilities (B, K, T, T) of a batch (B, C, T, T), flip-averaged when asked.

    Args:
        model: Maps (N, C, T, T) to logits (N, K, T, T).
        x: The windows.
        num_classes: K.
        tta_flip: Average over the identity and the horizontal and vertical flips.
        pad_to: Run the model on batches of exactly this many windows, padding ``x`` with zero
            windows whose outputs are dropped. Kernels may compute a window differently for
            another batch size (PyTorch's CPU convolutions give other last bits for a batch of 1
            than of 8), so a fixed size makes each window's probabilities independent of how many
            windows share its batch; the whole-scene and the streamed predictions rely on it to be
            bitwise equal. None: run ``x`` as it is.
    """
    count = x.shape[0]
    if pad_to is not None and count < pad_to:
        x = torch.cat([x, x.new_zeros((pad_to - count, *x.shape[1:]))])
    flips: list[tuple[int, ...]] = [()]
    if tta_flip:
        flips += [(-1,), (-2,)]  # horizontal, vertical
    total = None
    for dims in flips:
        logits = model(x.flip(dims) if dims else x)
        expected = (x.shape[0], num_classes, *x.shape[-2:])
        if not isinstance(logits, Tensor) or tuple(logits.shape) != expected:
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits)
            raise ValueError(
                f"model output must be logits (B, num_classes, T, T) = {expected}, got {got}"
            )
        probs = torch.softmax(logits.float(), dim=1)
        del logits  # one (N, K, T, T) temporary at a time
        probs = probs.flip(dims) if dims else probs
        total = probs if total is None else total.add_(probs)
    if len(flips) > 1:
        total.div_(len(flips))
    return total[:count]


def sliding_window_predict(
    model: Callable[[Tensor], Tensor],
    image: Tensor | np.ndarray | str | Path,
    num_classes: int,
    tile_size: int = 256,
    overlap: float = 0.5,
    stride: int | None = None,
    batch_size: int = 8,
    tta_flip: bool = False,
    blend: str = "gaussian",
    band_indexes: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    scale: float | None = None,
) -> Tensor:
    """Class probabilities of a whole scene from blended, overlapping windows.

    Every window (B of them per model call) is passed through ``model``, turned into softmax
    probabilities, weighted by :func:`window_weight` and summed into the scene; the sums are divided
    by the summed weights at the end. Windows cover every pixel: the last window of a row/column is
    shifted back to the border; a scene smaller than ``tile_size`` along an axis is padded by
    reflection at the bottom/right and the padding is cropped from the output. An ``nn.Module`` is
    run in eval mode (its previous mode is restored afterwards) under ``torch.inference_mode``.

    Args:
        model: Maps a batch (B, C, T, T) float32 to logits (B, num_classes, T, T).
        image: The scene: a (C, H, W) tensor/array (float, expected in [0, 1]; integer types are
            divided by their dtype max), or a raster path (anything rasterio opens, e.g.
            ``/vsizip/...``) read window by window, integer bands divided by their dtype max
            (uint8 / 255), float bands used as they are.
        num_classes: Number of classes K the model predicts.
        tile_size: Window side T (must suit the model, e.g. a multiple of its output stride).
        overlap: Overlapping fraction of consecutive windows, in [0, 1): the stride is
            ``round(T * (1 - overlap))``.
        stride: Distance between window starts in pixels; overrides ``overlap`` when given.
        batch_size: Windows per model call (the last batch is padded to this size, see
            :func:`window_probabilities`).
        tta_flip: Average the probabilities of the identity, the horizontal and the vertical flip
            (each output flipped back) instead of using the identity alone.
        blend: ``"gaussian"`` (centre pixels count more) or ``"mean"`` (uniform weight).
        band_indexes: 1-based bands to use, in model order (rasterio's convention; also applied to
            tensor/array input). None: all bands.
        device: Where the model runs (batches are moved there). None: the device of the model's
            first parameter, else the CPU.
        progress: Show a tqdm progress bar over the windows.
        scale: Divide the input by this value instead of the dtype max.

    Returns:
        Probabilities, shape (K, H, W), float32 on the CPU; they sum to 1 over K at each pixel.

    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if scale is not None and not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    step = resolve_stride(tile_size, overlap, stride)
    weight = window_weight(tile_size, blend)
    device = torch.device(device) if device is not None else model_device(model)
    if isinstance(image, str | Path):
        source = _RasterSource(image, band_indexes, scale)
    else:
        source = _ArraySource(image, band_indexes, scale)
    try:
        _, height, width = source.shape
        if height < 1 or width < 1:
            raise ValueError(f"image is empty: shape {source.shape}")
        windows = sliding_windows(height, width, tile_size, step)
        acc = torch.zeros(num_classes, height, width, dtype=torch.float32)
        norm = torch.zeros(height, width, dtype=torch.float32)
        bar = tqdm(total=len(windows), desc="windows", unit="win", disable=not progress)
        with eval_mode(model), torch.inference_mode(), bar:
            for start in range(0, len(windows), batch_size):
                batch = windows[start : start + batch_size]
                x = torch.stack(
                    [reflect_pad(source.read(*win), tile_size, tile_size) for win in batch]
                )
                probs = window_probabilities(
                    model, x.to(device), num_classes, tta_flip, pad_to=batch_size
                ).cpu()
                for p, win in zip(probs, batch):
                    blend_window(acc, norm, p, win, weight)
                bar.update(len(batch))
        return acc.div_(norm)
    finally:
        source.close()


def predict_labels(
    model: Callable[[Tensor], Tensor],
    image: Tensor | np.ndarray | str | Path,
    num_classes: int,
    **kwargs,
) -> Tensor:
    """Class indices of a whole scene: the argmax of :func:`sliding_window_predict`.

    Args:
        model: As in :func:`sliding_window_predict`.
        image: As in :func:`sliding_window_predict`.
        num_classes: Number of classes K.
        **kwargs: Any other argument of :func:`sliding_window_predict`.

    Returns:
        Labels, shape (H, W), int64.

    """
    return sliding_window_predict(model, image, num_classes, **kwargs).argmax(0)


def write_prediction_geotiff(
    labels: np.ndarray | Tensor,
    reference_path: str | Path,
    out_path: str | Path,
    palette: Sequence[Sequence[int]] | None = ISPRS_PALETTE,
    colour: bool = True,
) -> Path:
    """Write predicted labels as a GeoTIFF aligned with the scene they were predicted from.

    The output has the CRS, transform and size of ``reference_path``; it is deflate-compressed and
    tiled (256 x 256 blocks).

    Args:
        labels: Class indices, shape (H, W), values in [0, 255].
        reference_path: The input scene (any path rasterio opens); its size must be (H, W).
        out_path: Output file (parent folders are created).
        palette: RGB colour of each class. None writes the single-band index file.
        colour: True: 3-band uint8 RGB colour-coded labels (indices outside the palette are
            black); False: 1-band uint8 class indices, with the palette attached as a colour map.

    Returns:
        The path written.

    """
    arr = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"labels must have shape (H, W), got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise ValueError(f"labels must be in [0, 255], got [{arr.min()}, {arr.max()}]")
    with rasterio.open(reference_path) as ref:
        crs, transform, shape = ref.crs, ref.transform, (ref.height, ref.width)
    if arr.shape != shape:
        raise ValueError(
            f"labels have shape {arr.shape} but the reference {reference_path} is {shape} (H, W)"
        )
    colour = colour and palette is not None
    data = encode_palette(arr, palette) if colour else arr.astype(np.uint8)[None]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "height": shape[0],
        "width": shape[1],
        "count": data.shape[0],
        "dtype": "uint8",
        "crs": crs,
        "transform": transform,
        "compress": "deflate",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    if colour:
        profile["photometric"] = "RGB"
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
        if not colour and palette is not None:
            dst.write_colormap(1, {i: (*map(int, rgb), 255) for i, rgb in enumerate(palette)})
    return out


__all__ = [
    "BLEND_MODES",
    "blend_window",
    "eval_mode",
    "model_device",
    "predict_labels",
    "reflect_pad",
    "resolve_stride",
    "sliding_window_predict",
    "sliding_windows",
    "window_probabilities",
    "window_starts",
    "window_weight",
    "write_prediction_geotiff",
]
