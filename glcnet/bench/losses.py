"""Benchmark of the contrastive losses: forward + backward time and peak memory.

Compares ``NTXentLoss`` (unchunked and chunked) with the plain formulation of the reference code
(full (2N, 2N) similarity matrix, ``exp``, divide, ``log``).

Peak memory is the highest amount of tensor memory allocated *above the level at the start* of one
forward + backward step (inputs already allocated, their gradients included):

- CUDA: ``torch.cuda.max_memory_allocated`` minus ``torch.cuda.memory_allocated`` before the step.
- CPU: PyTorch has no allocator statistics for the CPU, so the step is run once under
  ``torch.profiler`` with ``profile_memory=True`` and the peak of the running sum of its allocation
  and free events is taken. It counts tensor allocations only (not the Python heap, not allocator
  caches) and is exact for them; the timing runs are separate, without the profiler.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from glcnet.losses.contrastive import NTXentLoss

__all__ = ["bench_contrastive_losses", "naive_ntxent", "peak_memory_mb", "time_ms"]


def naive_ntxent(z_a: Tensor, z_b: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent written the plain way (as the SimCLR / GLCNet reference code does).

    Full (2N, 2N) cosine-similarity matrix, ``exp``, self terms zeroed by a mask product, row sums,
    divide, ``log``. Overflows for small temperatures; kept only as the benchmark baseline.

    Args:
        z_a: (N, d) embeddings of the first views.
        z_b: (N, d) embeddings of the second views.
        temperature: tau.

    Returns:
        Scalar, the mean over the 2N anchors.

    """
    n = z_a.shape[0]
    z = F.normalize(torch.cat([z_a, z_b]), dim=1)
    sim = torch.exp(z @ z.T / temperature)
    off_diagonal = 1.0 - torch.eye(2 * n, device=z.device, dtype=z.dtype)
    denominator = (sim * off_diagonal).sum(dim=1)
    pos = torch.exp((z[:n] * z[n:]).sum(dim=1) / temperature)
    pos = torch.cat([pos, pos])
    return -torch.log(pos / denominator).mean()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(step: Callable[[], None], device: torch.device, repeats: int = 3) -> float:
    """Median wall time of ``step`` in milliseconds, after one warm-up call."""
    step()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _cpu_peak_bytes(step: Callable[[], None]) -> float:
    """Peak of the running sum of CPU allocations minus frees during ``step`` (torch.profiler)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    except AttributeError:  # private structure of torch.profiler changed
        return math.nan
    events.sort(key=lambda e: e.start_ns())
    level = peak = 0
    for e in events:
        if e.device_type() == DeviceType.CPU:
            level += e.nbytes()
            peak = max(peak, level)
    return float(peak)


def peak_memory_mb(step: Callable[[], None], device: torch.device) -> float:
    """Peak tensor memory allocated by ``step`` above the level before it, in MiB (module doc)."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    if device.type == "cpu":
        return _cpu_peak_bytes(step) / 2**20
    return math.nan


def _train_step(
    loss_fn: Callable[[Tensor, Tensor], Tensor], z_a: Tensor, z_b: Tensor, values: list[float]
) -> Callable[[], None]:
    """One forward + backward of ``loss_fn`` on the leaves ``z_a``, ``z_b``; records the loss."""

    def step() -> None:
        z_a.grad = z_b.grad = None
        loss = loss_fn(z_a, z_b)
        loss.backward()
        values.append(float(loss.detach()))

    return step


def bench_contrastive_losses(
    sizes: Sequence[int] = (256, 512, 1024, 2048, 4096, 8192),
    dim: int = 128,
    device: str | torch.device = "cpu",
    repeats: int = 3,
    temperature: float = 0.5,
    chunk_size: int = 1024,
    seed: int = 0,
) -> list[dict]:
    """Time and measure forward + backward of NT-Xent implementations.

    Variants: ``plain`` (``naive_ntxent``), ``ntxent`` (``NTXentLoss``), ``ntxent_chunk{chunk}``
    (``NTXentLoss(chunk_size=chunk)``). Inputs are (N, dim) leaf tensors for each view. The plain
    variant needs several (2N)^2 fp32 buffers (about 5 GiB at N = 8192): use small sizes on small
    machines.

    Args:
        sizes: Batch sizes N (number of pairs, 2N anchors).
        dim: Embedding width d.
        device: Where to run.
        repeats: Timed repetitions (median reported) after one warm-up.
        temperature: tau.
        chunk_size: Anchor chunk of the chunked variant.
        seed: Seed of the random embeddings.

    Returns:
        One dict per (N, variant): ``N``, ``variant``, ``device``, ``ms``, ``peak_MB``,
        ``ms_vs_plain`` and ``mem_vs_plain`` (ratios to the plain variant at the same N), ``loss``
        and ``abs_diff_vs_plain`` (agreement of the loss values).

    """
    device = torch.device(device)
    variants: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
        "plain": lambda a, b: naive_ntxent(a, b, temperature),
        "ntxent": NTXentLoss(temperature, gather_distributed=False),
        f"ntxent_chunk{chunk_size}": NTXentLoss(
            temperature, chunk_size=chunk_size, gather_distributed=False
        ),
    }
    gen = torch.Generator().manual_seed(seed)
    rows: list[dict] = []
    for n in sizes:
        z_a = torch.randn(n, dim, generator=gen).to(device).requires_grad_()
        z_b = torch.randn(n, dim, generator=gen).to(device).requires_grad_()
        plain: dict | None = None
        for name, loss_fn in variants.items():
            value: list[float] = []
            step = _train_step(loss_fn, z_a, z_b, value)
            ms = time_ms(step, device, repeats)
            peak = peak_memory_mb(step, device)
            row = {"N": n, "variant": name, "device": str(device), "ms": ms, "peak_MB": peak}
            row["loss"] = value[-1]
            if plain is None:
                plain = row
            row["ms_vs_plain"] = ms / plain["ms"]
            row["mem_vs_plain"] = peak / plain["peak_MB"] if plain["peak_MB"] > 0 else math.nan
            row["abs_diff_vs_plain"] = abs(row["loss"] - plain["loss"])
            rows.append(row)
    return rows
