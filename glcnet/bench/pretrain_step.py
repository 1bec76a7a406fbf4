"""Benchmark of a GLCNet pretraining step: SSL overhead and data-pipeline vs. model throughput."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from glcnet.data.paired import PairedViewDataset
from glcnet.data.views import PairedViews
from glcnet.methods.glcnet import GLCNet
from glcnet.models.segmenter import Segmenter


class RandomTiles(Dataset):
    """Synthetic tiles of fixed size (the benchmark measures speed, not content)."""

    def __init__(self, count: int, channels: int, size: int) -> None:
        self.count, self.channels, self.size = count, channels, size

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(index)
        return {"image": torch.rand(self.channels, self.size, self.size, generator=g)}


def _timed(fn: Callable[[], None], repeats: int, device: str) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_pretrain_step(
    encoder: str = "resnet18",
    batch_size: int = 8,
    tile_size: int = 256,
    view_size: int = 224,
    channels: int = 4,
    repeats: int = 3,
    device: str = "cpu",
    num_workers: int = 2,
    precision: str = "32",
) -> dict:
    """Time one GLCNet step against two plain forward+backward passes of the same network.

    Args:
        encoder: Encoder name.
        batch_size: Pairs per batch.
        tile_size: Source tile side.
        view_size: View side.
        channels: Input bands.
        repeats: Timed repetitions (median reported).
        device: ``cpu`` or ``cuda``.
        num_workers: Loader workers for the data-pipeline measurement.
        precision: ``32`` or ``bf16`` (autocast on the device).

    Returns:
        Timings (seconds), throughputs (pairs/s) and the ratios ``ssl_overhead`` (GLCNet step with
        both views in one 2B batch / two plain passes; target <= 1.15), ``ssl_overhead_two_passes``
        (the same with ``concat_views=False``, i.e. like for like) and ``loader_vs_model``
        (pipeline pairs/s / model pairs/s; must be > 1 so the loader is not the bottleneck).
    """
    torch.manual_seed(0)
    views = PairedViews(size=view_size, region_size=max(8, view_size * 48 // 224))
    pairs = PairedViewDataset(RandomTiles(batch_size * 8, channels, tile_size), views)
    batch = default_collate([pairs[i] for i in range(batch_size)])
    batch = {k: v.to(device) for k, v in batch.items()}
    model = Segmenter(encoder, in_channels=channels, num_classes=6).to(device)
    method = GLCNet(model).to(device)
    method_split = GLCNet(model, concat_views=False).to(device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step_of(glcnet: GLCNet) -> Callable[[], None]:
        def step() -> None:
            glcnet.zero_grad(set_to_none=True)
            with autocast:
                loss = glcnet(batch)["loss"]
            loss.backward()

        return step

    def plain_step() -> None:
        model.zero_grad(set_to_none=True)
        for view in (batch["view_a"], batch["view_b"]):
            with autocast:
                out = model(view)
            out.float().mean().backward()

    t_glcnet = _timed(step_of(method), repeats, device)
    t_plain = _timed(plain_step, repeats, device)
    t_split = _timed(step_of(method_split), repeats, device)

    one_core = time.perf_counter()
    n_items = batch_size * 4
    for i in range(n_items):
        pairs[i]
    t_item = (time.perf_counter() - one_core) / n_items
    loader = DataLoader(pairs, batch_size=batch_size, num_workers=num_workers)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    count = 0
    for b in it:
        count += b["view_a"].shape[0]
    loader_rate = count / max(time.perf_counter() - t0, 1e-9)
    model_rate = batch_size / t_glcnet
    return {
        "device": device,
        "encoder": encoder,
        "batch_pairs": batch_size,
        "view_size": view_size,
        "glcnet_step_s": t_glcnet,
        "two_plain_passes_s": t_plain,
        "ssl_overhead": t_glcnet / t_plain,
        "glcnet_step_two_passes_s": t_split,
        "ssl_overhead_two_passes": t_split / t_plain,
        "pipeline_pairs_per_s_one_core": 1.0 / t_item,
        "loader_pairs_per_s": loader_rate,
        "model_pairs_per_s": model_rate,
        "loader_vs_model": loader_rate / model_rate,
        "loader_workers": num_workers,
    }
