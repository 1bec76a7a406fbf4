"""InfoNCE core and the NT-Xent loss (SimCLR; GLCNet's global and local losses).

References:
    Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020
    (NT-Xent, seed notes 000 and 003). Li et al., "Global and local contrastive self-supervised
    learning for semantic segmentation of HR remote sensing images", TGRS 2022 (L_G, L_L).

Numerics (DESIGN.md section 3): similarities are computed in (at least) fp32 with autocast disabled,
excluded entries are set to ``-inf`` with ``masked_fill`` (never multiplied by a mask) and every
normaliser is a ``logsumexp``, so small temperatures (tau = 0.005) stay finite.

"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from glcnet.losses.distributed import all_gather_cat, gather_with_grad, global_mean, world_info

__all__ = ["NTXentLoss", "info_nce", "info_nce_terms", "ntxent_indices"]

_REDUCTIONS = ("mean", "sum", "none")
_VARIANTS = ("out", "in")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Return the dtype the losses compute in: fp32 for 16/32-bit floats, fp64 stays fp64."""
    return torch.promote_types(dtype, torch.float32)


def _logsumexp_rows(x: Tensor) -> Tensor:
    """Row-wise logsumexp of (A, K) that keeps one (A, K) buffer for the backward pass, not two.

    ``torch.logsumexp`` saves its input and builds two more (A, K) buffers in the backward pass;
    here only ``exp(x - max)`` is saved (the subtraction's output is exponentiated in place).
    Rows must hold at least one finite entry.
    """
    shift = x.detach().amax(dim=1, keepdim=True)
    return (x - shift).exp_().sum(dim=1).log() + shift.squeeze(1)


def info_nce_terms(
    logits: Tensor,
    positive_mask: Tensor,
    self_mask: Tensor | None = None,
    positive_in_denominator: bool = True,
    variant: str = "out",
) -> tuple[Tensor, Tensor]:
    """Per-anchor InfoNCE losses and which anchors have one (see ``info_nce``).

    Returns:
        ``(losses, defined)``: (A,) losses, 0 where undefined (finite, zero gradient), and (A,)
        bool, True for anchors with at least one positive and a non-empty denominator.

    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (A, K), got shape {tuple(logits.shape)}")
    masks = {"positive_mask": positive_mask, "self_mask": self_mask}
    for name, m in masks.items():
        if m is None:
            continue
        if m.dtype != torch.bool:
            raise TypeError(f"{name} must be a bool tensor, got {m.dtype}")
        if m.shape != logits.shape:
            raise ValueError(f"{name} shape {tuple(m.shape)} != logits shape {tuple(logits.shape)}")
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
    logits = logits.to(compute_dtype(logits.dtype))
    if logits.shape[1] == 0:  # no candidate: no anchor has a loss
        return logits.sum(dim=1), torch.zeros(
            logits.shape[0], dtype=torch.bool, device=logits.device
        )
    positives = positive_mask if self_mask is None else positive_mask & ~self_mask
    excluded = self_mask  # entries out of the denominator
    if not positive_in_denominator:
        excluded = positives if excluded is None else excluded | positives
    rows, cols = positives.nonzero(as_tuple=True)  # the positives by index, (P,) each
    n_pos = torch.bincount(rows, minlength=logits.shape[0])  # (summing bools would copy to int64)
    if excluded is None:
        has_denominator = torch.ones_like(n_pos, dtype=torch.bool)
        denominator = logits
    else:
        has_denominator = ~excluded.all(dim=1)
        # Rows with nothing left keep their (finite) logits instead of all -inf so that neither the
        # value nor the gradient of logsumexp becomes NaN; `defined` discards them anyway.
        denominator = logits.masked_fill(excluded & has_denominator[:, None], float("-inf"))
    defined = (n_pos > 0) & has_denominator
    log_z = _logsumexp_rows(denominator)
    # Positive logits by index: no second (A, K) buffer, and no mask product with -inf.
    pos_logits = logits[rows, cols]
    n_pos_safe = n_pos.clamp_min(1).to(logits.dtype)
    if variant == "out":  # mean over positives of -log p(positive)
        pos_sum = logits.new_zeros(logits.shape[0]).index_add(0, rows, pos_logits)
        losses = log_z - pos_sum / n_pos_safe
    else:  # -log of the mean over positives of p(positive), a logsumexp per row
        row_max = logits.new_full((logits.shape[0],), float("-inf"))
        row_max = row_max.scatter_reduce(0, rows, pos_logits.detach(), "amax")
        row_max = torch.where(n_pos > 0, row_max, torch.zeros_like(row_max))
        sums = logits.new_zeros(logits.shape[0]).index_add(
            0, rows, (pos_logits - row_max[rows]).exp()
        )
        sums = torch.where(n_pos > 0, sums, torch.ones_like(sums))
        losses = log_z - (sums.log() + row_max) + n_pos_safe.log()
    return torch.where(defined, losses, torch.zeros_like(losses)), defined


def info_nce(
    logits: Tensor,
    positive_mask: Tensor,
    self_mask: Tensor | None,
    positive_in_denominator: bool = True,
    reduction: str = "mean",
    variant: str = "out",
) -> Tensor:
    """InfoNCE / softmax cross-entropy of anchors against candidates: the core of every loss here.

    For anchor ``i`` with positives ``P(i)`` and denominator set ``D(i)`` (all candidates but the
    excluded ones; the positives too unless ``positive_in_denominator`` is False):

    - ``variant="out"``: ``l_i = -1/|P(i)| sum_{p in P(i)} log(exp(s_ip) / Z_i)``
    - ``variant="in"``: ``l_i = -log(1/|P(i)| sum_{p in P(i)} exp(s_ip) / Z_i)``

    where ``Z_i = sum_{a in D(i)} exp(s_ia)``.

    With one positive per row both are the NT-Xent term. Computed in at least fp32 with ``-inf``
    masking and ``logsumexp``.

    Args:
        logits: Similarities divided by the temperature, (A, K) (A anchors, K candidates).
        positive_mask: (A, K) bool, the positives of each anchor (one per row for NT-Xent, any
            number for SupCon).
        self_mask: (A, K) bool, entries excluded from numerator and denominator alike (the anchor's
            own entry, invalid candidates), or None.
        positive_in_denominator: Standard InfoNCE (True) or the denominator over negatives only.
        reduction: ``"mean"`` over the anchors that have a loss, ``"sum"`` or ``"none"``.
        variant: ``"out"`` (mean of logs, SupCon L_out) or ``"in"`` (log of mean, SupCon L_in).

    Returns:
        Scalar for ``mean``/``sum``; (A,) for ``none``, NaN for anchors without a positive (or,
        with ``positive_in_denominator=False``, without a negative). Such anchors are left out of
        the mean (not counted as zero); the mean of no anchor is 0.

    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    losses, defined = info_nce_terms(
        logits, positive_mask, self_mask, positive_in_denominator, variant
    )
    if reduction == "none":
        return torch.where(defined, losses, torch.full_like(losses, float("nan")))
    total = losses.sum()
    if reduction == "sum":
        return total
    return total / defined.sum().clamp_min(1)


