"""Collectives for contrastive losses across processes: rank info, a gather carrying gradient.

The contrastive losses keep their anchors local and use the embeddings of *all* processes as
candidates. ``gather_with_grad`` concatenates the per-process tensors along dim 0 (sizes may
differ between ranks) and, in the backward pass, sums the gradients that every rank computed for
each slice, so each process receives the full gradient of the sum of all ranks' losses w.r.t.
its own rows.
Everything is the identity when ``torch.distributed`` is not initialised or has a single process.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_gather_cat", "gather_with_grad", "global_mean", "world_info"]


def world_info() -> tuple[int, int]:
    """Rank of this process and number of processes.

    Returns:
        ``(rank, world_size)``; ``(0, 1)`` when ``torch.distributed`` is unavailable or not
        initialised.

    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    """Dim-0 sizes of the tensor held by every rank (an all-gather of one integer)."""
    world = dist.get_world_size()
    local = torch.tensor([n], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


def _all_gather_cat(x: Tensor) -> tuple[Tensor, list[int]]:
    """Concatenate every rank's ``x`` along dim 0 (no gradient); also return the per-rank sizes."""
    sizes = _gather_sizes(x.shape[0], x.device)
    biggest = max(sizes)
    src = x.contiguous()
    if src.dtype == torch.bool:  # not every backend reduces or gathers bool tensors
        src = src.to(torch.uint8)
    if src.shape[0] < biggest:  # all_gather needs equal shapes: pad, then trim
        pad = src.new_zeros((biggest - src.shape[0], *src.shape[1:]))
        src = torch.cat([src, pad])
    parts = [torch.empty_like(src) for _ in sizes]
    dist.all_gather(parts, src)
    out = torch.cat([p[:s] for p, s in zip(parts, sizes)])
    return out.to(x.dtype), sizes


def all_gather_cat(x: Tensor) -> Tensor:
    """Concatenate every rank's tensor along dim 0, in rank order, without gradient.

    Args:
        x: Local tensor, (n_r, ...); ``n_r`` may differ between ranks, the other dims may not.
            Any dtype (bool included).

    Returns:
        (sum_r n_r, ...) tensor; ``x`` itself when not distributed.

    """
    if world_info()[1] == 1:
        return x
    with torch.no_grad():
        return _all_gather_cat(x)[0]


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0; the backward all-reduces (sums) the gradient, keeps the own slice."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        out, sizes = _all_gather_cat(x)
        rank = dist.get_rank()
        ctx.start = sum(sizes[:rank])
        ctx.stop = ctx.start + sizes[rank]
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        total = grad.contiguous().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total[ctx.start : ctx.stop]


def gather_with_grad(x: Tensor) -> Tensor:
    """All-gather along dim 0 that carries gradient back to every rank's own rows.

    Forward: the concatenation of all ranks' ``x`` in rank order. Backward: the gradient w.r.t. the
    local rows is the *sum over ranks* of the gradients each rank computed for those rows (an
    all-reduce of the full gradient, then the local slice; a reduce-scatter in effect). Thus each
    rank gets the gradient of ``sum_r loss_r`` w.r.t. its inputs; DDP then divides parameter
    gradients by the world size, which the losses compensate for (see ``NTXentLoss``).

    Every rank must call this (and later run backward through it) in the same order.

    Args:
        x: Local floating tensor, (n_r, ...); ``n_r`` may differ between ranks.

    Returns:
        (sum_r n_r, ...) tensor; ``x`` itself (identity) when not distributed.

    """
    if world_info()[1] == 1:
        return x
    if not x.is_floating_point():
        raise TypeError(
            f"gather_with_grad needs a floating tensor, got {x.dtype}; use all_gather_cat"
        )
    return _GatherWithGrad.apply(x)


def global_mean(local_sum: Tensor, local_count: Tensor | int, distributed: bool) -> Tensor:
    """Turn a local sum of per-anchor losses into the loss each rank should back-propagate.

    Not distributed: ``local_sum / local_count``. Distributed (``distributed`` and world > 1): the
    count is all-reduced to the global count ``C`` and the result is ``world * local_sum / C``; with
    candidates from ``gather_with_grad`` the gradients then add up over ranks, and DDP's division by
    the world size yields exactly the gradient of the global mean ``sum_all / C``. The mean over
    ranks of the returned values is that global mean (all-reduce it for logging).

    Args:
        local_sum: Sum of this rank's per-anchor losses, scalar.
        local_count: Number of anchors in ``local_sum``.
        distributed: Whether the losses were computed against gathered candidates.

    Returns:
        Scalar loss; ``0 * local_sum`` (still attached to the graph) when there is no anchor.

    """
    count = torch.as_tensor(local_count, dtype=torch.float64, device=local_sum.device)
    _, world = world_info()
    scale = 1.0
    if distributed and world > 1:
        count = count.clone()
        dist.all_reduce(count, op=dist.ReduceOp.SUM)
        scale = float(world)
    total = float(count.item())
    if total == 0:
        return local_sum * 0.0
    return local_sum * (scale / total)
