"""Tversky and focal Tversky losses (multi-class, batch-wide counts)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from glcnet.losses.segmentation._common import (
    Prepared,
    SegmentationLoss,
    check_range,
    class_mean,
    focal_power,
    soft_counts,
    tversky_index,
)

__all__ = ["FocalTverskyLoss", "TverskyLoss", "check_tversky_weights", "focal_tversky_term"]


def check_tversky_weights(alpha: float, beta: float) -> tuple[float, float]:
    """Validate the FP / FN weights: both >= 0 and not both 0."""
    alpha = check_range("alpha", alpha, low=0.0)
    beta = check_range("beta", beta, low=0.0)
    if alpha + beta <= 0:
        raise ValueError("alpha and beta must not both be 0 (the index would be constant)")
    return alpha, beta


class TverskyLoss(SegmentationLoss):
    """Tversky loss, mean over the classes present in the batch.

    ``TI_c = (TP_c + s) / (TP_c + alpha FP_c + beta FN_c + s)`` with soft counts summed over the
    whole batch (see :class:`~glcnet.losses.segmentation.DiceLoss`) and
    ``L_T = sum_{c present} w_c (1 - TI_c) / sum_{c present} w_c``
    (Salehi et al., "Tversky loss function for image segmentation using 3D fully convolutional
    deep networks", MLMI 2017; seed note 000, ``L_T``, summed there over all classes). alpha
    weighs false positives, beta false negatives; alpha = beta = 1/2 is the Dice loss (with
    ``smooth`` doubled there: ``(2 TP + 2s) / (2 TP + FP + FN + 2s)``).

    Equal to ``smp.losses.TverskyLoss`` (gamma = 1, smooth = 0, ``ignore_index`` passed) when
    every class is present; we keep our own for the absent-class convention and for the focal
    variant (smp raises the *class mean* to gamma, not each class term).

    Args:
        alpha: FP weight >= 0 (0.3 in the seed / Salehi et al.).
        beta: FN weight >= 0 (0.7; beta > alpha favours recall).
        smooth: ``s >= 0`` added to numerator and denominator (only guards the division).
        class_weights: C non-negative weights ``w_c`` (None = uniform).
        ignore_index: Label value of pixels excluded from the counts.

    Shape:
        logits (B, C, H, W), target (B, H, W) int -> scalar in [0, 1].
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        smooth: float = 1e-6,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(class_weights, ignore_index)
        self.alpha, self.beta = check_tversky_weights(alpha, beta)
        self.smooth = check_range("smooth", smooth, low=0.0)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean Tversky loss over the present classes (scalar)."""
        prep = self.prepare(logits, target)
        return focal_tversky_term(prep, self.alpha, self.beta, 1.0, self.smooth)

    def extra_repr(self) -> str:  # noqa: D102
        return f"alpha={self.alpha}, beta={self.beta}, smooth={self.smooth}, {super().extra_repr()}"


class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky loss, mean over the classes present in the batch.

    ``L_FT = sum_{c present} w_c (1 - TI_c)^(1/gamma) / sum_{c present} w_c`` with ``TI_c`` as
    in :class:`TverskyLoss` (Abraham and Khan, "A novel focal Tversky loss function with improved
    attention U-Net for lesion segmentation", ISBI 2019; seed note 000, ``L_FT``). gamma = 1 is
    the Tversky loss; gamma = 4/3 (exponent 0.75), the paper's best, raises the loss of
    well-segmented classes relative to the Tversky loss.

    Args:
        alpha: FP weight >= 0.
        beta: FN weight >= 0.
        gamma: Focal parameter > 0 (the exponent is ``1 / gamma``).
        smooth: ``s >= 0`` added to numerator and denominator (only guards the division).
        class_weights: C non-negative weights ``w_c`` (None = uniform).
        ignore_index: Label value of pixels excluded from the counts.

    Shape:
        logits (B, C, H, W), target (B, H, W) int -> scalar in [0, 1].
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 4.0 / 3.0,
        smooth: float = 1e-6,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(alpha, beta, smooth, class_weights, ignore_index)
        self.gamma = check_range("gamma", gamma, low=0.0, low_open=True)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean focal Tversky loss over the present classes (scalar)."""
        prep = self.prepare(logits, target)
        return focal_tversky_term(prep, self.alpha, self.beta, 1.0 / self.gamma, self.smooth)

    def extra_repr(self) -> str:  # noqa: D102
        return f"gamma={self.gamma}, {super().extra_repr()}"


def focal_tversky_term(
    prep: Prepared,
    alpha: float,
    beta: float,
    exponent: float | Sequence[float],
    smooth: float,
) -> Tensor:
    """Weighted mean of ``(1 - TI_c)^e_c`` over the present classes.

    Args:
        prep: The prepared inputs.
        alpha: FP weight.
        beta: FN weight.
        exponent: ``e`` for every class (float) or one per class (C floats).
        smooth: Added to numerator and denominator of ``TI``.

    Returns:
        Scalar tensor.
    """
    tp, fp, fn, present = soft_counts(prep)
    miss = 1.0 - tversky_index(tp, fp, fn, alpha, beta, smooth)
    if isinstance(exponent, Sequence):
        per_class = torch.stack([focal_power(miss[c], float(e)) for c, e in enumerate(exponent)])
    else:
        per_class = focal_power(miss, exponent)
    return class_mean(per_class, present, prep)
