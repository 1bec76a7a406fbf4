"""Benchmark of every pretraining method's loss: forward + backward time and peak memory.

Each step is what the method's ``forward`` does after the network: it starts from (N, dim) leaf
embeddings of the two views (N pairs), takes the snapshot of its bank / queue, computes the loss,
back-propagates into the embeddings and writes the bank / queue. Timing and peak memory use
:func:`glcnet.bench.losses.time_ms` and :func:`glcnet.bench.losses.peak_memory_mb` (see that module
for how CPU and CUDA memory are measured).

Methods: ``simclr`` (NT-Xent, 2N anchors), ``supcon`` (SupCon L_out, random dominant labels of
``num_classes`` classes), ``npid_softmax`` (2N anchors against a bank of ``num_samples``),
``npid_nce`` (``nce_negatives`` noise entries), ``moco`` (N queries, queue of ``queue_size``),
``moco_supcon`` (N queries against N keys + the labelled queue), ``swav`` (two views scored against
``num_prototypes`` prototypes, Sinkhorn codes, swapped prediction).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from glcnet.bench.losses import _train_step, peak_memory_mb, time_ms
from glcnet.losses.contrastive import NTXentLoss
from glcnet.losses.memory import MemoryBank, Queue
from glcnet.losses.supcon import SupConLoss
from glcnet.losses.swav import SwAVLoss
from glcnet.methods.moco import moco_loss, moco_supcon_loss
from glcnet.methods.npid import estimate_log_z, npid_nce_loss, npid_softmax_loss

__all__ = ["bench_method_losses"]

METHODS = ("simclr", "supcon", "npid_softmax", "npid_nce", "moco", "moco_supcon", "swav")


def _loss_fns(
    n: int,
    dim: int,
    device: torch.device,
    gen: torch.Generator,
    num_samples: int,
    queue_size: int,
    num_prototypes: int,
    nce_negatives: int,
    num_classes: int,
) -> dict[str, Callable[[Tensor, Tensor], Tensor]]:
    """One closure per method mapping the two views' leaf embeddings to its loss (stores written)."""
    index = torch.randint(0, num_samples, (n,), generator=gen).to(device)
    classes = torch.randint(0, num_classes, (n,), generator=gen)
    labels = F.one_hot(classes, num_classes).to(torch.uint8).to(device)
    bank = MemoryBank(num_samples, dim).to(device)
    queue = Queue(queue_size, dim).to(device)
    labelled_queue = Queue(queue_size, dim, label_dim=num_classes).to(device)
    prototypes = F.normalize(torch.randn(num_prototypes, dim, generator=gen), dim=1).to(device)
    ntxent, supcon, swav = NTXentLoss(0.5), SupConLoss(0.1), SwAVLoss(0.1, 0.05, 3)
    tau = 0.07

    def npid_softmax(z_a: Tensor, z_b: Tensor) -> Tensor:
        f, idx = torch.cat([z_a, z_b]), index.repeat(2)
        loss = npid_softmax_loss(f, bank.snapshot(), idx, tau)
        bank.update(F.normalize(f.detach(), dim=1), idx)
        return loss

    def npid_nce(z_a: Tensor, z_b: Tensor) -> Tensor:
        f, idx = torch.cat([z_a, z_b]), index.repeat(2)
        v = bank.snapshot()
        noise = torch.randint(0, num_samples, (nce_negatives,), device=device)
        unit = F.normalize(f.detach(), dim=1)
        log_z = estimate_log_z(unit @ v[noise].T / tau, num_samples)
        loss = npid_nce_loss(f, v, idx, noise, log_z, tau)
        bank.update(unit, idx)
        return loss

    def moco(z_a: Tensor, z_b: Tensor) -> Tensor:
        keys = F.normalize(z_b.detach(), dim=1)
        loss = moco_loss(z_a, keys, queue.snapshot()[0], 0.2)
        queue.enqueue(keys)
        return loss

    def moco_supcon(z_a: Tensor, z_b: Tensor) -> Tensor:
        keys = F.normalize(z_b.detach(), dim=1)
        stored, stored_labels = labelled_queue.snapshot()
        loss = moco_supcon_loss(
            z_a,
            labels,
            torch.cat([keys, stored]),
            torch.cat([labels, stored_labels]),
            torch.arange(n, device=device),
            0.1,
        )
        labelled_queue.enqueue(keys, labels)
        return loss

    def swav_loss(z_a: Tensor, z_b: Tensor) -> Tensor:
        scores = [F.normalize(z, dim=1) @ prototypes.T for z in (z_a, z_b)]
        return swav(scores)

    return {
        "simclr": ntxent,
        "supcon": lambda a, b: supcon(torch.stack([a, b], 1), labels=classes.to(device)),
        "npid_softmax": npid_softmax,
        "npid_nce": npid_nce,
        "moco": moco,
        "moco_supcon": moco_supcon,
        "swav": swav_loss,
    }


def bench_method_losses(
    sizes: Sequence[int] = (256, 512, 1024, 2048, 4096, 8192),
    dim: int = 128,
    device: str | torch.device = "cpu",
    repeats: int = 3,
    methods: Sequence[str] = METHODS,
    num_samples: int = 13824,
    queue_size: int = 8192,
    num_prototypes: int = 300,
    nce_negatives: int = 4096,
    num_classes: int = 6,
    seed: int = 0,
) -> list[dict]:
    """Time and measure forward + backward (+ store update) of each method's loss.

    Args:
        sizes: Batch sizes N (pairs).
        dim: Embedding width d.
        device: Where to run.
        repeats: Timed repetitions (median reported) after one warm-up.
        methods: Subset of the methods in the module docstring.
        num_samples: NPID bank size (13,824 Potsdam pretraining tiles).
        queue_size: MoCo queue size.
        num_prototypes: SwAV K.
        nce_negatives: NPID NCE noise entries.
        num_classes: Classes of the SupCon labels.
        seed: Seed of the embeddings, labels and stores.

    Returns:
        One dict per (N, method): ``N``, ``method``, ``device``, ``ms``, ``peak_MB``, ``loss``.
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    rows: list[dict] = []
    for n in sizes:
        z_a = torch.randn(n, dim, generator=gen).to(device).requires_grad_()
        z_b = torch.randn(n, dim, generator=gen).to(device).requires_grad_()
        fns = _loss_fns(
            n, dim, device, gen, num_samples, queue_size, num_prototypes, nce_negatives, num_classes
        )
        for name in methods:
            values: list[float] = []
            step = _train_step(fns[name], z_a, z_b, values)
            ms = time_ms(step, device, repeats)
            peak = peak_memory_mb(step, device)
            rows.append(
                {"N": n, "method": name, "device": str(device), "ms": ms, "peak_MB": peak}
                | {"loss": values[-1]}
            )
    return rows
