"""Cross entropy: multi-class (softmax) and binary (sigmoid) for two-class tasks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from glcnet.losses.segmentation._common import (
    Prepared,
    SegmentationLoss,
    flatten_inputs,
    pixel_mean,
    weighted_pixel_mean,
)

__all__ = ["BinaryCrossEntropyLoss", "CrossEntropyLoss"]


class CrossEntropyLoss(SegmentationLoss):
    """Categorical cross entropy with class weights and an ignore label.

    ``L_CE = sum_i w_{g_i} (-log p_{g_i, i}) / sum_i w_{g_i}`` over the valid pixels ``i`` of
    the whole batch, ``p`` the softmax of the logits and ``g_i`` the target class (seed note 000,
    ``L_CCE``; with uniform weights the plain mean ``1 / (H x W) sum -log p``). This is exactly
    ``torch.nn.CrossEntropyLoss(weight, ignore_index)`` (which computes it here), except that a
    batch with no valid pixel gives 0 instead of NaN.

    Args:
        class_weights: C non-negative weights ``w_c`` (None = uniform).
        ignore_index: Label value of pixels excluded from the loss.

    Shape:
        logits (B, C, H, W), target (B, H, W) int -> scalar.
    """

    def __init__(
        self, class_weights: Sequence[float] | None = None, ignore_index: int = 255
    ) -> None:
        super().__init__(class_weights, ignore_index)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean weighted cross entropy of the valid pixels (scalar)."""
        return cross_entropy_term(self.prepare(logits, target))


def cross_entropy_term(prep: Prepared) -> Tensor:
    """Weighted mean of ``-log p_{g_i}`` over valid pixels (see :class:`CrossEntropyLoss`)."""
    return pixel_mean(-prep.true_log_prob(), prep)


class BinaryCrossEntropyLoss(SegmentationLoss):
    """Binary cross entropy for two-class tasks (background 0, foreground 1).

    ``L_BCE = sum_i w_{g_i} -[g_i log s(z_i) + (1 - g_i) log(1 - s(z_i))] / sum_i w_{g_i}``
    over valid pixels, ``s`` the sigmoid and ``g_i`` in {0, 1} (seed note 000; the seed's
    ``-(g log p) + (1 - g) log(1 - p)`` has a sign typo, this is the standard form). The
    foreground logit ``z`` is taken from

    - logits (B, 1, H, W): the single channel (``torch.nn.BCEWithLogitsLoss`` setting);
    - logits (B, 2, H, W): ``z = z_1 - z_0``, so that ``s(z)`` is the softmax probability of
      class 1 and the loss equals :class:`CrossEntropyLoss` on the same two-channel logits.

    Computed with ``binary_cross_entropy_with_logits`` (stable for large ``|z|``).

    Args:
        class_weights: Two non-negative weights ``[w_0, w_1]`` (None = uniform).
        ignore_index: Label value of pixels excluded from the loss.

    Shape:
        logits (B, 1 or 2, H, W), target (B, H, W) with values in {0, 1, ignore_index} -> scalar.
    """

    max_classes = 2

    def __init__(
        self, class_weights: Sequence[float] | None = None, ignore_index: int = 255
    ) -> None:
        super().__init__(class_weights, ignore_index)
        if self.class_weights is not None and self.class_weights.numel() != 2:
            raise ValueError(
                f"BinaryCrossEntropyLoss takes two class weights [w_0, w_1], got "
                f"{self.class_weights.tolist()}"
            )

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean weighted binary cross entropy of the valid pixels (scalar)."""
        if logits.dim() < 2 or logits.shape[1] not in (1, 2):
            raise ValueError(
                "BinaryCrossEntropyLoss needs logits (B, 1, H, W) or (B, 2, H, W), got "
                f"{tuple(logits.shape)}; use CrossEntropyLoss for more classes"
            )
        flat, flat_target = flatten_inputs(logits, target, self.ignore_index, num_labels=2)
        z = flat[:, 0] if flat.shape[1] == 1 else flat[:, 1] - flat[:, 0]
        valid = flat_target != self.ignore_index
        g = torch.where(valid, flat_target, torch.zeros_like(flat_target))
        per_pixel = F.binary_cross_entropy_with_logits(z, g.to(z.dtype), reduction="none")
        weights = None if self.class_weights is None else self.class_weights.to(z)
        return weighted_pixel_mean(per_pixel, g, valid, weights)
