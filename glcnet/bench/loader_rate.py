"""Pairs per second of the pretraining data loader, built exactly as ``scripts/pretrain.py`` builds it."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

from omegaconf import DictConfig
from torch.utils.data import DataLoader

from glcnet.data.paired import PairedViewDataset
from glcnet.training.runtime import seed_everything
from glcnet.utils.config import instantiate


def _forever(loader: DataLoader) -> Iterator[dict]:
    for _ in itertools.count():
        yield from loader


def bench_loader(cfg: DictConfig, seconds: float = 20.0, max_batches: int | None = None) -> dict:
    """Read view pairs through the configured loader (tiles read from disk, views, collation).

    Args:
        cfg: A composed ``pretrain`` config (``data`` and ``augment`` are used; ``data.num_workers``
            and ``data.batch_size`` set the loader).
        seconds: Measure for about this long after the first batch (which waits for the workers).
        max_batches: Stop after this many measured batches (None: time only).

    Returns:
        ``pairs_per_s`` (after the first batch), ``first_batch_s`` (worker start-up included),
        ``pairs``, ``batches``, ``tiles`` (pairs per epoch), ``workers`` and ``batch_size``.
    """
    seed_everything(int(cfg.seed))
    data = instantiate(cfg.data)
    pairs = PairedViewDataset(data.pretrain_dataset(labeled=False), instantiate(cfg.augment))
    loader = data.loader(pairs, train=True)
    t_start = time.perf_counter()
    batches = _forever(loader)
    next(batches)
    t0 = time.perf_counter()
    count = n_batches = 0
    for batch in batches:
        count += batch["view_a"].shape[0]
        n_batches += 1
        if time.perf_counter() - t0 >= seconds or (max_batches and n_batches >= max_batches):
            break
    elapsed = max(time.perf_counter() - t0, 1e-9)
    return {
        "pairs_per_s": count / elapsed,
        "first_batch_s": t0 - t_start,
        "pairs": count,
        "batches": n_batches,
        "tiles": len(pairs),
        "workers": int(data.num_workers),
        "batch_size": int(data.batch_size),
    }
