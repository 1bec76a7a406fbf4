"""SwAV: Sinkhorn-Knopp codes and the swapped-prediction loss.

Reference: Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments", NeurIPS 2020 (seed note 002): codes ``Q`` are the entropy-regularised equipartition of
the batch over K prototypes, found with three Sinkhorn-Knopp iterations at ``epsilon = 0.05``, and
each view predicts the code of the other view, ``-sum_k q_s,k log softmax(z_t . c / tau)_k``.

Numerics (DESIGN.md section 3): the codes are computed in (at least) fp32 with autocast disabled, in
the log domain (``logsumexp`` instead of ``exp`` then divide), so small ``epsilon`` and bf16 inputs
stay finite; the sums over samples are all-reduced across processes on every iteration, so codes
and loss equal those of one process on the concatenated batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from glcnet.losses.contrastive import compute_dtype
from glcnet.losses.distributed import global_mean, world_info

__all__ = ["SwAVLoss", "sinkhorn_knopp"]


def _logsumexp_over_samples(x: Tensor, shared: Tensor | None, distributed: bool) -> Tensor:
    """Per-prototype ``log sum_i exp(x_ik)`` over the samples of all ranks plus ``shared`` once.

    Args:
        x: (N, K) local log-values (N may differ between ranks, and be 0).
        shared: (M, K) log-values held identically by every rank (counted once), or None.
        distributed: All-reduce over processes.

    Returns:
        (K,) log-sums.
    """
    k = x.shape[1]
    neg_inf = x.new_full((k,), float("-inf"))
    top = x.amax(dim=0) if x.shape[0] else neg_inf
    if shared is not None and shared.shape[0]:
        top = torch.maximum(top, shared.amax(dim=0))
    if distributed:
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = (x - top).exp().sum(dim=0)
    if distributed:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    if shared is not None:
        total = total + (shared - top).exp().sum(dim=0)
    return total.log() + top


@torch.no_grad()
def sinkhorn_knopp(
    scores: Tensor,
    epsilon: float = 0.05,
    iterations: int = 3,
    shared_scores: Tensor | None = None,
    gather_distributed: bool = True,
) -> Tensor:
    """SwAV codes: Sinkhorn-Knopp equipartition of the samples over the prototypes.

    With ``Q = exp(scores / epsilon)`` over all B samples (all ranks, plus ``shared_scores``) and K
    prototypes, each iteration first scales every prototype's column to total ``1 / K``, then every
    sample's row to total ``1 / B``; the result is multiplied by B. So each returned code sums to 1
    over the prototypes (exactly, a distribution per sample) and each prototype receives about
    ``B / K`` of the batch (exactly in the limit of many iterations). This is the official
    ``distributed_sinkhorn``, written in the log domain (its initial global normalisation cancels
    in the first prototype scaling and is skipped).

    Args:
        scores: (N, K) scores of this process's samples (cosine similarity to the prototypes).
        epsilon: Entropic regularisation (> 0); smaller = sharper codes.
        iterations: Number of Sinkhorn-Knopp iterations (>= 1).
        shared_scores: (M, K) scores held identically by every process (SwAV's queue of earlier
            features), counted once in the prototype sums; their codes are not returned.
        gather_distributed: Sum over the samples of all processes (all-reduce every iteration).

    Returns:
        (N, K) codes, fp32 (fp64 for fp64 scores), detached; rows sum to 1.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (N, K), got {tuple(scores.shape)}")
    if shared_scores is not None and (
        shared_scores.dim() != 2 or shared_scores.shape[1] != scores.shape[1]
    ):
        raise ValueError(
            f"shared_scores must be (M, {scores.shape[1]}), got {tuple(shared_scores.shape)}"
        )
    if not 0 < epsilon < float("inf"):
        raise ValueError(f"epsilon must be a positive finite number, got {epsilon}")
    if isinstance(iterations, bool) or int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations}")
    distributed = gather_distributed and world_info()[1] > 1
    with torch.autocast(device_type=scores.device.type, enabled=False):
        dtype = compute_dtype(scores.dtype)
        x = scores.detach().to(dtype) / epsilon  # log Q, (N, K)
        y = None if shared_scores is None else shared_scores.detach().to(dtype) / epsilon
        count = torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device)
        if distributed:
            dist.all_reduce(count, op=dist.ReduceOp.SUM)
        total = float(count.item()) + (0 if y is None else y.shape[0])
        if total == 0:
            return x.exp()  # no sample anywhere: (0, K)
        log_k, log_b = math.log(x.shape[1]), math.log(total)
        for _ in range(int(iterations)):
            col = _logsumexp_over_samples(x, y, distributed) + log_k  # prototypes total 1 / K
            x = x - col
            y = None if y is None else y - col
            x = x - (torch.logsumexp(x, dim=1, keepdim=True) + log_b)  # samples total 1 / B
            if y is not None:
                y = y - (torch.logsumexp(y, dim=1, keepdim=True) + log_b)
        return (x + log_b).exp()


