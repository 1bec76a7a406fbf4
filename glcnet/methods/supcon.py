"""SupCon pretraining: supervised contrastive learning with labels taken from the tiles' masks.

Reference: Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020 (seed notes 001, 004).
Labels come from the source tile's segmentation mask (``batch["mask"]``, 255 = ignore):

- ``label_mode="dominant"``: the most frequent labelled class of the tile (ties: lowest class);
  positives are the tiles with the same class;
- ``label_mode="multilabel"``: every class covering at least ``min_class_fraction`` of the tile's
  labelled pixels; positives are the tiles sharing any such class.

Tiles without a label (no labelled pixel, or no class above the fraction) have no class positive
and are left out of the loss (neither anchor nor negative). ``level="region"`` applies the same to
GLCNet's matched local regions: each region is labelled from the mask inside its source box and its
features are pooled from the decoder output exactly like GLCNet's local branch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from glcnet.data.regions import pool_regions, region_weights
from glcnet.losses.supcon import SupConLoss
from glcnet.methods.base import PretrainMethod
from glcnet.methods.simclr import global_embedding
from glcnet.models.heads import ProjectionHead
from glcnet.models.segmenter import Segmenter

__all__ = ["SupCon", "box_class_histogram", "class_histogram", "histogram_labels"]

LABEL_MODES = ("dominant", "multilabel")
LEVELS = ("tile", "region")


def _check_mask(mask: Tensor, num_classes: int, ignore_index: int) -> None:
    if mask.dim() != 3 or mask.dtype.is_floating_point:
        raise ValueError(
            f"mask must be (B, H, W) integer class indices, got {mask.dtype} {tuple(mask.shape)}"
        )
    bad = (mask != ignore_index) & ((mask < 0) | (mask >= num_classes))
    if bool(bad.any()):
        raise ValueError(
            f"mask holds values outside [0, {num_classes}) other than ignore_index={ignore_index}: "
            f"{sorted(set(mask[bad].unique().tolist()))[:10]}"
        )


def class_histogram(mask: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """Labelled pixels of each class in each tile.

    Args:
        mask: (B, H, W) integer class indices; ``ignore_index`` pixels are not counted.
        num_classes: C.
        ignore_index: Label of unlabelled pixels.

    Returns:
        (B, C) int64 counts.
    """
    _check_mask(mask, num_classes, ignore_index)
    flat = mask.reshape(mask.shape[0], -1).long()
    keep = flat != ignore_index
    bins = torch.arange(mask.shape[0], device=mask.device)[:, None] * num_classes + flat
    counts = torch.bincount(bins[keep], minlength=mask.shape[0] * num_classes)
    return counts.reshape(mask.shape[0], num_classes)


def box_class_histogram(
    mask: Tensor, boxes: Tensor, num_classes: int, ignore_index: int = 255
) -> Tensor:
    """Labelled pixels of each class inside boxes of the tiles (integral images, one per class).

    Args:
        mask: (B, H, W) integer class indices.
        boxes: (B, R, 4) integer boxes ``[row0, col0, row1, col1)`` inside the tile.
        num_classes: C.
        ignore_index: Label of unlabelled pixels.

    Returns:
        (B, R, C) int64 counts.
    """
    _check_mask(mask, num_classes, ignore_index)
    b, h, w = mask.shape
    if boxes.dim() != 3 or boxes.shape[0] != b or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be ({b}, R, 4), got {tuple(boxes.shape)}")
    boxes = boxes.long().to(mask.device)
    r0, c0, r1, c1 = boxes.unbind(-1)
    if bool(((r0 < 0) | (c0 < 0) | (r1 > h) | (c1 > w) | (r1 < r0) | (c1 < c0)).any()):
        raise ValueError(
            f"boxes must satisfy 0 <= row0 <= row1 <= {h} and 0 <= col0 <= col1 <= {w}"
        )
    stride = w + 1
    corners = torch.stack(
        [r1 * stride + c1, r0 * stride + c1, r1 * stride + c0, r0 * stride + c0], dim=-1
    ).reshape(b, -1)  # (B, 4R)
    signs = torch.tensor([1, -1, -1, 1], device=mask.device)
    out = []
    for c in range(num_classes):
        hit = (mask == c).to(torch.int32)
        integral = hit.cumsum(1, dtype=torch.int32).cumsum(2, dtype=torch.int32)
        integral = F.pad(integral, (1, 0, 1, 0)).reshape(b, -1)  # (B, (H+1)(W+1))
        vals = integral.gather(1, corners).reshape(b, -1, 4).long()
        out.append((vals * signs).sum(-1))
    return torch.stack(out, dim=-1)


def histogram_labels(counts: Tensor, mode: str = "dominant", min_fraction: float = 0.1) -> Tensor:
    """Multi-hot labels from class counts.

    Args:
        counts: (..., C) labelled pixels per class.
        mode: ``"dominant"`` (one-hot of the most frequent class, lowest index on ties) or
            ``"multilabel"`` (every class with ``count >= min_fraction * labelled pixels``).
        min_fraction: Fraction threshold of ``multilabel``, in (0, 1].

    Returns:
        (..., C) bool; all False where nothing is labelled (or, for ``multilabel``, no class reaches
        the threshold).
    """
    if mode not in LABEL_MODES:
        raise ValueError(f"label mode must be one of {LABEL_MODES}, got {mode!r}")
    total = counts.sum(-1, keepdim=True)
    if mode == "dominant":
        hot = F.one_hot(counts.argmax(-1), counts.shape[-1]).bool()
        return hot & (total > 0)
    if not 0.0 < min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction}")
    return (counts > 0) & (counts.double() >= min_fraction * total.double())


class SupCon(PretrainMethod):
    """Supervised contrastive pretraining of DeepLabV3+ with tile- or region-level labels.

    ``level="tile"``: the embedding of a view is ``g(mean_hw(aspp))`` (as SimCLR); the two views of
    every tile plus every tile with a shared label are positives. ``level="region"``: each valid
    region of each view is pooled from the decoder output through the index maps (as GLCNet's local
    branch), labelled by the mask inside its source box, and contrasted with every region of the
    batch. SupCon L_out by default (``variant="in"`` for L_in); anchors without a positive are left
    out; the regions or tiles of all processes are candidates under DDP.

    Args:
        model: The DeepLabV3+ network being pretrained (``num_classes`` sets the label width).
        label_mode: ``"dominant"`` or ``"multilabel"`` (module docstring).
        min_class_fraction: Threshold of ``multilabel``: a class counts when it covers at least this
            fraction of the labelled pixels of the tile (region).
        level: ``"tile"`` or ``"region"``.
        variant: ``"out"`` (L_out) or ``"in"`` (L_in).
        temperature: tau.
        head_dims: Hidden and output widths of the projection head (input = decoder channels).
        ignore_index: Label of unlabelled mask pixels.
        gather_distributed: Candidates from all processes.
    """

    requires_labels = True

    def __init__(
        self,
        model: Segmenter,
        label_mode: str = "dominant",
        min_class_fraction: float = 0.1,
        level: str = "tile",
        variant: str = "out",
        temperature: float = 0.1,
        head_dims: Sequence[int] = (256, 128),
        ignore_index: int = 255,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(model, uses_decoder_output=level == "region")
        if label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}")
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        if not 0.0 < min_class_fraction <= 1.0:
            raise ValueError(f"min_class_fraction must be in (0, 1], got {min_class_fraction}")
        self.label_mode = label_mode
        self.min_class_fraction = float(min_class_fraction)
        self.level = level
        self.num_classes = int(model.num_classes)
        self.ignore_index = int(ignore_index)
        self.head = ProjectionHead([model.decoder_channels, *head_dims])
        self.loss = SupConLoss(temperature, variant, gather_distributed=gather_distributed)

    def labels(self, batch: dict[str, Tensor]) -> Tensor:
        """Multi-hot labels of the tiles (B, C) or of the regions (B * R, C), bool."""
        if "mask" not in batch:
            raise KeyError("SupCon needs the tiles' labels: the batch has no 'mask'")
        mask = batch["mask"]
        if self.level == "tile":
            counts = class_histogram(mask, self.num_classes, self.ignore_index)
        else:
            counts = box_class_histogram(
                mask, batch["regions"], self.num_classes, self.ignore_index
            ).flatten(0, 1)
        return histogram_labels(counts, self.label_mode, self.min_class_fraction)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Compute the loss of a batch of view pairs.

        Args:
            batch: ``view_a``, ``view_b`` (B, C, S, S); ``mask`` (B, H, W) source-tile labels; for
                ``level="region"`` also ``index_a``, ``index_b`` (B, 2, S, S), ``regions``
                (B, R, 4) and ``region_valid`` (B, R).

        Returns:
            ``loss`` and ``labelled_fraction`` (share of tiles / valid regions that have a label).
        """
        view_a, view_b = batch["view_a"], batch["view_b"]
        n = view_a.shape[0]
        labels = self.labels(batch)
        has_label = labels.any(-1)
        if self.level == "tile":
            z = global_embedding(self.model, self.head, torch.cat([view_a, view_b]))
            feats = torch.stack([z[:n], z[n:]], dim=1)  # (B, 2, d)
            self.remember("global", z[:n], z[n:])
            valid = has_label
            considered = torch.ones_like(has_label)
        else:
            dec = self.model.features(torch.cat([view_a, view_b])).decoder
            considered = batch["region_valid"].bool()
            size = dec.shape[-2:]
            w_a = region_weights(batch["index_a"], batch["regions"], considered, size)
            w_b = region_weights(batch["index_b"], batch["regions"], considered, size)
            z_a = self.head(pool_regions(dec[:n], w_a.to(dec.dtype)))  # (B, R, d)
            z_b = self.head(pool_regions(dec[n:], w_b.to(dec.dtype)))
            feats = torch.stack([z_a, z_b], dim=2).flatten(0, 1)  # (B * R, 2, d)
            considered = considered.flatten()
            self.remember("local", feats[:, 0], feats[:, 1], considered)
            valid = considered & has_label
        loss = self.loss(feats, labels=labels.to(torch.uint8), valid=valid)
        fraction = valid.float().sum() / considered.float().sum().clamp_min(1)
        return {"loss": loss, "labelled_fraction": fraction}
