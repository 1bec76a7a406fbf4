"""Combo loss: weighted cross entropy minus Dice coefficient."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from glcnet.losses.segmentation._common import SegmentationLoss, check_range, class_mean
from glcnet.losses.segmentation.cross_entropy import cross_entropy_term
from glcnet.losses.segmentation.dice import dice_coefficients

__all__ = ["ComboLoss"]


class ComboLoss(SegmentationLoss):
    """Combo loss in the seed's multi-class form.

    ``L_combo = alpha L_mCE - (1 - alpha) DSC`` (Taghanaki et al., "Combo loss: handling input
    and output imbalance in multi-organ segmentation", CMIG 2019; seed note 000), with

    - ``L_mCE = sum_i beta_{g_i} (-log p_{g_i,i}) / sum_i beta_{g_i}``: the weighted
      :class:`CrossEntropyLoss`, the seed's per-class ``beta_c`` being ``class_weights`` (the
      seed divides by ``H x W``; identical for uniform weights);
    - ``DSC``: the soft Dice coefficient of :class:`DiceLoss` (batch-wide counts, weighted mean
      over the present classes, same ``class_weights``).

    As in the paper the Dice term enters with a minus sign, so the loss can be negative (down to
    ``-(1 - alpha)``); it is ``alpha L_mCE + (1 - alpha) L_DSC`` minus the constant
    ``1 - alpha``. alpha = 1 is the weighted cross entropy, alpha = 0 is ``-DSC``.

    Args:
        alpha: Weight of the cross-entropy term, in [0, 1].
        smooth: ``s >= 0`` of the Dice coefficient (only guards the division).
        class_weights: C non-negative weights ``beta_c`` (None = uniform).
        ignore_index: Label value of pixels excluded from both terms.

    Shape:
        logits (B, C, H, W), target (B, H, W) int -> scalar.
    """

    def __init__(
        self,
        alpha: float = 0.5,
        smooth: float = 1e-6,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(class_weights, ignore_index)
        self.alpha = check_range("alpha", alpha, 0.0, 1.0)
        self.smooth = check_range("smooth", smooth, low=0.0)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``alpha * weighted CE - (1 - alpha) * soft Dice coefficient`` (scalar)."""
        prep = self.prepare(logits, target)
        dsc, present = dice_coefficients(prep, self.smooth)
        dice = class_mean(dsc, present, prep)
        return self.alpha * cross_entropy_term(prep) - (1.0 - self.alpha) * dice

    def extra_repr(self) -> str:  # noqa: D102
        return f"alpha={self.alpha}, smooth={self.smooth}, {super().extra_repr()}"
