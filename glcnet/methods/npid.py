"""NPID: non-parametric instance discrimination with a memory bank.

Reference: Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
CVPR 2018 (seed note 002). Every tile of the pretraining set is its own class; the class "weights"
are the bank entries ``v_j`` (unit vectors, one per tile), and for a unit feature ``f`` of tile ``i``

``P(i | f) = exp(v_i . f / tau) / Z``,  ``Z = sum_j exp(v_j . f / tau)``.

Two objectives:

- ``loss="softmax"``: the full non-parametric softmax, ``-log P(i | f)`` with ``Z`` over the whole
  bank (InfoNCE with the own entry as the positive and the ``n - 1`` other entries as negatives;
  built with :func:`glcnet.losses.contrastive.info_nce_terms`).
- ``loss="nce"``: noise-contrastive estimation as in the paper: ``m`` noise entries drawn uniformly
  (``P_n = 1/n``), ``h(j, f) = P(j | f) / (P(j | f) + m P_n)`` and
  ``l = -log h(i, f) - sum_{j in noise} log(1 - h(j, f))``, with ``Z`` a constant estimated once, on
  the first batch (all processes), as ``Z = n * mean exp(v_j . f / tau)`` over the sampled noise
  entries (the paper's Monte-Carlo estimate), then kept (a buffer, so restarts reuse it). ``h`` is
  computed as ``sigmoid(log P - log(m / n))`` with ``softplus``, never as a ratio of
  exponentials. The ``m`` noise entries are drawn once per batch and shared by its anchors.

Both views are used (``use_both_views``): each view's feature is an anchor against the bank, and the
bank entry of a tile moves towards the mean of its two views' features after the loss,
``v_i <- normalise(m v_i + (1 - m) mean(f_a, f_b))`` (``bank_momentum`` m = 0.5 in the paper);
with ``use_both_views=False`` only view a is used, as in the paper's single-view training.
Distributed: features and indices of all processes are gathered for the update, so the banks stay
identical; the loss of each process uses its own anchors against the (replicated) bank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from glcnet.losses.contrastive import compute_dtype, info_nce_terms
from glcnet.losses.distributed import global_mean, world_info
from glcnet.losses.memory import MemoryBank
from glcnet.methods.base import PretrainMethod
from glcnet.methods.simclr import global_embedding
from glcnet.models.heads import ProjectionHead
from glcnet.models.segmenter import Segmenter

__all__ = ["NPID", "estimate_log_z", "npid_nce_loss", "npid_softmax_loss"]

LOSSES = ("softmax", "nce")


def _check(features: Tensor, bank: Tensor, indices: Tensor) -> None:
    if features.dim() != 2 or bank.dim() != 2 or features.shape[1] != bank.shape[1]:
        raise ValueError(
            f"features (A, d) and bank (n, d) disagree: {tuple(features.shape)}, "
            f"{tuple(bank.shape)}"
        )
    if indices.shape != (features.shape[0],):
        raise ValueError(f"indices must be ({features.shape[0]},), got {tuple(indices.shape)}")


def npid_softmax_loss(
    features: Tensor,
    bank: Tensor,
    indices: Tensor,
    temperature: float = 0.07,
    gather_distributed: bool = True,
) -> Tensor:
    """Full non-parametric softmax loss ``mean_a -log P(indices[a] | f_a)`` over the whole bank.

    Args:
        features: (A, d) anchor features (L2-normalised here).
        bank: (n, d) memory bank (unit rows, no gradient).
        indices: (A,) int64 bank entry of each anchor (its positive).
        temperature: tau.
        gather_distributed: Mean over the anchors of all processes (the returned local loss is
            scaled as in :func:`glcnet.losses.distributed.global_mean`).

    Returns:
        Scalar, fp32 (fp64 for fp64 inputs). A bank of n identical entries equal to ``f`` gives
        ``log n``.
    """
    _check(features, bank, indices)
    distributed = gather_distributed and world_info()[1] > 1
    with torch.autocast(device_type=features.device.type, enabled=False):
        dtype = compute_dtype(features.dtype)
        f = F.normalize(features.to(dtype), dim=1)
        logits = (f / temperature) @ bank.detach().to(dtype).T  # (A, n)
        positive = torch.zeros_like(logits, dtype=torch.bool)
        positive[torch.arange(f.shape[0], device=f.device), indices.long()] = True
        losses, defined = info_nce_terms(logits, positive)
        return global_mean(losses.sum(), defined.sum(), distributed)


def estimate_log_z(
    noise_logits: Tensor, num_samples: int, gather_distributed: bool = True
) -> Tensor:
    """NCE normaliser ``log Z = log(n * mean exp(noise_logits))``, over all processes.

    Args:
        noise_logits: (A, m) ``v_j . f_a / tau`` of uniformly drawn bank entries.
        num_samples: Bank size n.
        gather_distributed: Average over the logits of all processes.

    Returns:
        Scalar ``log Z`` (detached), computed with a max shift (no overflow at small tau).
    """
    x = noise_logits.detach()
    top = x.max() if x.numel() else x.new_tensor(float("-inf"))
    count = torch.tensor(float(x.numel()), dtype=torch.float64, device=x.device)
    distributed = gather_distributed and world_info()[1] > 1
    if distributed:
        top = top.clone()
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    total = (x - top).exp().sum()
    if distributed:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        dist.all_reduce(count, op=dist.ReduceOp.SUM)
    if float(count) == 0:
        raise ValueError("cannot estimate Z without noise samples")
    return math.log(num_samples) + total.log() + top - count.log().to(x.dtype)


def npid_nce_loss(
    features: Tensor,
    bank: Tensor,
    indices: Tensor,
    noise: Tensor,
    log_z: Tensor | float,
    temperature: float = 0.07,
    gather_distributed: bool = True,
) -> Tensor:
    """NCE loss of NPID (module docstring) with given noise entries and normaliser.

    ``l_a = -log h(i_a, f_a) - sum_{j in noise} log(1 - h(j, f_a))`` with
    ``h(j, f) = sigmoid(v_j . f / tau - log Z - log(m / n))``; the mean over anchors is returned.

    Args:
        features: (A, d) anchor features (L2-normalised here).
        bank: (n, d) memory bank.
        indices: (A,) int64 bank entry of each anchor.
        noise: (m,) int64 noise entries, shared by all anchors (drawn uniformly from [0, n)).
        log_z: log of the normalising constant Z (see :func:`estimate_log_z`).
        temperature: tau.
        gather_distributed: Mean over the anchors of all processes.

    Returns:
        Scalar, fp32 (fp64 for fp64 inputs).
    """
    _check(features, bank, indices)
    if noise.dim() != 1 or noise.numel() == 0:
        raise ValueError(f"noise must be (m,) bank indices with m >= 1, got {tuple(noise.shape)}")
    distributed = gather_distributed and world_info()[1] > 1
    n, m = bank.shape[0], noise.shape[0]
    with torch.autocast(device_type=features.device.type, enabled=False):
        dtype = compute_dtype(features.dtype)
        f = F.normalize(features.to(dtype), dim=1)
        v = bank.detach().to(dtype)
        shift = torch.as_tensor(log_z, dtype=dtype, device=f.device) + math.log(m / n)
        pos = (f * v[indices.long()]).sum(1) / temperature - shift  # (A,) logit of h
        neg = (f / temperature) @ v[noise.long()].T - shift  # (A, m)
        losses = F.softplus(-pos) + F.softplus(neg).sum(1)  # -log h, -log(1 - h)
        return global_mean(losses.sum(), f.shape[0], distributed)


class NPID(PretrainMethod):
    """Instance discrimination against a memory bank of all tiles (module docstring).

    The feature is ``normalise(g(mean_hw(aspp(x))))`` with g a linear layer to ``head_dims[-1]``
    (128 in the paper) unless more widths are given. ``batch["index"]`` (B,) is the tile's index in
    the pretraining set, i.e. its bank entry.

    Args:
        model: The DeepLabV3+ network being pretrained.
        num_samples: Number of tiles in the pretraining set (bank rows); the run passes it.
        head_dims: Widths after the decoder channels: ``(128,)`` is one linear layer.
        temperature: tau (0.07 in the paper).
        bank_momentum: m of the bank update (0.5 in the paper).
        loss: ``"softmax"`` (full bank) or ``"nce"``.
        nce_negatives: Noise entries m of ``nce`` (4096 in the paper).
        use_both_views: Both views as anchors (True) or view a only.
        gather_distributed: Mean over all processes' anchors; bank updates with all processes'
            features.
    """

    requires_num_samples = True

    def __init__(
        self,
        model: Segmenter,
        num_samples: int,
        head_dims: Sequence[int] = (128,),
        temperature: float = 0.07,
        bank_momentum: float = 0.5,
        loss: str = "softmax",
        nce_negatives: int = 4096,
        use_both_views: bool = True,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(model, uses_decoder_output=False)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if not 0 < temperature < float("inf"):
            raise ValueError(f"temperature must be a positive finite number, got {temperature}")
        if (
            isinstance(nce_negatives, bool)
            or int(nce_negatives) != nce_negatives
            or nce_negatives < 1
        ):
            raise ValueError(f"nce_negatives must be a positive integer, got {nce_negatives}")
        self.head = ProjectionHead([model.decoder_channels, *head_dims])
        self.memory = MemoryBank(num_samples, self.head.out_dim, bank_momentum)
        self.temperature = float(temperature)
        self.loss_name = loss
        self.nce_negatives = int(nce_negatives)
        self.use_both_views = bool(use_both_views)
        self.gather_distributed = bool(gather_distributed)
        # NCE normaliser log Z, estimated on the first batch (NaN = not yet).
        self.register_buffer("log_z", torch.tensor(float("nan"), dtype=torch.float64))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Compute the loss, then update the bank entries of the batch's tiles.

        Args:
            batch: ``view_a``, ``view_b`` (B, C, S, S); ``index`` (B,) bank entries.

        Returns:
            ``loss``; for ``nce`` also ``log_z``.
        """
        if "index" not in batch:
            raise KeyError("NPID needs each tile's index in the data set: the batch has no 'index'")
        views = [batch["view_a"], batch["view_b"]] if self.use_both_views else [batch["view_a"]]
        index = batch["index"].long().reshape(-1).to(views[0].device)
        f = F.normalize(global_embedding(self.model, self.head, torch.cat(views)).float(), dim=1)
        if len(views) == 2:
            self.remember("global", f[: len(index)], f[len(index) :])
        indices = index.repeat(len(views))
        bank = self.memory.snapshot()
        out: dict[str, Tensor] = {}
        if self.loss_name == "softmax":
            out["loss"] = npid_softmax_loss(
                f, bank, indices, self.temperature, self.gather_distributed
            )
        else:
            noise = torch.randint(0, bank.shape[0], (self.nce_negatives,), device=f.device)
            if torch.isnan(self.log_z):
                noise_logits = (f.detach() / self.temperature) @ bank[noise].T
                self.log_z.fill_(
                    float(estimate_log_z(noise_logits, bank.shape[0], self.gather_distributed))
                )
            out["loss"] = npid_nce_loss(
                f, bank, indices, noise, self.log_z, self.temperature, self.gather_distributed
            )
            out["log_z"] = self.log_z.detach().float()
        if self.training:
            self.memory.update(f.detach(), indices, self.gather_distributed)
        return out
