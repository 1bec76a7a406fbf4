"""SimCLR: NT-Xent over globally pooled ASPP features of two views.

Reference: Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
ICML 2020 (seed notes 002, 003). Its augmentations are ``configs/augment/simclr.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from glcnet.losses.contrastive import NTXentLoss
from glcnet.methods.base import PretrainMethod
from glcnet.models.heads import GlobalPooling, ProjectionHead
from glcnet.models.segmenter import Segmenter

__all__ = ["SimCLR", "global_embedding"]


def global_embedding(model: Segmenter, head: nn.Module, images: Tensor) -> Tensor:
    """Projection of the globally mean-pooled ASPP output (unnormalised).

    Args:
        model: The network (``features`` gives the ASPP output (B, D, h, w)).
        head: Projection head D -> d.
        images: (B, C, S, S).

    Returns:
        (B, d) embeddings.
    """
    return head(GlobalPooling("mean")(model.features(images, with_decoder=False).aspp))


class SimCLR(PretrainMethod):
    """SimCLR on DeepLabV3+: ``g(mean_hw(aspp(x)))`` of both views, NT-Xent over the 2N views.

    Every view's positive is the other view of its tile; the other ``2N - 2`` views of the batch
    (of all processes under DDP) are its negatives.

    Args:
        model: The DeepLabV3+ network being pretrained.
        head_dims: Hidden and output widths of the projection head g (input = decoder channels).
        temperature: NT-Xent temperature tau.
        batch_norm_head: BatchNorm after the hidden layer of g.
        chunk_size: Anchor chunk of the loss (bounded memory for large batches); None: unchunked.
        gather_distributed: Use the views of all processes as negatives.
    """

    def __init__(
        self,
        model: Segmenter,
        head_dims: Sequence[int] = (256, 128),
        temperature: float = 0.5,
        batch_norm_head: bool = False,
        chunk_size: int | None = None,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(model, uses_decoder_output=False)
        self.head = ProjectionHead([model.decoder_channels, *head_dims], batch_norm=batch_norm_head)
        self.loss = NTXentLoss(
            temperature, chunk_size=chunk_size, gather_distributed=gather_distributed
        )

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Compute the loss of a batch of view pairs.

        Args:
            batch: ``view_a``, ``view_b`` (B, C, S, S).

        Returns:
            ``{"loss": scalar}``.
        """
        n = batch["view_a"].shape[0]
        z = global_embedding(self.model, self.head, torch.cat([batch["view_a"], batch["view_b"]]))
        self.remember("global", z[:n], z[n:])
        return {"loss": self.loss(z[:n], z[n:])}
