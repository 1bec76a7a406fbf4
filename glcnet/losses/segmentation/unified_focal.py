"""Unified focal loss, symmetric and asymmetric.

Yeung et al., "Unified Focal loss: Generalising Dice and cross entropy-based losses to handle
class imbalanced medical image segmentation", CMIG 95 (2022) 102026; seed note 000.

Notation: ``p`` softmax, ``g_i`` target class of valid pixel ``i``, ``w_c`` class weights, ``R``
the rare (foreground) classes, ``delta_c = delta`` for ``c in R`` and ``1 - delta`` otherwise,
and the modified Tversky index with batch-wide soft counts
``mTI_c = (TP_c + s) / (TP_c + delta FP_c + (1 - delta) FN_c + s)``. Class means run over the
classes present in the batch (see ``_common``).

Parametrisation: the seed's, i.e. the paper's equations for the symmetric form: ``delta`` weighs
FP in ``mTI`` and the rare classes in the focal term, the focal (suppression) exponent is
``1 - gamma`` and the Tversky (enhancement) exponent ``gamma``, lambda weighs the focal term. The
official code (and MONAI) puts ``delta`` on FN, uses ``gamma`` as the focal and ``1 - gamma`` as
the Tversky exponent and puts lambda on the Tversky term; at the recommended ``lambda = 1/2,
gamma = 1/2`` only the FP/FN side of ``delta`` differs. ``rare_classes=None`` follows the paper's
binary convention: class 0 is the background, all others are rare (for ISPRS e.g. ``[4]``, car).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from glcnet.losses.segmentation._common import SegmentationLoss, check_range
from glcnet.losses.segmentation.focal import focal_term
from glcnet.losses.segmentation.tversky import focal_tversky_term

__all__ = ["AsymmetricUnifiedFocalLoss", "SymmetricUnifiedFocalLoss"]


class _UnifiedFocalLoss(SegmentationLoss):
    """Shared parameters and computation of the two unified focal variants."""

    asymmetric: bool = False

    def __init__(
        self,
        lambda_: float = 0.5,
        delta: float = 0.6,
        gamma: float = 0.5,
        rare_classes: Sequence[int] | None = None,
        smooth: float = 1e-6,
        class_weights: Sequence[float] | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__(class_weights, ignore_index)
        self.lambda_ = check_range("lambda_", lambda_, 0.0, 1.0)
        self.delta = check_range("delta", delta, 0.0, 1.0)
        self.gamma = check_range("gamma", gamma, 0.0, 1.0, low_open=True)
        self.smooth = check_range("smooth", smooth, low=0.0)
        if rare_classes is None:
            self.rare_classes = None
        else:
            rare = list(rare_classes)
            if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in rare):
                raise ValueError(f"rare_classes must be class indices >= 0, got {rare_classes!r}")
            if len(set(rare)) != len(rare):
                raise ValueError(f"rare_classes holds duplicates: {rare_classes!r}")
            self.rare_classes = sorted(rare)

    def rare_mask(self, num_classes: int) -> list[bool]:
        """Which of the C classes are rare (the paper's foreground)."""
        if self.rare_classes is None:
            return [c > 0 for c in range(num_classes)]
        if self.rare_classes and self.rare_classes[-1] >= num_classes:
            raise ValueError(
                f"rare_classes {self.rare_classes} out of range for {num_classes} classes"
            )
        return [c in self.rare_classes for c in range(num_classes)]

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``lambda * modified focal + (1 - lambda) * modified focal Tversky`` (scalar)."""
        prep = self.prepare(logits, target)
        rare = self.rare_mask(prep.num_classes)
        d, g = self.delta, self.gamma
        scale = torch.tensor(
            [d if r else 1.0 - d for r in rare],
            dtype=prep.log_probs.dtype,
            device=prep.log_probs.device,
        )
        if self.asymmetric:  # suppress the background only, enhance the rare classes only
            focal_exp: float | list[float] = [0.0 if r else 1.0 - g for r in rare]
            tversky_exp: float | list[float] = [g if r else 1.0 for r in rare]
        else:
            focal_exp, tversky_exp = 1.0 - g, g
        m_f = focal_term(prep, focal_exp, class_scale=scale)
        m_ft = focal_tversky_term(prep, d, 1.0 - d, tversky_exp, self.smooth)
        return self.lambda_ * m_f + (1.0 - self.lambda_) * m_ft

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"lambda_={self.lambda_}, delta={self.delta}, gamma={self.gamma}, "
            f"rare_classes={self.rare_classes}, smooth={self.smooth}, {super().extra_repr()}"
        )


class SymmetricUnifiedFocalLoss(_UnifiedFocalLoss):
    """Symmetric unified focal loss ``L_sUF = lambda L_mF + (1 - lambda) L_mFT``.

    - ``L_mF = sum_i w_{g_i} delta_{g_i} (1 - p_{g_i,i})^(1 - gamma) (-log p_{g_i,i})
      / sum_i w_{g_i}`` (modified focal: every class suppressed alike);
    - ``L_mFT = sum_{c present} w_c (1 - mTI_c)^gamma / sum_{c present} w_c`` (modified focal
      Tversky: every class enhanced alike).

    Yeung et al. 2022 (``L_mF``, ``L_mFT``, ``L_sUF``; seed note 000). Reductions (tested):
    lambda = 1 / 0 keeps one term; gamma = 1 gives
    ``lambda L_deltaCE + (1 - lambda) L_T(alpha=delta, beta=1-delta)``, with delta = 1/2 the
    Dice + cross-entropy loss ``lambda/2 L_CE + (1 - lambda) L_DSC``; delta = 1/2 gives the hybrid
    focal loss with grouped parameters, ``lambda/2 L_F(gamma_F = 1 - gamma) + (1 - lambda)
    L_FT(alpha = beta = 1/2, gamma_FT = 1/gamma)``. Notation and parametrisation: see the module
    docstring.

    Args:
        lambda_: Weight of the focal term, in [0, 1].
        delta: Class / FP-FN balance, in [0, 1] (0.6 in the paper).
        gamma: Focal parameter in (0, 1] (0.5 in the paper); 1 = no focal modification.
        rare_classes: Indices of the rare classes ``R`` (None = every class but 0).
        smooth: ``s >= 0`` of ``mTI`` (only guards the division).
        class_weights: C non-negative weights ``w_c`` (None = uniform).
        ignore_index: Label value of pixels excluded from both terms.

    Shape:
        logits (B, C, H, W), target (B, H, W) int -> scalar.
    """

    asymmetric = False


class AsymmetricUnifiedFocalLoss(_UnifiedFocalLoss):
    """Asymmetric unified focal loss ``L_aUF = lambda L_maF + (1 - lambda) L_maFT``.

    Focal suppression for the background classes only, focal enhancement for the rare ones only:

    - ``L_maF = sum_i w_{g_i} l_i / sum_i w_{g_i}`` with ``l_i = delta (-log p_{g_i,i})`` if
      ``g_i in R`` and ``l_i = (1 - delta) (1 - p_{g_i,i})^(1 - gamma) (-log p_{g_i,i})`` else;
    - ``L_maFT = sum_{c present} w_c t_c / sum_{c present} w_c`` with
      ``t_c = (1 - mTI_c)^gamma`` if ``c in R`` and ``t_c = 1 - mTI_c`` else.

    Yeung et al. 2022 (``L_maF``, ``L_maFT``, ``L_aUF``; not in the seed), written with the
    seed's exponents (``1 - gamma`` suppresses, ``gamma`` enhances) so that gamma means the same
    in both variants; the official code (and MONAI) use ``gamma`` and ``1 - gamma`` the other
    way round (the same at gamma = 1/2). gamma = 1 equals the symmetric loss (tested); with every
    class rare, ``L_maF`` is the delta-weighted cross entropy.
    Notation: see the module docstring.

    Args:
        lambda_: Weight of the focal term, in [0, 1].
        delta: Class / FP-FN balance, in [0, 1] (0.6 in the paper).
        gamma: Focal parameter in (0, 1] (0.5 in the paper); 1 = no focal modification.
        rare_classes: Indices of the rare classes ``R`` (None = every class but 0).
        smooth: ``s >= 0`` of ``mTI`` (only guards the division).
        class_weights: C non-negative weights ``w_c`` (None = uniform).
        ignore_index: Label value of pixels excluded from both terms.

    Shape:
        logits (B, C, H, W), target (B, H, W) int -> scalar.
    """

    asymmetric = True
