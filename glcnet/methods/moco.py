"""MoCo v2: a momentum encoder and a queue of its keys as negatives (and a supervised variant).

References: He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR
2020; Chen et al., "Improved Baselines with Momentum Contrastive Learning" (v2: MLP head, tau 0.2);
the memory-queue SupCon of seed note 001 (8192 stored keys).

The query ``q = normalise(g(mean_hw(aspp(view_a))))`` comes from the trained network; the key
``k`` of ``view_b`` from a momentum copy of network and head (no gradient; its parameters follow
``theta_k <- mu theta_k + (1 - mu) theta_q`` after every optimizer step). The loss is InfoNCE of
``q`` with ``k`` as the positive and the ``queue_size`` queued keys of earlier batches as negatives
(built with :func:`glcnet.losses.contrastive.info_nce_terms`); afterwards the keys of all processes
are enqueued. ``symmetric=True`` adds the swapped term (query of view b, key of view a), averages the
two and enqueues both sets of keys (all processes' keys of view b, then all keys of view a, so the
queue is the same as with one process).

MoCo's shuffle-BN is not implemented: it only hides the batch statistics a key shares with its own
query within one GPU; with several GPUs use synchronised batch norm (``trainer=ddp`` sets
``sync_batchnorm: true``), which computes the statistics over the whole global batch.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from glcnet.losses.contrastive import compute_dtype, info_nce_terms
from glcnet.losses.distributed import all_gather_cat, global_mean, world_info
from glcnet.losses.memory import Queue
from glcnet.methods.base import PretrainMethod
from glcnet.methods.simclr import global_embedding
from glcnet.methods.supcon import LABEL_MODES, class_histogram, histogram_labels
from glcnet.models.heads import ProjectionHead
from glcnet.models.segmenter import Segmenter

__all__ = ["MoCo", "MoCoSupCon", "moco_loss", "moco_supcon_loss"]


def moco_loss(
    queries: Tensor,
    keys: Tensor,
    queue: Tensor,
    temperature: float = 0.2,
    gather_distributed: bool = True,
) -> Tensor:
    """MoCo's InfoNCE: ``-log(exp(q.k/tau) / (exp(q.k/tau) + sum_{u in queue} exp(q.u/tau)))``.

    Args:
        queries: (A, d) queries (L2-normalised here).
        keys: (A, d) their positive keys (normalised here, no gradient).
        queue: (K, d) negative keys (unit rows, no gradient).
        temperature: tau.
        gather_distributed: Mean over the anchors of all processes (local loss scaled as in
            :func:`glcnet.losses.distributed.global_mean`).

    Returns:
        Scalar, fp32 (fp64 for fp64 inputs).
    """
    if queries.dim() != 2 or keys.shape != queries.shape or queue.shape[1:] != queries.shape[1:]:
        raise ValueError(
            f"queries (A, d), keys (A, d) and queue (K, d) disagree: {tuple(queries.shape)}, "
            f"{tuple(keys.shape)}, {tuple(queue.shape)}"
        )
    distributed = gather_distributed and world_info()[1] > 1
    with torch.autocast(device_type=queries.device.type, enabled=False):
        dtype = compute_dtype(queries.dtype)
        q = F.normalize(queries.to(dtype), dim=1)
        k = F.normalize(keys.detach().to(dtype), dim=1)
        q = q / temperature
        positive_logit = (q * k).sum(1, keepdim=True)  # (A, 1)
        logits = torch.cat([positive_logit, q @ queue.detach().to(dtype).T], dim=1)  # (A, 1 + K)
        positive = torch.zeros_like(logits, dtype=torch.bool)
        positive[:, 0] = True
        losses, defined = info_nce_terms(logits, positive)
        return global_mean(losses.sum(), defined.sum(), distributed)


def moco_supcon_loss(
    queries: Tensor,
    labels: Tensor,
    candidates: Tensor,
    candidate_labels: Tensor,
    own: Tensor,
    temperature: float = 0.1,
    variant: str = "out",
    valid: Tensor | None = None,
    gather_distributed: bool = True,
) -> Tensor:
    """SupCon of queries against fixed candidates (momentum keys): positives share a label.

    Anchor ``a``'s positives are its own key (column ``own[a]``) and every candidate whose
    multi-hot label shares a class with ``labels[a]``; all candidates are in the denominator.
    L_out (``variant="out"``) or L_in (``"in"``) as in :class:`glcnet.losses.supcon.SupConLoss`.

    Args:
        queries: (A, d) queries (normalised here).
        labels: (A, C) multi-hot labels of the queries.
        candidates: (K, d) keys (normalised here, no gradient).
        candidate_labels: (K, C) multi-hot labels of the keys.
        own: (A,) int64 column of each query's own key.
        temperature: tau.
        variant: ``"out"`` or ``"in"``.
        valid: (A,) bool anchors taking part; None: all.
        gather_distributed: Mean over the anchors of all processes.

    Returns:
        Scalar, fp32 (fp64 for fp64 inputs).
    """
    a = queries.shape[0]
    if (
        labels.shape[0] != a
        or own.shape != (a,)
        or candidate_labels.shape[0] != candidates.shape[0]
    ):
        raise ValueError("queries/labels/own and candidates/candidate_labels must agree in length")
    distributed = gather_distributed and world_info()[1] > 1
    with torch.autocast(device_type=queries.device.type, enabled=False):
        dtype = compute_dtype(queries.dtype)
        q = F.normalize(queries.to(dtype), dim=1)
        c = F.normalize(candidates.detach().to(dtype), dim=1)
        logits = (q / temperature) @ c.T
        shared = (labels != 0).to(dtype) @ (candidate_labels != 0).to(dtype).T > 0
        cols = torch.arange(c.shape[0], device=q.device)
        positive = shared | (cols[None] == own.long()[:, None])
        if valid is not None:
            positive = positive & valid[:, None]  # invalid anchors: no positive, left out
        losses, defined = info_nce_terms(logits, positive, None, True, variant)
        return global_mean(losses.sum(), defined.sum(), distributed)


class MoCo(PretrainMethod):
    """MoCo v2 on DeepLabV3+ (module docstring).

    Args:
        model: The DeepLabV3+ network being pretrained.
        head_dims: Hidden and output widths of the MLP head (input = decoder channels).
        temperature: tau (0.2 in MoCo v2).
        momentum: mu of the key encoder's moving average (0.999 in MoCo; 0.99 for short runs).
        queue_size: Number of queued keys (any size; need not be a multiple of the batch).
        symmetric: Also use view b as query and view a as key.
        gather_distributed: Mean over all processes' anchors; enqueue every process's keys.
    """

    def __init__(
        self,
        model: Segmenter,
        head_dims: Sequence[int] = (256, 128),
        temperature: float = 0.2,
        momentum: float = 0.999,
        queue_size: int = 8192,
        symmetric: bool = False,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(model, uses_decoder_output=False)
        if not 0 < temperature < float("inf"):
            raise ValueError(f"temperature must be a positive finite number, got {temperature}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.head = ProjectionHead([model.decoder_channels, *head_dims])
        self.key_model = copy.deepcopy(model).requires_grad_(False)
        self.key_head = copy.deepcopy(self.head).requires_grad_(False)
        self.queue = Queue(queue_size, self.head.out_dim, label_dim=self._label_dim(model))
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.symmetric = bool(symmetric)
        self.gather_distributed = bool(gather_distributed)

    def _label_dim(self, model: Segmenter) -> int:
        """Width of the labels stored with the queued keys (none for plain MoCo)."""
        return 0

    def _pairs(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Normalised queries (with gradient) and their keys (without), (P, d) each.

        P = B: queries of view a, keys of view b; symmetric: P = 2B, then also the queries of
        view b with the keys of view a.
        """
        view_a, view_b = batch["view_a"], batch["view_b"]
        q_in, k_in = view_a, view_b
        if self.symmetric:
            q_in, k_in = torch.cat([view_a, view_b]), torch.cat([view_b, view_a])
        q = F.normalize(global_embedding(self.model, self.head, q_in).float(), dim=1)
        with torch.no_grad():
            k = F.normalize(global_embedding(self.key_model, self.key_head, k_in).float(), dim=1)
        self.remember("global", q, k)
        return q, k

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Compute the loss, then enqueue the keys.

        Args:
            batch: ``view_a``, ``view_b`` (B, C, S, S).

        Returns:
            ``{"loss": scalar}``.
        """
        q, k = self._pairs(batch)
        queue, _ = self.queue.snapshot()
        # the symmetric loss is the mean of its two terms = the mean over its 2B anchors
        loss = moco_loss(q, k, queue, self.temperature, self.gather_distributed)
        if self.training:
            self._enqueue(k)
        return {"loss": loss}

    def _enqueue(self, keys: Tensor, labels: Tensor | None = None) -> None:
        """Enqueue the keys of :meth:`_pairs` one view at a time (process-count independent order)."""
        views = 2 if self.symmetric else 1
        n = len(keys) // views
        for v in range(views):
            part = slice(v * n, (v + 1) * n)
            self.queue.enqueue(
                keys[part],
                None if labels is None else labels[part],
                gather_distributed=self.gather_distributed,
            )

    @torch.no_grad()
    def on_train_step_end(self) -> None:
        """Momentum update of the key encoder and head (parameters only; BN keeps its own stats)."""
        for query, key in ((self.model, self.key_model), (self.head, self.key_head)):
            for p_q, p_k in zip(query.parameters(), key.parameters(), strict=True):
                p_k.mul_(self.momentum).add_(p_q.detach(), alpha=1.0 - self.momentum)


class MoCoSupCon(MoCo):
    """MoCo with the SupCon loss: queued keys carry tile labels, and same-class keys are positives.

    Labels come from the tile masks as in :class:`glcnet.methods.supcon.SupCon` (tile level). The
    candidates of a query are the keys of the whole current batch (all processes) and the queue;
    its positives are its own key and every candidate sharing a label. Tiles without a label are
    not anchors, and their keys are enqueued with an empty label (negatives only). The initial
    random queue entries carry no label either.

    Args:
        model: The DeepLabV3+ network being pretrained.
        label_mode: ``"dominant"`` or ``"multilabel"``.
        min_class_fraction: Threshold of ``multilabel``.
        variant: ``"out"`` (L_out) or ``"in"`` (L_in).
        temperature: tau (0.1 for SupCon).
        ignore_index: Label of unlabelled mask pixels.
        **kwargs: The arguments of :class:`MoCo` (head_dims, momentum, queue_size, symmetric,
            gather_distributed).
    """

    requires_labels = True

    def __init__(
        self,
        model: Segmenter,
        label_mode: str = "dominant",
        min_class_fraction: float = 0.1,
        variant: str = "out",
        temperature: float = 0.1,
        ignore_index: int = 255,
        **kwargs,
    ) -> None:
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
        if variant not in ("out", "in"):
            raise ValueError(f"variant must be 'out' or 'in', got {variant!r}")
        super().__init__(model, temperature=temperature, **kwargs)
        self.num_classes = int(model.num_classes)
        self.label_mode = label_mode
        self.min_class_fraction = float(min_class_fraction)
        self.variant = variant
        self.ignore_index = int(ignore_index)

    def _label_dim(self, model: Segmenter) -> int:
        """Labels of the queued keys: one multi-hot bit per class."""
        return int(model.num_classes)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Compute the loss, then enqueue the keys with their labels.

        Args:
            batch: ``view_a``, ``view_b`` (B, C, S, S); ``mask`` (B, H, W) source-tile labels.

        Returns:
            ``loss`` and ``labelled_fraction``.
        """
        if "mask" not in batch:
            raise KeyError("MoCoSupCon needs the tiles' labels: the batch has no 'mask'")
        counts = class_histogram(batch["mask"], self.num_classes, self.ignore_index)
        labels = histogram_labels(counts, self.label_mode, self.min_class_fraction)
        q, k = self._pairs(batch)
        labels = labels.repeat(len(q) // len(labels), 1).to(torch.uint8)  # per pair
        rank_offset, keys, key_labels = 0, k, labels
        if self.gather_distributed and world_info()[1] > 1:
            sizes = all_gather_cat(torch.tensor([len(k)], device=k.device))
            rank_offset = int(sizes[: world_info()[0]].sum())
            keys, key_labels = all_gather_cat(k), all_gather_cat(labels)
        queue, queue_labels = self.queue.snapshot()
        own = rank_offset + torch.arange(len(q), device=q.device)
        loss = moco_supcon_loss(
            q,
            labels,
            torch.cat([keys, queue.to(keys.dtype)]),
            torch.cat([key_labels, queue_labels.to(key_labels.device)]),
            own,
            self.temperature,
            self.variant,
            valid=labels.bool().any(-1),
            gather_distributed=self.gather_distributed,
        )
        if self.training:
            self._enqueue(k, labels)
        return {"loss": loss, "labelled_fraction": labels.bool().any(-1).float().mean()}
