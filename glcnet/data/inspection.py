"""Look at a data set the way the pipeline reads it: what ``scripts/inspect_data.py`` prints.

Per split: scenes, tiles (and all-nodata tiles left out), the class pixel histogram decoded by the
data set's one label reader, the ignore and nodata shares, and per band the dtype, value range,
mean and standard deviation. Scenes are streamed window by window (bounded memory); band statistics
come from a seeded random sample of windows when the split holds more than ``band_pixels`` pixels.
Warnings flag what looks wrong: a class that never occurs, more than half the pixels ignored, a
constant band, integer bands that use a small part of their dtype's range (the model divides by
the dtype maximum, see :func:`glcnet.data.raster.to_unit_float`), float bands outside [0, 1].
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rasterio.windows import Window
from tqdm import tqdm

from glcnet.data.errors import EmptySplitError, MissingDataError
from glcnet.data.tiling import SceneTileDataset

#: Share of a split's pixels above which "ignored" is warned about.
IGNORE_WARN_SHARE = 0.5
#: Integer bands whose largest value is below this fraction of the dtype maximum are warned about.
RANGE_WARN_FRACTION = 0.25


@dataclass
class BandStats:
    """Statistics of one band over the valid pixels read (raw values, before scaling).

    Attributes:
        name: Band name (e.g. ``R`` or ``B1``).
        index: 1-based band index in the files.
        dtype: Numpy dtype of the files' pixels.
        min: Smallest value read.
        max: Largest value read.
        mean: Mean value.
        std: Standard deviation.
        scale: What the model input divides the values by (1 for float bands).

    """

    name: str
    index: int
    dtype: str
    min: float
    max: float
    mean: float
    std: float
    scale: float


@dataclass
class SplitReport:
    """What :func:`inspect_split` found in one split.

    Attributes:
        split: Split name.
        scenes: Number of scenes.
        tiles: Number of tiles (all-nodata tiles left out).
        nodata_tiles: Tiles left out because every pixel is nodata.
        pixels: Scene pixels in all.
        class_counts: Pixels per class (labeled data sets), index order.
        ignored: Pixels read as ``ignore_index`` (nodata pixels included).
        nodata: Image nodata pixels.
        band_pixels: Valid pixels the band statistics were computed from.
        bands: Per-band statistics.
        warnings: What looks wrong, one line each.

    """

    split: str
    scenes: int
    tiles: int
    nodata_tiles: int
    pixels: int
    class_counts: list[int] = field(default_factory=list)
    ignored: int = 0
    nodata: int = 0
    band_pixels: int = 0
    bands: list[BandStats] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def scene_windows(height: int, width: int, block: int) -> list[Window]:
    """Non-overlapping windows of at most ``block`` px covering a scene, row by row."""
    return [
        Window(c, r, min(block, width - c), min(block, height - r))
        for r in range(0, height, block)
        for c in range(0, width, block)
    ]


class _Moments:
    """Running count, sum, sum of squares, min and max per band (float64)."""

    def __init__(self, bands: int) -> None:
        self.n = 0
        self.sum = np.zeros(bands)
        self.sq = np.zeros(bands)
        self.min = np.full(bands, np.inf)
        self.max = np.full(bands, -np.inf)

    def add(self, values: np.ndarray) -> None:
        """Add pixels, shape (bands, N)."""
        if values.shape[1] == 0:
            return
        v = values.astype(np.float64)
        self.n += v.shape[1]
        self.sum += v.sum(1)
        self.sq += (v * v).sum(1)
        self.min = np.minimum(self.min, v.min(1))
        self.max = np.maximum(self.max, v.max(1))


def inspect_split(
    ds: SceneTileDataset,
    split: str,
    block: int = 512,
    band_pixels: int = 2_000_000,
    seed: int = 0,
    progress: bool = True,
) -> SplitReport:
    """Stream over every scene of a split and summarise it.

    Args:
        ds: The split's data set (labeled or not).
        split: Its name (for messages).
        block: Side of the windows scenes are read in.
        band_pixels: About how many pixels band statistics are computed from; windows are drawn at
            random (seeded) with probability ``band_pixels / split pixels`` when that is below 1.
        seed: Seed of the window draw.
        progress: Show a progress bar over the windows.

    Returns:
        The report, warnings included.

    """
    k = ds.num_classes
    windows = [
        (scene, w) for scene in ds.scenes for w in scene_windows(*ds.scene_size(scene), block)
    ]
    pixels = sum(int(w.width * w.height) for _, w in windows)
    share = min(1.0, band_pixels / max(pixels, 1))
    rng = np.random.default_rng(seed)
    chosen = rng.random(len(windows)) < share
    if not chosen.any():
        chosen[rng.integers(len(windows))] = True
    counts = np.zeros(k, dtype=np.int64)
    ignored = nodata = 0
    moments = _Moments(len(ds.band_indexes))
    dtype = None
    bar = tqdm(windows, desc=f"inspecting {split}", unit="win", disable=not progress, leave=False)
    for (scene, window), take in zip(bar, chosen, strict=True):
        valid = ds.read_valid(scene, window)
        if valid is not None:
            nodata += int((~valid).sum())
        if ds.labeled:
            labels = ds.read_labels(scene, window)
            hits = labels == ds.ignore_index
            ignored += int(hits.sum())
            counts += np.bincount(labels[~hits], minlength=k)[:k]
        if take:
            image = ds.read_image(scene, window)
            dtype = image.dtype
            flat = image.reshape(image.shape[0], -1)
            moments.add(flat if valid is None else flat[:, valid.ravel()])
    report = SplitReport(
        split=split,
        scenes=len(ds.scenes),
        tiles=len(ds),
        nodata_tiles=ds.nodata_tiles_dropped,
        pixels=pixels,
        class_counts=counts.tolist() if ds.labeled else [],
        ignored=ignored,
        nodata=nodata,
        band_pixels=moments.n,
        bands=_band_stats(ds, moments, dtype),
    )
    report.warnings = split_warnings(report, ds)
    return report


def _band_stats(ds: SceneTileDataset, m: _Moments, dtype: np.dtype | None) -> list[BandStats]:
    if m.n == 0 or dtype is None:
        return []
    mean = m.sum / m.n
    std = np.sqrt(np.maximum(m.sq / m.n - mean * mean, 0.0))
    scale = float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0
    return [
        BandStats(
            name, int(idx), np.dtype(dtype).name, float(lo), float(hi), float(mu), float(sd), scale
        )
        for name, idx, lo, hi, mu, sd in zip(
            ds.band_names, ds.band_indexes, m.min, m.max, mean, std, strict=True
        )
    ]


def split_warnings(report: SplitReport, ds: SceneTileDataset) -> list[str]:
    """What looks wrong in a split, one line each (see the module docstring)."""
    out = []
    where = f"split {report.split!r}"
    if ds.labeled:
        for c, n in enumerate(report.class_counts):
            if n == 0:
                out.append(f"{where}: class {c} ({ds.class_names[c]}) never occurs in its masks")
        if report.pixels and report.ignored / report.pixels > IGNORE_WARN_SHARE:
            out.append(
                f"{where}: {100 * report.ignored / report.pixels:.1f} % of the pixels are ignored "
                f"({report.ignored:,} of {report.pixels:,}; ignore_index={ds.ignore_index}, "
                f"ignored mask values and image nodata); check the mask settings "
                f"(palette, ignore_values)"
            )
    for b in report.bands:
        if b.min == b.max:
            out.append(f"{where}: band {b.name} (band {b.index}) is constant ({_num(b.min)})")
        elif b.scale > 255 and b.max < RANGE_WARN_FRACTION * b.scale:
            out.append(
                f"{where}: band {b.name} ({b.dtype}) uses only {_num(b.min)}..{_num(b.max)} of "
                f"0..{_num(b.scale)}; the model input is value / {_num(b.scale)}, i.e. at most "
                f"{b.max / b.scale:.3f}: rescale the images to their dtype's range (e.g. "
                f"gdal_translate -scale {_num(b.min)} {_num(b.max)} 0 {_num(b.scale)}) or store "
                f"them as uint8"
            )
        elif b.scale == 1.0 and (b.min < 0 or b.max > 1):
            out.append(
                f"{where}: float band {b.name} holds {_num(b.min)}..{_num(b.max)}; float bands are "
                f"used as they are (expected in [0, 1]), so scale them before training"
            )
    return out


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else round(float(v), 4)


def format_report(report: SplitReport, ds: SceneTileDataset) -> str:
    """The printed form of a split's report (fixed-width table)."""
    lines = [
        f"== split {report.split}: {report.scenes} scenes, {report.tiles} tiles of "
        f"{ds.tile_size} px (stride {ds.stride})"
        + (f", {report.nodata_tiles} all-nodata tiles left out" if report.nodata_tiles else ""),
    ]
    if ds.labeled:
        labeled = sum(report.class_counts)
        width = max(len(n) for n in ds.class_names) + 4
        lines.append(f"  {'class':<{width}} {'pixels':>14} {'%':>7}")
        for c, (name, n) in enumerate(zip(ds.class_names, report.class_counts, strict=True)):
            lines.append(f"  {f'{c} {name}':<{width}} {n:>14,} {_pct(n, labeled):>7}")
        lines.append(
            f"  {'ignored':<{width}} {report.ignored:>14,} {_pct(report.ignored, report.pixels):>7}"
            f"  (of all {report.pixels:,} pixels; class % are of the labeled ones)"
        )
    lines.append(
        f"  nodata: {report.nodata:,} pixels ({_pct(report.nodata, report.pixels).strip()} %)"
    )
    if report.bands:
        sampled = (
            "all valid pixels"
            if report.band_pixels >= report.pixels - report.nodata
            else f"a sample of {report.band_pixels:,} valid pixels"
        )
        lines.append(f"  bands ({sampled}):")
        lines.append(
            f"  {'band':<8} {'dtype':<8} {'min':>10} {'max':>10} {'mean':>10} {'std':>10} "
            f"{'input = value /':>16}"
        )
        for b in report.bands:
            lines.append(
                f"  {b.name:<8} {b.dtype:<8} {_num(b.min):>10} {_num(b.max):>10} "
                f"{b.mean:>10.3f} {b.std:>10.3f} {_num(b.scale):>16}"
            )
    lines.extend(f"  WARNING: {w}" for w in report.warnings)
    return "\n".join(lines)


