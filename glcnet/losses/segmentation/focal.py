"""Focal loss (softmax, multi-class)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from glcnet.losses.segmentation._common import (
    Prepared,
    SegmentationLoss,
    check_range,
    focal_power,
    pixel_mean,
)

__all__ = ["FocalLoss", "focal_term"]


class FocalLoss(SegmentationLoss):
    """Focal loss on softmax probabilities.

    ``L_F = sum_i w_{g_i} (1 - p_{g_i,i})^gamma (-log p_{g_i,i}) / sum_i w_{g_i}`` over the
    valid pixels of the batch (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017;
    seed note 000, ``L_F``). The seed's balancing factor ``alpha_{g}`` is ``class_weights``; the
    seed divides by ``H x W``, we divide by ``sum_i w_{g_i}`` (the same when the weights are
    uniform), so that ``gamma = 0`` is exactly the weighted :class:`CrossEntropyLoss`.

    Not ``smp.losses.FocalLoss``: in multi-class mode smp sums one-vs-rest *sigmoid* focal terms
    over the classes (and its ``alpha`` is a positive/negative balance), which is not the seed's
    softmax formula.

    Args:
        gamma: Focusing parameter >= 0 (0 = cross entropy; 2 in Lin et al.).
        class_weights: C non-negative weights ``alpha_c`` (None = uniform).
        ignore_index: Label value of pixels excluded from the loss.

    Shape:
        logits (B, C, H, W), target (B, H, W) int -> scalar.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(class_weights, ignore_index)
        self.gamma = check_range("gamma", gamma, low=0.0)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Weighted mean focal loss of the valid pixels (scalar)."""
        return focal_term(self.prepare(logits, target), self.gamma)

    def extra_repr(self) -> str:  # noqa: D102
        return f"gamma={self.gamma}, {super().extra_repr()}"


def focal_term(
    prep: Prepared, gamma: float | Sequence[float], class_scale: Tensor | None = None
) -> Tensor:
    """Weighted mean of ``s_{g_i} (1 - p_{g_i})^gamma_{g_i} (-log p_{g_i})`` over valid pixels.

    ``1 - p`` is computed as ``-expm1(log p)`` (exact near p = 1).

    Args:
        prep: The prepared inputs.
        gamma: Focusing exponent for every class (float) or one per class (C floats).
        class_scale: Optional (C,) factor ``s_c`` applied inside the sum, *not* normalised (the
            unified focal loss's ``delta`` / ``1 - delta``); None = 1.

    Returns:
        Scalar tensor.
    """
    log_pt = prep.true_log_prob()
    miss = -torch.expm1(log_pt)
    if isinstance(gamma, Sequence):
        if len(gamma) != prep.num_classes:
            raise ValueError(f"{len(gamma)} focal exponents for {prep.num_classes} classes")
        factor = torch.zeros_like(miss)
        for value in sorted({float(g) for g in gamma}):
            classes = torch.tensor([float(g) == value for g in gamma], device=miss.device)
            factor = torch.where(classes[prep.target], focal_power(miss, value), factor)
    else:
        factor = focal_power(miss, gamma)
    per_pixel = factor * (-log_pt)
    if class_scale is not None:
        per_pixel = per_pixel * class_scale[prep.target]
    return pixel_mean(per_pixel, prep)
