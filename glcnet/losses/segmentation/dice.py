"""Soft Dice loss (multi-class, batch-wide counts)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from glcnet.losses.segmentation._common import (
    Prepared,
    SegmentationLoss,
    check_range,
    class_mean,
    soft_counts,
    tversky_index,
)

__all__ = ["DiceLoss", "dice_coefficients", "dice_loss_term"]


class DiceLoss(SegmentationLoss):
    """Soft Dice loss, mean over the classes present in the batch.

    ``DSC_c = (2 TP_c + s) / (2 TP_c + FP_c + FN_c + s)`` with soft counts summed over the whole
    batch (``TP_c = sum p_c g_c``, ``FP_c = sum p_c (1 - g_c)``, ``FN_c = sum (1 - p_c) g_c`` over
    valid pixels, ``p`` the softmax), and
    ``L_DSC = sum_{c present} w_c (1 - DSC_c) / sum_{c present} w_c``
    (seed note 000, ``L_DSC``; Milletari et al. 2016, V-Net). "Present" = at least one valid
    target pixel of class c in the batch; absent classes are left out of the mean (see
    ``glcnet.losses.segmentation._common``). The seed sums over all classes; the mean differs by
    the constant factor C when every class is present.

    Not ``smp.losses.DiceLoss``: smp gives absent classes a loss of 0 but still counts them in
    the mean (its value shrinks with the number of absent classes). With every class present,
    ``smooth = 0`` and ``ignore_index`` passed explicitly to smp (without it smp one-hot encodes
    the ignore label and fails), both agree exactly (tested).

    Args:
        smooth: ``s >= 0`` added to numerator and denominator (only guards the division).
        class_weights: C non-negative weights ``w_c`` (None = uniform).
        ignore_index: Label value of pixels excluded from the counts.

    Shape:
        logits (B, C, H, W), target (B, H, W) int -> scalar in [0, 1].
    """

    def __init__(
        self,
        smooth: float = 1e-6,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(class_weights, ignore_index)
        self.smooth = check_range("smooth", smooth, low=0.0)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean soft Dice loss over the present classes (scalar)."""
        return dice_loss_term(self.prepare(logits, target), self.smooth)

    def extra_repr(self) -> str:  # noqa: D102
        return f"smooth={self.smooth}, {super().extra_repr()}"


def dice_loss_term(prep: Prepared, smooth: float) -> Tensor:
    """Weighted mean of ``1 - DSC_c`` over the present classes (0 if none is present)."""
    dsc, present = dice_coefficients(prep, smooth)
    return class_mean(1.0 - dsc, present, prep)


def dice_coefficients(prep: Prepared, smooth: float) -> tuple[Tensor, Tensor]:
    """Soft Dice coefficient per class and which classes are present, both (C,).

    ``(2 TP + s) / (2 TP + FP + FN + s)`` is the Tversky index with alpha = beta = 1 applied to
    ``2 TP``.
    """
    tp, fp, fn, present = soft_counts(prep)
    return tversky_index(2.0 * tp, fp, fn, 1.0, 1.0, smooth), present
