"""DiceFocal loss: weighted sum of the focal and Dice losses."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from glcnet.losses.segmentation._common import SegmentationLoss, check_range
from glcnet.losses.segmentation.dice import dice_loss_term
from glcnet.losses.segmentation.focal import focal_term

__all__ = ["DiceFocalLoss"]


class DiceFocalLoss(SegmentationLoss):
    """DiceFocal loss ``L = lambda L_F + (1 - lambda) L_DSC``.

    ``L_F`` is :class:`FocalLoss` (Lin et al. 2017) and ``L_DSC`` :class:`DiceLoss` (batch-wide
    counts, mean over the present classes), both with the same ``class_weights`` (seed note 000
    names it without a formula; the weighted sum with lambda on the distribution term follows the
    seed's unified focal loss, ``lambda L_mF + (1 - lambda) L_mFT``). MONAI's ``DiceFocalLoss``
    adds the two terms with independent weights (1 and 1 by default): ``2 L`` at lambda = 1/2.

    Args:
        gamma: Focusing parameter of the focal term, >= 0.
        lambda_: Weight of the focal term, in [0, 1].
        smooth: ``s >= 0`` of the Dice coefficient (only guards the division).
        class_weights: C non-negative weights (None = uniform).
        ignore_index: Label value of pixels excluded from both terms.

    Shape:
        logits (B, C, H, W), target (B, H, W) int -> scalar.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        lambda_: float = 0.5,
        smooth: float = 1e-6,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(class_weights, ignore_index)
        self.gamma = check_range("gamma", gamma, low=0.0)
        self.lambda_ = check_range("lambda_", lambda_, 0.0, 1.0)
        self.smooth = check_range("smooth", smooth, low=0.0)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``lambda * focal + (1 - lambda) * Dice loss`` (scalar)."""
        prep = self.prepare(logits, target)
        focal = focal_term(prep, self.gamma)
        dice = dice_loss_term(prep, self.smooth)
        return self.lambda_ * focal + (1.0 - self.lambda_) * dice

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"gamma={self.gamma}, lambda_={self.lambda_}, smooth={self.smooth}, "
            f"{super().extra_repr()}"
        )
