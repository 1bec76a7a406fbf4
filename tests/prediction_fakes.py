"""Shared fixtures of the prediction tests: georeferenced rasters, stub models, a checkpoint run."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning
from torch import nn

from glcnet.prediction.settings import PredictionSettings

CRS = "EPSG:32632"
TRANSFORM = Affine(0.25, 0.0, 368000.0, 0.0, -0.25, 5808000.0)
NAMES = ("road", "roof", "grass")
PALETTE = ((128, 128, 128), (200, 0, 0), (0, 180, 0))


def write_raster(path: Path, data: np.ndarray, crs=CRS, transform=TRANSFORM, **profile) -> Path:
    """Write a (C, H, W) array as a GeoTIFF (``crs=None, transform=None``: not georeferenced)."""
    c, h, w = data.shape
    extra = {"crs": crs} if crs is not None else {}
    if transform is not None:
        extra["transform"] = transform
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path, "w", driver=profile.pop("driver", "GTiff"), height=h, width=w, count=c,
            dtype=data.dtype, **extra, **profile,
        ) as dst:  # fmt: skip
            dst.write(data)
    return path


def settings(k: int = 3, tile: int = 32, bands: int = 3, names=None, palette=None):
    """Prediction settings for a stub model."""
    return PredictionSettings(
        num_classes=k,
        class_names=tuple(names or NAMES[:k]),
        palette=tuple(palette or PALETTE[:k]),
        tile_size=tile,
        in_channels=bands,
        band_indexes=tuple(range(1, bands + 1)),
    )


class ContextNet(nn.Module):
    """A small convolutional net with spatial context (3x3 convs), fixed random weights."""

    def __init__(self, c_in: int = 3, k: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Conv2d(c_in, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, k, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 4 * self.net(x)


class ThresholdModel(nn.Module):
    """Predicts from pixel values: class ``min(floor(band1 * K), K - 1)``, with confident logits.

    Every window (and flip) agrees on each pixel, so the blended argmax is exactly this function of
    the pixel. Counts the windows it is given.
    """

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.k = k
        self.windows_seen = 0
        self.batches = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows_seen += x.shape[0]
        self.batches += 1
        cls = (x[:, 0] * self.k).floor().clamp(0, self.k - 1).long()
        return 20.0 * nn.functional.one_hot(cls, self.k).permute(0, 3, 1, 2).float()


def expected_classes(band1: np.ndarray, k: int = 3) -> np.ndarray:
    """What :class:`ThresholdModel` predicts for uint8 band-1 values."""
    return np.clip(np.floor(band1.astype(np.float32) / np.float32(255) * k), 0, k - 1)


def make_run(run_dir: Path, *overrides: str, root: Path) -> Path:
    """A fine-tuning checkpoint as finetune.py writes it, without the training (fast).

    The untrained weights of the configured model and the run record built from the real data set
    at ``root`` by the function fine-tuning uses (:func:`build_run_record`), saved as
    ``<run_dir>/checkpoints/best.ckpt``; nothing else is written next to it (no ``config.yaml``).
    """
    from conftest import compose_config, tiny_overrides

    from glcnet.training.run_record import RECORD_KEY, build_run_record
    from glcnet.utils.config import instantiate, to_plain

    cfg = compose_config("finetune", [*tiny_overrides(root, run_dir), *overrides])
    data = instantiate(cfg.data)
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    record = build_run_record("finetune", to_plain(cfg), data, data.dataset("train"), model)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 0, "global_step": 1, "state_dict": state, RECORD_KEY: record}, ckpt)
    return ckpt