def _pct(n: int, total: int) -> str:
    return "n/a" if total == 0 else f"{100.0 * n / total:.2f}"


def describe_data(ds: SceneTileDataset, root: str) -> str:
    """Header lines: data set, bands, mask reading, classes."""
    bands = ", ".join(
        f"{n} (band {i})" for n, i in zip(ds.band_names, ds.band_indexes, strict=True)
    )
    lines = [
        f"data: {type(ds).__name__} at {root}",
        f"bands: {bands}",
        f"classes ({ds.num_classes}): {', '.join(ds.class_names)}",
    ]
    if ds.labeled:
        lines.append(f"masks: {ds.mask_spec.describe()}; ignore_index={ds.ignore_index}")
    nodata = getattr(ds, "image_nodata", "none")
    lines.append(f"image nodata: {nodata}")
    return "\n".join(lines)


def inspect_data(
    data,
    splits: list[str],
    labeled: bool = True,
    block: int = 512,
    band_pixels: int = 2_000_000,
    seed: int = 0,
    progress: bool = True,
    out: Path | None = None,
    print_fn=print,
) -> dict:
    """Inspect the splits of a :class:`~glcnet.data.tile_data.TileData`; print and return them.

    Splits the data set does not have (e.g. no ``test/`` folder) are reported and skipped; any
    other data error propagates (the script prints it in one line).

    Args:
        data: The ``TileData`` built from the ``data`` config.
        splits: Split names.
        labeled: Read the masks (False: images only, e.g. unlabeled pretraining data).
        block: Window side for streaming.
        band_pixels: About how many pixels band statistics use per split.
        seed: Seed of the window sample.
        progress: Progress bars.
        out: When given, ``inspection.json`` is written there.
        print_fn: Where lines go.

    Returns:
        ``{"splits": {name: report dict}, "skipped": {name: reason}, "warnings": [...]}``.

    """
    result: dict = {"splits": {}, "skipped": {}, "warnings": []}
    header = False
    for split in splits:
        try:
            ds = data.dataset(split, labeled=labeled)
        except (MissingDataError, EmptySplitError) as err:
            result["skipped"][split] = str(err)
            print_fn(f"== split {split}: not available ({err})")
            continue
        if not header:
            print_fn(describe_data(ds, str(data.root)))
            result["data"] = ds.describe()
            header = True
        report = inspect_split(ds, split, block, band_pixels, seed, progress)
        print_fn(format_report(report, ds))
        result["splits"][split] = asdict(report)
        result["warnings"].extend(report.warnings)
    n = len(result["warnings"])
    print_fn(f"{n} warning{'s' if n != 1 else ''}" + (": see WARNING lines above" if n else ""))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "inspection.json").write_text(json.dumps(_finite(result), indent=1))
    return result


def _finite(obj):
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


__all__ = ["BandStats", "SplitReport", "format_report", "inspect_data", "inspect_split"]
