"""Peak memory of streamed prediction on a large scene, against the scene's size.

python -m glcnet.bench.predict_memory --size 12000 [--height 3000] [--block-width 4096]

The parent writes a synthetic ``size x height`` GeoTIFF (``bands`` uint8 bands, tiled, compressed),
then runs the prediction in a fresh child process (``python -m glcnet.bench.predict_memory --child``)
so that nothing else counts: the child loads a trivial per-pixel model (a 1x1 convolution: the model
is not what is measured), notes its resident memory, runs
:func:`glcnet.prediction.run.predict_scene` (class COG + probabilities) and reports its peak
resident memory (``VmHWM`` from ``/proc/self/status``, or ``ru_maxrss``).

Reported: the peak, the memory added by the prediction (peak minus the resident memory before it),
the scene's bytes (``H * W * bands``), the bytes of the whole-scene accumulator that
:func:`glcnet.inference.sliding_window_predict` would hold (``4 * (K + 1) * H * W``), and what the
column blocks cost: windows computed again at block borders, as a share of the scene's windows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from glcnet.prediction.streaming import DEFAULT_BLOCK_WIDTH


def _rss_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MB (``ru_maxrss`` where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_scene(
    path: Path, size: int, bands: int, height: int | None = None, rows_per_write: int = 512
) -> Path:
    """A georeferenced uint8 scene with gradients and blocks, written in strips.

    Args:
        path: Output GeoTIFF.
        size: Width in pixels.
        bands: Number of bands.
        height: Height in pixels (default: ``size``).
        rows_per_write: Rows per strip written.
    """
    import rasterio
    from affine import Affine

    height = size if height is None else height

    profile = {
        "driver": "GTiff", "height": height, "width": size, "count": bands, "dtype": "uint8",
        "crs": "EPSG:32633", "transform": Affine(0.05, 0, 366000.0, 0, -0.05, 5808000.0),
        "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
        "bigtiff": "if_safer", "photometric": "minisblack",  # no band tagged alpha
    }  # fmt: skip
    cols = np.arange(size)
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, height, rows_per_write):
            rows = np.arange(top, min(top + rows_per_write, height))[:, None]
            strip = np.stack(
                [((rows // (97 + 31 * b) + cols // (89 + 17 * b)) * 37 % 256) for b in range(bands)]
            ).astype(np.uint8)
            dst.write(strip, window=rasterio.windows.Window(0, top, size, len(rows)))
    return path


def _child(args: argparse.Namespace) -> None:
    import torch
    from torch import nn

    from glcnet.prediction.run import PredictOptions, predict_scene
    from glcnet.prediction.settings import PredictionSettings, default_palette

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nn.Conv2d(args.bands, args.classes, 1)
    settings = PredictionSettings(
        num_classes=args.classes,
        class_names=tuple(f"c{i}" for i in range(args.classes)),
        palette=default_palette(args.classes),
        tile_size=args.tile,
        in_channels=args.bands,
    )
    options = PredictOptions(
        probabilities=True,
        progress=False,
        batch_size=args.batch,
        block_width=args.block_width or None,
    )
    before = _rss_mb("VmRSS")
    t0 = time.perf_counter()
    result = predict_scene(model, settings, args.scene, args.out, options)
    seconds = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "rss_before_MB": before,
                "peak_rss_MB": _rss_mb("VmHWM"),
                "seconds": seconds,
                "windows": result.stats.windows,
                "window_visits": result.stats.visits,
                "extra_windows_pct": 100 * result.stats.extra_windows,
                "column_blocks": result.stats.column_blocks,
                "buffer_rows": result.stats.buffer_rows,
                "buffer_cols": result.stats.buffer_cols,
            }
        )
    )


def bench_predict_memory(
    size: int = 12000,
    height: int | None = None,
    bands: int = 4,
    classes: int = 6,
    tile: int = 256,
    batch: int = 8,
    threads: int = 1,
    workdir: str | Path | None = None,
    block_width: int | None = DEFAULT_BLOCK_WIDTH,
) -> dict:
    """Predict a synthetic scene in a child process and report its memory.

    Args:
        size: Scene width in pixels.
        height: Scene height (default: ``size``). The added memory should not depend on it.
        bands: uint8 bands of the scene (4: RGBIR).
        classes: Classes K of the trivial model.
        tile: Window side (overlap 0.5).
        batch: Windows per model call.
        threads: Torch threads of the child.
        workdir: Where the scene and outputs go (a temporary folder if None; removed after).
        block_width: Columns predicted at a time (``predict.py block_width=``); None: the whole
            width.

    Returns:
        The child's figures plus ``scene_MB``, ``whole_scene_accumulator_MB``,
        ``added_MB`` (peak - before) and the ratios ``peak_vs_scene``, ``added_vs_scene``,
        ``added_vs_accumulator``.
    """
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        height = size if height is None else height
        scene = write_scene(Path(tmp) / "scene.tif", size, bands, height)
        cmd = [
            sys.executable, "-m", "glcnet.bench.predict_memory", "--child",
            "--scene", str(scene), "--out", str(Path(tmp) / "out"), "--bands", str(bands),
            "--classes", str(classes), "--tile", str(tile), "--batch", str(batch),
            "--threads", str(threads), "--block-width", str(block_width or 0),
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"prediction child failed:\n{res.stderr[-3000:]}")
        out = json.loads(res.stdout.strip().splitlines()[-1])
    scene_mb = size * height * bands / 2**20
    acc_mb = 4 * (classes + 1) * size * height / 2**20
    added = out["peak_rss_MB"] - out["rss_before_MB"]
    out.update(
        size=size,
        height=height,
        bands=bands,
        classes=classes,
        tile=tile,
        block_width=block_width,
        scene_MB=scene_mb,
        whole_scene_accumulator_MB=acc_mb,
        added_MB=added,
        peak_vs_scene=out["peak_rss_MB"] / scene_mb,
        added_vs_scene=added / scene_mb,
        added_vs_accumulator=added / acc_mb,
    )
    return out


def main() -> None:
    """``python -m glcnet.bench.predict_memory [--size N]`` (``--child`` is the measured run)."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--child", action="store_true")
    p.add_argument("--scene")
    p.add_argument("--out")
    p.add_argument("--size", type=int, default=12000)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--bands", type=int, default=4)
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--block-width", type=int, default=DEFAULT_BLOCK_WIDTH, help="0: the whole width"
    )
    args = p.parse_args()
    if args.child:
        _child(args)
    else:
        out = bench_predict_memory(
            args.size,
            args.height,
            args.bands,
            args.classes,
            args.tile,
            args.batch,
            args.threads,
            block_width=args.block_width or None,
        )
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
