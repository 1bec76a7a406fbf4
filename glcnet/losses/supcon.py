"""Supervised contrastive loss (SupCon), L_out and L_in.

Reference: Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020 (seed notes 001, 004),
eqs. (3) and (4). Unlike the reference code (SupContrast), excluded entries are masked with ``-inf``
and normalised with ``logsumexp`` (its mask multiplication gives NaN at tau = 0.005), and anchors
without a positive are left out of the mean instead of dividing by zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glcnet.losses.contrastive import compute_dtype, info_nce_terms
from glcnet.losses.distributed import all_gather_cat, gather_with_grad, global_mean, world_info

__all__ = ["SupConLoss"]


class SupConLoss(nn.Module):
    """Supervised contrastive loss over V views of N samples.

    The ``N * V`` embeddings are L2-normalised; every one of them is an anchor, and for anchor
    ``i`` the candidates ``A(i)`` are all other embeddings and the positives ``P(i)`` those of the
    samples related to ``i``'s sample (same label, or ``mask``), the other views of ``i``'s own
    sample always included. With ``s`` the cosine similarity:

    - ``variant="out"`` (L_out, default, eq. 3):
      ``l_i = -1/|P(i)| sum_{p in P(i)} log(exp(s_ip/tau) / sum_{a in A(i)} exp(s_ia/tau))``
    - ``variant="in"`` (L_in, eq. 4):
      ``l_i = -log(1/|P(i)| sum_{p in P(i)} exp(s_ip/tau) / sum_{a in A(i)} exp(s_ia/tau))``

    The loss is the mean of ``l_i`` over the anchors that have at least one positive (anchors
    without one are left out, not counted as zero), times ``tau / base_temperature`` when a base
    temperature is given (the reference code's scaling). With neither labels nor mask each sample
    is its own class: for V = 2 this is exactly NT-Xent (``NTXentLoss``). L_in <= L_out (Jensen).

    Distributed: as ``NTXentLoss`` (local anchors, all ranks' embeddings and labels as candidates,
    the local loss scaled so that DDP's averaging gives the gradient of the global mean).

    Args:
        temperature: tau > 0.
        variant: ``"out"`` (L_out) or ``"in"`` (L_in).
        base_temperature: If set, the loss is multiplied by ``temperature / base_temperature``.
        gather_distributed: Use the embeddings of all processes as candidates.

    """

    def __init__(
        self,
        temperature: float = 0.1,
        variant: str = "out",
        base_temperature: float | None = None,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        if not (0 < temperature < float("inf")):
            raise ValueError(f"temperature must be a positive finite number, got {temperature}")
        if variant not in ("out", "in"):
            raise ValueError(f"variant must be 'out' or 'in', got {variant!r}")
        if base_temperature is not None and not (0 < base_temperature < float("inf")):
            raise ValueError(f"base_temperature must be positive or None, got {base_temperature}")
        self.temperature = float(temperature)
        self.variant = variant
        self.base_temperature = None if base_temperature is None else float(base_temperature)
        self.gather_distributed = bool(gather_distributed)

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"temperature={self.temperature}, variant={self.variant!r}, "
            f"base_temperature={self.base_temperature}, "
            f"gather_distributed={self.gather_distributed}"
        )

    def forward(
        self,
        features: Tensor,
        labels: Tensor | None = None,
        mask: Tensor | None = None,
        valid: Tensor | None = None,
    ) -> Tensor:
        """Compute the loss.

        Args:
            features: (N, V, d) embeddings of V views of N samples (normalised here); a 2-D (N, d)
                input is read as V = 1.
            labels: Sample labels: (N,) class indices (positives = same class) or (N, C) multi-hot
                (positives = samples sharing at least one class). Distributed: all ranks' labels are
                gathered.
            mask: (N, M) bool custom sample-level positives, ``mask[i, j]`` True when sample ``j``
                is a positive of sample ``i``; ``M = N`` when not distributed, the global number of
                samples (rank order) when distributed. The own sample is always a positive.
                At most one of ``labels`` and ``mask``; neither: the SimCLR case (only the other
                views of the same sample are positives).
            valid: (N,) bool; invalid samples are neither anchors nor candidates. None: all valid.

        Returns:
            Scalar loss, fp32 (fp64 for fp64 features); 0 when no anchor has a positive.

        """
        if features.dim() == 2:
            features = features[:, None]
        if features.dim() != 3:
            raise ValueError(f"features must be (N, V, d) or (N, d), got {tuple(features.shape)}")
        if labels is not None and mask is not None:
            raise ValueError("pass labels or mask, not both")
        n, v, _ = features.shape
        device = features.device
        if labels is not None and (labels.dim() not in (1, 2) or labels.shape[0] != n):
            raise ValueError(f"labels must be (N,) or (N, C) with N={n}, got {tuple(labels.shape)}")
        if valid is None:
            valid = torch.ones(n, dtype=torch.bool, device=device)
        elif valid.shape != (n,) or valid.dtype != torch.bool:
            raise ValueError(
                f"valid must be a ({n},) bool tensor, got {valid.dtype} {tuple(valid.shape)}"
            )
        rank, world = world_info()
        distributed = self.gather_distributed and world > 1
        with torch.autocast(device_type=device.type, enabled=False):
            z = F.normalize(features.to(compute_dtype(features.dtype)), dim=-1).reshape(n * v, -1)
            offset, candidates, sample_valid, all_labels = 0, z, valid, labels
            if distributed:
                sizes = all_gather_cat(torch.tensor([n], device=device))
                offset = int(sizes[:rank].sum().item())
                candidates = gather_with_grad(z)
                sample_valid = all_gather_cat(valid)
                all_labels = None if labels is None else all_gather_cat(labels)
            m = sample_valid.shape[0]
            related = self._sample_positives(n, m, offset, labels, all_labels, mask, device)
            # Rows are sample-major: row k holds view k % V of sample k // V.
            cand_sample = torch.arange(m * v, device=device) // v
            anchor_rows = torch.arange(n * v, device=device)[valid.repeat_interleave(v)]
            anchor_sample = anchor_rows // v
            logits = z[anchor_rows] @ candidates.T / self.temperature
            positive_mask = related[anchor_sample][:, cand_sample]
            own = torch.arange(m * v, device=device)[None] == (offset * v + anchor_rows)[:, None]
            self_mask = own | ~sample_valid[cand_sample][None]
            losses, defined = info_nce_terms(logits, positive_mask, self_mask, True, self.variant)
            loss = global_mean(losses.sum(), defined.sum(), distributed)
            if self.base_temperature is not None:
                loss = loss * (self.temperature / self.base_temperature)
            return loss

    @staticmethod
    def _sample_positives(
        n: int,
        m: int,
        offset: int,
        labels: Tensor | None,
        all_labels: Tensor | None,
        mask: Tensor | None,
        device: torch.device,
    ) -> Tensor:
        """Sample-level positive relation of the local samples to all samples, (N, M) bool."""
        own = (torch.arange(n, device=device) + offset)[:, None] == torch.arange(m, device=device)
        if labels is not None:
            if labels.dim() == 1:
                return own | (labels[:, None] == all_labels[None])
            shared = (labels != 0).double() @ (all_labels != 0).double().T  # classes in common
            return own | (shared > 0)
        if mask is not None:
            if mask.shape != (n, m) or mask.dtype != torch.bool:
                raise ValueError(
                    f"mask must be a ({n}, {m}) bool tensor (local samples x all samples), got "
                    f"{mask.dtype} {tuple(mask.shape)}"
                )
            return own | mask
        return own
