"""Numpy building blocks of the paired views: crop geometry with index maps, and colour ops.

Geometry is expressed through *index maps*: for every pixel of a view, the (row, col) of the source
pixel it was sampled from. A view is built by first computing its index map (random resized crop with
nearest-neighbour sampling, then horizontal flip, then ``k`` counter-clockwise quarter turns) and
then gathering the source image with it, so that image and index map agree exactly by construction.

Nearest-neighbour sampling follows the half-pixel convention (as ``torch.nn.functional.interpolate``
with ``mode="nearest-exact"``): view pixel ``i`` of a crop ``[row0, row0 + h)`` resized to ``size``
samples source row ``row0 + floor((i + 0.5) * h / size)``.

Colour ops work on float32 (C, H, W) arrays in [0, 1] with C >= 3 and clip their result to [0, 1].
Brightness, contrast, blur and noise act on every band. Saturation, hue and grayscale act on the
first three bands only, taken as RGB; any further band (the IR band of RGBIR tiles) is left as is.
For 3-band IRRG tiles the three bands are treated as if they were RGB (false colour), which is what a
standard colour augmentation does to such images.

All randomness comes from a passed ``numpy.random.Generator``; nothing touches global RNG state.

Why these colour ops and not albumentations' (``python -m glcnet.bench.view_ops``, also section (c)
of ``make bench``; 224 px 4-band views, one core, albumentations 2.0.8 in its own (H, W, C) layout
with the layout conversion not counted, RGB-only ops through
:class:`glcnet.data.seg_augment.RGBOnly`). albumentations is slower for every op, so we keep ours:

- Colour jitter, ``A.ColorJitter``: 0.07-0.08x our speed (four full passes with an HSV round trip
  for the hue, against one composed affine map). Same law of the factors (uniform in
  ``[max(0, 1 - v), 1 + v]``, hue uniform in ``[-h, h]``, random order), but other semantics: it
  takes 1 or 3 bands only, so on RGBIR tiles brightness and contrast would leave the IR band as is,
  where ours scales it too; contrast blends with one grey mean (ours: each band's own mean); the
  hue shift is an exact HSV rotation (ours: the YIQ approximation, :func:`hue_matrix`); values are
  clipped after every op (ours: once, see :func:`color_jitter`).
- Grayscale, ``A.ToGray``: 0.2-0.3x. Same semantics (the same luma weights, equal to 6e-8; IR left
  as is when wrapped in ``RGBOnly``, since ``A.ToGray`` refuses 4 bands). Even on a plain 3-band
  input with no wrapper, one call (80-100 us, mostly per-call overhead) is no faster than our whole
  op (about 75 us).
- Gaussian blur, ``A.GaussianBlur``: 0.7x, before the (C, H, W) <-> (H, W, C) copies it would need
  here (about as costly as the blur). For a given kernel side and sigma the output is identical
  (same kernel formula, reflect-101 border), but the side's law differs: ``blur_limit=(3, 7)``
  draws an integer in 3..7 and rounds even sides up, so 3, 5, 7 come with 1/5, 2/5, 2/5 (ours:
  uniform over ``blur_kernels``, any set of sides); sigma is uniform in both.
- Noise, ``A.GaussNoise(std_range=(s, s))``: 0.3-0.5x. Exact normal noise on every band, clipped to
  [0, 1]; ours draws the normal quantised to 65536 values, tails cut at 4.3 sigma
  (:func:`standard_normal`), about 5x faster to draw, on every band, clipped alike.

The whole view pipeline with albumentations' four ops instead of ours makes 0.33-0.38x our pairs/s.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence

import cv2
import numpy as np

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R 601 luma weights of (R, G, B), as in PIL / torchvision grayscale."""

_RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float64
)


