"""The segmentation loss zoo: every loss maps logits (B, C, H, W) and labels (B, H, W) to a scalar.

Shared conventions (ignore label, class weights, batch-wide soft counts, classes absent from the
batch) are described in ``glcnet.losses.segmentation._common``; each loss's docstring states its
exact formula and reference. Configs: ``configs/loss/*.yaml``.
"""

from glcnet.losses.segmentation.combo import ComboLoss
from glcnet.losses.segmentation.cross_entropy import BinaryCrossEntropyLoss, CrossEntropyLoss
from glcnet.losses.segmentation.dice import DiceLoss
from glcnet.losses.segmentation.dice_focal import DiceFocalLoss
from glcnet.losses.segmentation.focal import FocalLoss
from glcnet.losses.segmentation.hybrid_focal import HybridFocalLoss
from glcnet.losses.segmentation.tversky import FocalTverskyLoss, TverskyLoss
from glcnet.losses.segmentation.unified_focal import (
    AsymmetricUnifiedFocalLoss,
    SymmetricUnifiedFocalLoss,
)

__all__ = [
    "AsymmetricUnifiedFocalLoss",
    "BinaryCrossEntropyLoss",
    "ComboLoss",
    "CrossEntropyLoss",
    "DiceFocalLoss",
    "DiceLoss",
    "FocalLoss",
    "FocalTverskyLoss",
    "HybridFocalLoss",
    "SymmetricUnifiedFocalLoss",
    "TverskyLoss",
]