def ntxent_indices(
    n: int, offset: int = 0, device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """Own and positive column of every anchor of ``cat([z_a, z_b])`` among the candidates.

    The candidates are the rows of all ranks' ``cat([z_a, z_b])`` concatenated in rank order; this
    rank's block starts at row ``offset``.

    Args:
        n: Number of pairs on this rank (so 2n anchors).
        offset: Row of the candidate matrix where this rank's ``2n`` rows begin.
        device: Device of the result.

    Returns:
        ``(self_idx, pos_idx)``, each (2n,) int64: anchor ``k`` is candidate ``offset + k``, its
        positive is candidate ``offset + (k + n) mod 2n``.

    """
    k = torch.arange(2 * n, device=device)
    return offset + k, offset + (k + n) % (2 * n)


def _ntxent_chunk(
    anchors: Tensor,
    candidates: Tensor,
    candidate_valid: Tensor,
    self_idx: Tensor,
    pos_idx: Tensor,
    temperature: float,
    positive_in_denominator: bool,
) -> tuple[Tensor, Tensor]:
    """Sum of the NT-Xent losses of a chunk of anchors, and how many anchors it holds."""
    logits = (anchors / temperature) @ candidates.T
    cols = torch.arange(candidates.shape[0], device=candidates.device)
    self_mask = (cols[None] == self_idx[:, None]) | ~candidate_valid[None]
    positive_mask = cols[None] == pos_idx[:, None]
    losses, defined = info_nce_terms(logits, positive_mask, self_mask, positive_in_denominator)
    return losses.sum(), defined.sum()


class NTXentLoss(nn.Module):
    """NT-Xent (normalised temperature-scaled cross-entropy), SimCLR / GLCNet L_G and L_L.

    Row ``i`` of ``z_a`` and ``z_b`` form a positive pair; every other of the ``2N`` embeddings is a
    negative (the anchor itself excluded). With ``s`` the cosine similarity,

    ``l(i, j) = -log(exp(s_ij / tau) / sum_{k != i} exp(s_ik / tau))``

    and the loss is the mean over the ``2N`` anchors of ``l(i, j(i))`` (both directions), i.e.
    ``1/(2N) sum_k [l(2k-1, 2k) + l(2k, 2k-1)]`` as in SimCLR and GLCNet (seed note 000).

    ``positive_in_denominator=False`` is the variant of the official GLCNet code (and of the
    paper's formula with ``Lambda^-``): the sum in the denominator runs over the negatives only,
    ``l(i, j) = -log(exp(s_ij / tau) / sum_{k != i, j} exp(s_ik / tau))``. It is not bounded
    below by 0 and no longer a softmax cross-entropy; the standard form is the default.

    Distributed (``torch.distributed`` initialised, world size > 1, ``gather_distributed``): the
    anchors stay local, the candidates are all ranks' embeddings (gathered with gradient), and the
    returned local loss is ``world * (sum of local anchor losses) / (global number of anchors)``, so
    that DDP's gradient averaging yields exactly the gradient of the global mean. The mean over
    ranks of the returned values is the global loss (all-reduce it for logging).

    Args:
        temperature: tau > 0.
        positive_in_denominator: Standard InfoNCE (True) or the official GLCNet variant (False).
        chunk_size: Process the anchors in chunks of this many rows, each recomputed in the backward
            pass (activation checkpointing), so the peak memory is O(chunk_size * 2N) instead of
            O((2N)^2) at the cost of one more similarity product. Same values and gradients. None:
            all anchors at once.
        gather_distributed: Use the embeddings of all processes as candidates.

    """

    def __init__(
        self,
        temperature: float = 0.5,
        positive_in_denominator: bool = True,
        chunk_size: int | None = None,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        if not (temperature > 0 and temperature < float("inf")):
            raise ValueError(f"temperature must be a positive finite number, got {temperature}")
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size}")
        self.temperature = float(temperature)
        self.positive_in_denominator = bool(positive_in_denominator)
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.gather_distributed = bool(gather_distributed)

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"temperature={self.temperature}, "
            f"positive_in_denominator={self.positive_in_denominator}, "
            f"chunk_size={self.chunk_size}, gather_distributed={self.gather_distributed}"
        )

    def forward(self, z_a: Tensor, z_b: Tensor, valid: Tensor | None = None) -> Tensor:
        """Compute the loss.

        Args:
            z_a: Embeddings of the first views, (N, d); L2-normalised here.
            z_b: Embeddings of the second views, (N, d); row ``i`` is the positive of ``z_a[i]``.
            valid: (N,) bool; invalid pairs are neither anchors nor candidates (e.g. local regions
                that did not fit in the crop). None: all valid.

        Returns:
            Scalar fp32 (fp64 for fp64 inputs) loss. Anchors without a negative (only possible with
            ``positive_in_denominator=False``) are left out; with no anchor at all the loss is 0.

        """
        if z_a.dim() != 2 or z_a.shape != z_b.shape:
            raise ValueError(
                f"z_a and z_b must both be (N, d), got {tuple(z_a.shape)} and {tuple(z_b.shape)}"
            )
        n = z_a.shape[0]
        if valid is None:
            valid = torch.ones(n, dtype=torch.bool, device=z_a.device)
        elif valid.shape != (n,) or valid.dtype != torch.bool:
            raise ValueError(
                f"valid must be a ({n},) bool tensor, got {valid.dtype} {tuple(valid.shape)}"
            )
        rank, world = world_info()
        distributed = self.gather_distributed and world > 1
        with torch.autocast(device_type=z_a.device.type, enabled=False):
            dtype = compute_dtype(torch.promote_types(z_a.dtype, z_b.dtype))
            local = F.normalize(torch.cat([z_a, z_b]).to(dtype), dim=1)  # (2N, d)
            local_valid = torch.cat([valid, valid])
            offset = 0
            candidates, candidate_valid = local, local_valid
            if distributed:
                sizes = all_gather_cat(torch.tensor([2 * n], device=z_a.device))
                offset = int(sizes[:rank].sum().item())
                candidates = gather_with_grad(local)
                candidate_valid = all_gather_cat(local_valid)
            self_idx, pos_idx = ntxent_indices(n, offset, z_a.device)
            anchors = local[local_valid]
            total, count = self._chunked_sum(
                anchors, candidates, candidate_valid, self_idx[local_valid], pos_idx[local_valid]
            )
            return global_mean(total, count, distributed)

    def _chunked_sum(
        self,
        anchors: Tensor,
        candidates: Tensor,
        candidate_valid: Tensor,
        self_idx: Tensor,
        pos_idx: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Sum of the anchors' losses and their count, chunk by chunk (checkpointed when needed)."""
        fn = functools.partial(
            _ntxent_chunk,
            temperature=self.temperature,
            positive_in_denominator=self.positive_in_denominator,
        )
        a = anchors.shape[0]
        if self.chunk_size is None or self.chunk_size >= a:
            return fn(anchors, candidates, candidate_valid, self_idx, pos_idx)
        recompute = torch.is_grad_enabled() and (anchors.requires_grad or candidates.requires_grad)
        total = anchors.new_zeros(())
        count = torch.zeros((), dtype=torch.long, device=anchors.device)
        for start in range(0, a, self.chunk_size):
            sl = slice(start, start + self.chunk_size)
            args = (anchors[sl], candidates, candidate_valid, self_idx[sl], pos_idx[sl])
            if recompute:
                s, c = checkpoint(fn, *args, use_reentrant=False)
            else:
                s, c = fn(*args)
            total = total + s
            count = count + c
        return total, count