def sample_crop(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.4, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """Draw a random resized crop rectangle (the RandomResizedCrop rule of torchvision).

    The area fraction is uniform in ``scale``, the aspect ratio w / h log-uniform in ``ratio``; when
    ``attempts`` draws do not fit, fall back to a central crop of the clamped aspect ratio.

    Args:
        rng: Random generator.
        height: Source height in pixels.
        width: Source width in pixels.
        scale: Range of the crop area as a fraction of the source area.
        ratio: Range of the crop aspect ratio w / h.
        attempts: Draws before the fallback.

    Returns:
        ``(row0, col0, h, w)`` integers with the crop inside the source.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            row0 = int(rng.integers(0, height - h + 1))
            col0 = int(rng.integers(0, width - w + 1))
            return row0, col0, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        h, w = height, width
    h, w = max(1, min(h, height)), max(1, min(w, width))
    return (height - h) // 2, (width - w) // 2, h, w


def crop_axis_index(start: int, length: int, size: int) -> np.ndarray:
    """Source positions sampled along one axis by a crop resized with nearest neighbour.

    Args:
        start: First source pixel of the crop.
        length: Crop length in source pixels.
        size: Output length in view pixels.

    Returns:
        (size,) int64: ``start + floor((i + 0.5) * length / size)``.
    """
    i = np.arange(size, dtype=np.int64)
    # integer arithmetic: floor(((2i + 1) * length) / (2 * size)), exact for any sizes
    return start + ((2 * i + 1) * length) // (2 * size)


def index_map(
    crop: Sequence[int], size: int, flip: bool = False, rot: int = 0, dtype=np.int32
) -> np.ndarray:
    """Source (row, col) of every view pixel for a crop, resize, horizontal flip and rotation.

    Args:
        crop: ``(row0, col0, h, w)`` crop rectangle in source pixels.
        size: Side of the square view.
        flip: Mirror left-right after the resize.
        rot: Number of counter-clockwise quarter turns (``np.rot90``) after the flip, 0-3.
        dtype: Integer dtype of the map.

    Returns:
        (2, size, size) array: ``[0]`` source rows, ``[1]`` source columns.
    """
    row0, col0, h, w = (int(v) for v in crop)
    rows = crop_axis_index(row0, h, size).astype(dtype)
    cols = crop_axis_index(col0, w, size).astype(dtype)
    grid = np.empty((2, size, size), dtype=dtype)
    grid[0] = rows[:, None]
    grid[1] = cols[None, :]
    if flip:
        grid = grid[:, :, ::-1]
    if rot % 4:
        grid = np.rot90(grid, rot % 4, axes=(1, 2))
    return np.ascontiguousarray(grid)


def gather(image: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Sample a (C, H, W) image at an index map.

    Args:
        image: (C, H, W) source.
        index: (2, S, S) integer source (row, col) per output pixel.

    Returns:
        (C, S, S) array with ``out[:, y, x] = image[:, index[0, y, x], index[1, y, x]]``.
    """
    flat = np.ascontiguousarray(image).reshape(image.shape[0], -1)
    linear = index[0].astype(np.intp) * image.shape[2] + index[1]
    return np.take(flat, linear, axis=1)


def _rgb(x: np.ndarray) -> np.ndarray:
    if x.ndim != 3 or x.shape[0] < 3:
        raise ValueError(f"colour ops need a (C>=3, H, W) array, got shape {x.shape}")
    return x[:3]


def adjust_brightness(x: np.ndarray, factor: float) -> np.ndarray:
    """Scale every band by ``factor``; clipped to [0, 1]. Shape (C, H, W) -> (C, H, W)."""
    return np.clip(x * np.float32(factor), 0.0, 1.0)


def adjust_contrast(x: np.ndarray, factor: float) -> np.ndarray:
    """Blend every band with its own spatial mean: ``m + factor * (x - m)``; clipped to [0, 1].

    Each band keeps its mean (torchvision blends RGB with one grey mean instead; a per-band mean
    keeps the IR band's level independent of the visible bands). Shape (C, H, W) -> (C, H, W).
    """
    mean = x.reshape(x.shape[0], -1).mean(axis=1, dtype=np.float64).astype(np.float32)
    f = np.float32(factor)
    return np.clip(f * x + ((1 - f) * mean)[:, None, None], 0.0, 1.0)


def luma(x: np.ndarray) -> np.ndarray:
    """Grey level of the RGB bands (first three): (C, H, W) -> (H, W)."""
    rgb = _rgb(x)
    return np.tensordot(LUMA, rgb, axes=(0, 0)).astype(np.float32, copy=False)


def adjust_saturation(x: np.ndarray, factor: float) -> np.ndarray:
    """Blend the RGB bands with their grey level; other bands unchanged; clipped to [0, 1].

    ``factor`` 0 gives grey, 1 the input. Shape (C, H, W) -> (C, H, W).
    """
    grey = luma(x)
    out = x.copy()
    f = np.float32(factor)
    out[:3] = np.clip(f * x[:3] + (1 - f) * grey[None], 0.0, 1.0)
    return out


def hue_matrix(shift: float) -> np.ndarray:
    """3x3 RGB matrix rotating the chroma (I, Q of YIQ) by ``shift`` turns around the grey axis.

    Luma (Y) and chroma magnitude are kept, grey pixels are fixed points; a fast linear
    approximation of an HSV hue shift by the same fraction of the colour circle.
    """
    a = 2.0 * math.pi * shift
    rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    return (np.linalg.inv(_RGB_TO_YIQ) @ rot @ _RGB_TO_YIQ).astype(np.float32)


def adjust_hue(x: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the hue of the RGB bands by ``shift`` turns (see :func:`hue_matrix`).

    Other bands are unchanged; clipped to [0, 1]. Shape (C, H, W) -> (C, H, W).
    """
    rgb = _rgb(x)
    out = x.copy()
    c, h, w = rgb.shape
    out[:3] = (hue_matrix(shift) @ rgb.reshape(3, -1)).reshape(3, h, w)
    np.clip(out[:3], 0.0, 1.0, out=out[:3])
    return out


def to_grayscale(x: np.ndarray) -> np.ndarray:
    """Replace each RGB band by the grey level; other bands unchanged. (C, H, W) -> (C, H, W)."""
    out = x.copy()
    out[:3] = luma(x)[None]
    return out


def gaussian_blur(x: np.ndarray, kernel: int, sigma: float) -> np.ndarray:
    """Gaussian blur of every band (reflect-101 border). (C, H, W) -> (C, H, W).

    Args:
        x: float32 image.
        kernel: Odd kernel side.
        sigma: Standard deviation in pixels.
    """
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"blur kernel must be a positive odd integer, got {kernel}")
    out = np.empty_like(x)
    for band in range(x.shape[0]):
        out[band] = cv2.GaussianBlur(
            x[band], (kernel, kernel), sigma, borderType=cv2.BORDER_REFLECT_101
        )
    return out


@functools.cache
def _normal_quantiles(bits: int = 16) -> np.ndarray:
    """Read-only table of the standard normal quantiles at ``(k + 0.5) / 2**bits``."""
    inv_cdf = statistics.NormalDist().inv_cdf
    n = 1 << bits
    half = np.array([inv_cdf((k + 0.5) / n) for k in range(n // 2)], dtype=np.float32)
    table = np.concatenate([half, -half[::-1]])
    table.setflags(write=False)
    return table


def standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Fast float32 standard normal samples: the normal quantile of a uniform 16-bit integer.

    The distribution is the standard normal quantised to 65536 equally likely values (tails cut
    at about 4.3 sigma), drawn about 5x faster than ``rng.standard_normal``.
    """
    u = rng.integers(0, 1 << 16, size=shape, dtype=np.uint16)
    return np.take(_normal_quantiles(), u)


def add_noise(x: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Add i.i.d. Gaussian noise (:func:`standard_normal`) of standard deviation ``std``.

    Every pixel of every band; clipped to [0, 1]. (C, H, W) -> (C, H, W).
    """
    noise = standard_normal(rng, x.shape)
    noise *= np.float32(std)
    noise += x
    return np.clip(noise, 0.0, 1.0, out=noise)


def sample_jitter(
    rng: np.random.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
) -> list[tuple[str, float]]:
    """Draw colour-jitter factors and their random order (torchvision's rule).

    Factors are uniform in ``[max(0, 1 - v), 1 + v]`` for brightness, contrast and saturation, the
    hue shift uniform in ``[-hue, hue]`` turns; a strength of 0 leaves that op out.

    Returns:
        ``[(op, factor), ...]`` in the order to apply, ``op`` one of ``brightness``, ``contrast``,
        ``saturation``, ``hue``.
    """
    ranges = []
    for name, v in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if v > 0:
            ranges.append((name, max(0.0, 1 - v), 1 + v))
    if hue > 0:
        ranges.append(("hue", -hue, hue))
    return [
        (ranges[j][0], float(rng.uniform(ranges[j][1], ranges[j][2])))
        for j in rng.permutation(len(ranges))
    ]


def jitter_affine(ops: list[tuple[str, float]], mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compose jitter ops into one per-pixel affine map of the bands, ``x -> M @ x + b``.

    Every op is affine in the band values; contrast needs the band means of its input, which are the
    running affine map applied to the input means.

    Args:
        ops: ``[(op, factor), ...]`` as from :func:`sample_jitter`.
        mean: (C,) band means of the input image.

    Returns:
        ``M`` (C, C) and ``b`` (C,), float64.
    """
    bands = mean.shape[0]
    m, b = np.eye(bands), np.zeros(bands)
    mean = mean.astype(np.float64)
    for op, f in ops:
        if op == "brightness":
            m, b = f * m, f * b
        elif op == "contrast":
            m, b = f * m, f * b + (1 - f) * (m @ mean + b)
        elif op in ("saturation", "hue"):
            colour = np.eye(bands)
            if op == "saturation":
                colour[:3, :3] = f * np.eye(3) + (1 - f) * LUMA.astype(np.float64)[None, :]
            else:
                colour[:3, :3] = hue_matrix(f)
            m, b = colour @ m, colour @ b
        else:
            raise ValueError(f"unknown jitter op {op!r}")
    return m, b


def color_jitter(
    x: np.ndarray,
    rng: np.random.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
) -> np.ndarray:
    """Random brightness, contrast, saturation and hue changes in a random order, as one affine map.

    The ops (:func:`sample_jitter`) are composed into one band-mixing affine map
    (:func:`jitter_affine`) applied in a single pass and clipped to [0, 1] once at the end;
    applying :func:`adjust_brightness` etc. one after the other gives the same result unless an
    intermediate value leaves [0, 1] (torchvision clips after every op). About 4x faster.

    Args:
        x: (C, H, W) float32 in [0, 1], C >= 3 (first three bands RGB).
        rng: Random generator.
        brightness: Strength of the brightness change.
        contrast: Strength of the contrast change.
        saturation: Strength of the saturation change.
        hue: Largest hue shift in turns (at most 0.5).

    Returns:
        (C, H, W) float32 in [0, 1].
    """
    _rgb(x)
    ops = sample_jitter(rng, brightness, contrast, saturation, hue)
    if not ops:
        return x
    c, h, w = x.shape
    flat = x.reshape(c, -1)
    m, b = jitter_affine(ops, flat.mean(axis=1, dtype=np.float64))
    out = m.astype(np.float32) @ flat
    out += b.astype(np.float32)[:, None]
    return np.clip(out, 0.0, 1.0, out=out).reshape(c, h, w)
