"""Hybrid focal loss: weighted sum of the focal and focal Tversky losses."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from glcnet.losses.segmentation._common import SegmentationLoss, check_range
from glcnet.losses.segmentation.focal import focal_term
from glcnet.losses.segmentation.tversky import check_tversky_weights, focal_tversky_term

__all__ = ["HybridFocalLoss"]


class HybridFocalLoss(SegmentationLoss):
    """Hybrid focal loss ``L_HF = lambda L_F + (1 - lambda) L_FT``.

    ``L_F`` is :class:`FocalLoss` with ``focal_gamma`` and the class weights as its ``alpha_c``,
    ``L_FT`` is :class:`FocalTverskyLoss` with ``alpha``, ``beta``, ``gamma`` (exponent
    ``1 / gamma``) (Yeung et al., "Unified Focal loss", CMIG 2022, section 2.4; seed note 000).
    These are the six hyperparameters that the unified focal loss groups into three
    (:class:`SymmetricUnifiedFocalLoss`). lambda weighs the distribution (focal) term, as in the
    paper's equations and the seed's ``lambda L_mF + (1 - lambda) L_mFT``, throughout the zoo
    (the official unified-focal code weighs the Tversky term with it instead).

    Args:
        lambda_: Weight of the focal term, in [0, 1].
        focal_gamma: Focusing parameter of the focal term, >= 0.
        alpha: FP weight of the Tversky index, >= 0.
        beta: FN weight of the Tversky index, >= 0.
        gamma: Focal Tversky parameter > 0 (exponent ``1 / gamma``).
        smooth: ``s >= 0`` of the Tversky index (only guards the division).
        class_weights: C non-negative weights (None = uniform), used by both terms.
        ignore_index: Label value of pixels excluded from both terms.

    Shape:
        logits (B, C, H, W), target (B, H, W) int -> scalar.
    """

    def __init__(
        self,
        lambda_: float = 0.5,
        focal_gamma: float = 2.0,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 4.0 / 3.0,
        smooth: float = 1e-6,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(class_weights, ignore_index)
        self.lambda_ = check_range("lambda_", lambda_, 0.0, 1.0)
        self.focal_gamma = check_range("focal_gamma", focal_gamma, low=0.0)
        self.alpha, self.beta = check_tversky_weights(alpha, beta)
        self.gamma = check_range("gamma", gamma, low=0.0, low_open=True)
        self.smooth = check_range("smooth", smooth, low=0.0)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``lambda * focal + (1 - lambda) * focal Tversky`` (scalar)."""
        prep = self.prepare(logits, target)
        focal = focal_term(prep, self.focal_gamma)
        ftl = focal_tversky_term(prep, self.alpha, self.beta, 1.0 / self.gamma, self.smooth)
        return self.lambda_ * focal + (1.0 - self.lambda_) * ftl

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"lambda_={self.lambda_}, focal_gamma={self.focal_gamma}, alpha={self.alpha}, "
            f"beta={self.beta}, gamma={self.gamma}, smooth={self.smooth}, {super().extra_repr()}"
        )