class SwAVLoss(nn.Module):
    """Swapped-prediction loss over prototype scores of V >= 2 views.

    The codes ``q_s`` of the two large views ``s`` in {0, 1} come from :func:`sinkhorn_knopp`
    (no gradient); every other view ``t`` (the other large view and any small crops) predicts them
    through ``p_t = softmax(scores_t / tau)``:

    ``L = 1/2 sum_{s in {0,1}} 1/(V-1) sum_{t != s} mean_n [-sum_k q_s[n,k] log p_t[n,k]]``

    (the official multi-crop form: each assigned view's term is averaged over the views that
    predict it, then over the two assigned views).

    Distributed: codes use the samples of every process; the returned local loss is
    ``world * sum_local / N_global`` so that DDP's averaging gives the gradient of the global mean.

    Args:
        temperature: tau of the prediction softmax (0.1 in SwAV).
        epsilon: Sinkhorn regularisation (0.05).
        sinkhorn_iterations: Sinkhorn iterations (3).
        gather_distributed: Codes over all processes' samples.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        if not 0 < temperature < float("inf"):
            raise ValueError(f"temperature must be a positive finite number, got {temperature}")
        if not 0 < epsilon < float("inf"):
            raise ValueError(f"epsilon must be a positive finite number, got {epsilon}")
        if (
            isinstance(sinkhorn_iterations, bool)
            or int(sinkhorn_iterations) != sinkhorn_iterations
            or sinkhorn_iterations < 1
        ):
            raise ValueError(
                f"sinkhorn_iterations must be a positive integer, got {sinkhorn_iterations}"
            )
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.gather_distributed = bool(gather_distributed)

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"temperature={self.temperature}, epsilon={self.epsilon}, "
            f"sinkhorn_iterations={self.sinkhorn_iterations}, "
            f"gather_distributed={self.gather_distributed}"
        )

    def forward(
        self, scores: Sequence[Tensor], queue_scores: Sequence[Tensor | None] | None = None
    ) -> Tensor:
        """Compute the loss.

        Args:
            scores: V >= 2 tensors (N, K): prototype scores ``z . c`` (unit z and c) of the two
                large views first, then of any small crops.
            queue_scores: Two entries, one per large view: (M, K) scores of stored features of
                that view (SwAV's queue, identical on every process), used only to compute the
                codes; None entries (or None) for no queue.

        Returns:
            Scalar loss, fp32 (fp64 for fp64 scores).
        """
        if len(scores) < 2:
            raise ValueError(f"SwAV needs at least two views, got {len(scores)}")
        shape = scores[0].shape
        if len(shape) != 2 or any(s.shape != shape for s in scores):
            raise ValueError(
                f"every view's scores must be the same (N, K), got {[tuple(s.shape) for s in scores]}"
            )
        if queue_scores is None:
            queue_scores = (None, None)
        if len(queue_scores) != 2:
            raise ValueError(
                f"queue_scores needs one entry per large view, got {len(queue_scores)}"
            )
        distributed = self.gather_distributed and world_info()[1] > 1
        v = len(scores)
        with torch.autocast(device_type=scores[0].device.type, enabled=False):
            dtype = compute_dtype(scores[0].dtype)
            logits = [s.to(dtype) / self.temperature for s in scores]
            per_sample = logits[0].new_zeros(shape[0])
            for s in (0, 1):
                codes = sinkhorn_knopp(
                    scores[s],
                    self.epsilon,
                    self.sinkhorn_iterations,
                    queue_scores[s],
                    self.gather_distributed,
                ).to(dtype)
                for t in range(v):
                    if t != s:  # soft-target cross-entropy -sum_k q log softmax
                        per_sample = per_sample + F.cross_entropy(
                            logits[t], codes, reduction="none"
                        ) / (2 * (v - 1))
            return global_mean(per_sample.sum(), shape[0], distributed)
