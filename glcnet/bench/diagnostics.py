"""Benchmark of the pretraining health diagnostics: their cost against the training steps they watch.

The diagnostics run once every ``diagnostics_every`` steps; the ratio reported is
``diagnostics time / (every x step time)``, the share of training time they add (target < 5 %).
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import Dataset, default_collate

from glcnet.bench.pretrain_step import RandomTiles, _timed
from glcnet.data.paired import PairedViewDataset
from glcnet.data.views import PairedViews
from glcnet.methods.glcnet import GLCNet
from glcnet.models.segmenter import Segmenter
from glcnet.training.diagnostics import KnnProbe, embedding_health


class RandomLabelledTiles(Dataset):
    """Synthetic labelled tiles (speed only): random images and random class masks."""

    def __init__(self, count: int, channels: int, size: int, num_classes: int = 6) -> None:
        self.count, self.channels, self.size, self.num_classes = count, channels, size, num_classes

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(index)
        return {
            "image": torch.rand(self.channels, self.size, self.size, generator=g),
            "mask": torch.randint(0, self.num_classes, (self.size, self.size), generator=g),
        }


def bench_diagnostics(
    encoder: str = "resnet18",
    batch_size: int = 32,
    view_size: int = 112,
    tile_size: int = 128,
    probe_tiles: int = 8,
    every: int = 50,
    channels: int = 4,
    repeats: int = 3,
    device: str = "cpu",
) -> dict:
    """Time one GLCNet optimisation step and one round of diagnostics on the same network.

    Args:
        encoder: Encoder name.
        batch_size: Pairs per step.
        view_size: View side.
        tile_size: Side of the source tiles and of the probe's tiles.
        probe_tiles: Tiles of the k-NN probe.
        every: The diagnostics interval (``diagnostics_every``) the ratio is computed for.
        channels: Input bands.
        repeats: Timed repetitions (median).
        device: ``cpu`` or ``cuda``.

    Returns:
        ``step_s`` (forward + backward + Adam step), ``health_s`` (embedding statistics of every
        branch), ``probe_s`` (k-NN probe), ``diagnostics_s`` (their sum), ``every`` and
        ``overhead`` = diagnostics_s / (every * step_s).
    """
    torch.manual_seed(0)
    views = PairedViews(size=view_size, region_size=max(8, view_size * 48 // 224))
    pairs = PairedViewDataset(RandomTiles(batch_size, channels, tile_size), views)
    batch = default_collate([pairs[i] for i in range(batch_size)])
    batch = {k: v.to(device) for k, v in batch.items()}
    method = GLCNet(Segmenter(encoder, in_channels=channels, num_classes=6)).to(device)
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-4)
    probe = KnnProbe(RandomLabelledTiles(probe_tiles, channels, tile_size), probe_tiles)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        method(batch)["loss"].backward()
        opt.step()

    def health() -> None:
        for z_a, z_b in method.positive_pairs().values():
            embedding_health(z_a, z_b)

    t_step = _timed(step, repeats, device)
    t_health = _timed(health, repeats, device)
    t_probe = _timed(lambda: probe(method.model), repeats, device)
    total = t_health + t_probe
    return {
        "encoder": encoder,
        "batch_pairs": batch_size,
        "view_size": view_size,
        "probe_tiles": probe_tiles,
        "step_s": t_step,
        "health_s": t_health,
        "probe_s": t_probe,
        "diagnostics_s": total,
        "every": every,
        "overhead": total / (every * t_step),
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
