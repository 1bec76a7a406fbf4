"""GLCNet: global style contrastive + local matching contrastive learning on DeepLabV3+.

Reference: Li et al., "Global and local contrastive self-supervised learning for semantic
segmentation of HR remote sensing images", IEEE TGRS 2022 (seed note 000).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from glcnet.data.regions import pool_regions, region_weights
from glcnet.losses.contrastive import NTXentLoss
from glcnet.methods.base import PretrainMethod
from glcnet.models.heads import GlobalPooling, ProjectionHead
from glcnet.models.segmenter import Segmenter, SegmenterFeatures


class GLCNet(PretrainMethod):
    """The GLCNet pretraining objective and its ablations.

    ``L = lambda * L_G + (1 - lambda) * L_L`` where L_G is NT-Xent over global descriptors of the
    ASPP output (style = channel mean and variance, or mean only) and L_L is NT-Xent over local
    regions of the decoder output that cover exactly the same source pixels in both views; every other
    region of the batch (all ranks) is a negative.

    Args:
        model: The DeepLabV3+ network being pretrained.
        global_pooling: ``"style"`` (mean and variance), ``"mean"`` (SimCLR-like, the "no style"
            ablation) or None (no global branch).
        global_head_dims: Hidden and output widths of the global head g (its input width follows from
            the pooling and the decoder channels), e.g. ``(256, 64)`` gives 512-256-64 for style.
        local_head_dims: Hidden and output widths of the local head g_L (input = decoder channels), or
            None for no local branch.
        temperature: NT-Xent temperature tau of both branches.
        lambda_: Weight of the global loss (``1 - lambda_`` for the local loss); ignored when a
            branch is disabled.
        positive_in_denominator: Standard InfoNCE (True) or the official code's variant that leaves the
            positive out of the denominator (False).
        local_chunk_size: Anchor chunk of the local loss (bounds its O(N_L^2) memory); None: unchunked.
        gather_distributed: Use negatives from all processes.
        concat_views: Run both views through the network as one batch of 2B (one pass; batch norm
            sees both views; usually fastest on GPUs) or as two batches of B (faster on CPUs).
    """

    def __init__(
        self,
        model: Segmenter,
        global_pooling: str | None = "style",
        global_head_dims: Sequence[int] = (256, 64),
        local_head_dims: Sequence[int] | None = (64, 64),
        temperature: float = 0.5,
        lambda_: float = 0.5,
        positive_in_denominator: bool = True,
        local_chunk_size: int | None = 4096,
        gather_distributed: bool = True,
        concat_views: bool = True,
    ) -> None:
        super().__init__(model, uses_decoder_output=local_head_dims is not None)
        if global_pooling is None and local_head_dims is None:
            raise ValueError("GLCNet needs at least one branch: global_pooling or local_head_dims")
        if not 0.0 <= lambda_ <= 1.0:
            raise ValueError(f"lambda_ must be in [0, 1], got {lambda_}")
        channels = model.decoder_channels
        self.global_pooling = GlobalPooling(global_pooling) if global_pooling else None
        self.global_head = (
            ProjectionHead([self.global_pooling.output_dim(channels), *global_head_dims])
            if self.global_pooling
            else None
        )
        self.local_head = (
            ProjectionHead([channels, *local_head_dims]) if local_head_dims is not None else None
        )
        self.global_loss = NTXentLoss(
            temperature, positive_in_denominator, gather_distributed=gather_distributed
        )
        self.local_loss = NTXentLoss(
            temperature,
            positive_in_denominator,
            chunk_size=local_chunk_size,
            gather_distributed=gather_distributed,
        )
        self.concat_views = concat_views
        both = self.global_head is not None and self.local_head is not None
        self.weights = (lambda_, 1.0 - lambda_) if both else (1.0, 1.0)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Compute the losses of a batch of view pairs.

        Args:
            batch: ``view_a``, ``view_b`` (B, C, S, S); ``index_a``, ``index_b`` (B, 2, S, S) source
                pixel of every view pixel; ``regions`` (B, R, 4) boxes in source pixels;
                ``region_valid`` (B, R) bool.

        Returns:
            ``loss`` (the total) and, per active branch, ``loss_global`` / ``loss_local``, plus
            ``regions_per_image`` (mean number of valid regions).
        """
        view_a, view_b = batch["view_a"], batch["view_b"]
        n = view_a.shape[0]
        with_decoder = self.uses_decoder_output
        if self.concat_views:
            feats = self.model.features(torch.cat([view_a, view_b]), with_decoder=with_decoder)
        else:
            fa = self.model.features(view_a, with_decoder=with_decoder)
            fb = self.model.features(view_b, with_decoder=with_decoder)
            feats = SegmenterFeatures(
                aspp=torch.cat([fa.aspp, fb.aspp]),
                decoder=torch.cat([fa.decoder, fb.decoder]) if with_decoder else None,
            )
        out: dict[str, Tensor] = {}
        total = view_a.new_zeros((), dtype=torch.float32)
        if self.global_head is not None:
            z = self.global_head(self.global_pooling(feats.aspp))
            self.remember("global", z[:n], z[n:])
            out["loss_global"] = self.global_loss(z[:n], z[n:])
            total = total + self.weights[0] * out["loss_global"]
        if self.local_head is not None:
            valid = batch["region_valid"].bool()
            dec = feats.decoder
            size = dec.shape[-2:]
            w_a = region_weights(batch["index_a"], batch["regions"], valid, size).to(dec.dtype)
            w_b = region_weights(batch["index_b"], batch["regions"], valid, size).to(dec.dtype)
            z_a = self.local_head(pool_regions(dec[:n], w_a))
            z_b = self.local_head(pool_regions(dec[n:], w_b))
            self.remember("local", z_a.flatten(0, 1), z_b.flatten(0, 1), valid.flatten())
            out["loss_local"] = self.local_loss(
                z_a.flatten(0, 1), z_b.flatten(0, 1), valid.flatten()
            )
            total = total + self.weights[1] * out["loss_local"]
            out["regions_per_image"] = valid.float().sum(1).mean()
        out["loss"] = total
        return out
