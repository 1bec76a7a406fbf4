"""Losses: contrastive (InfoNCE / NT-Xent, SupCon) and the segmentation loss zoo.

Contrastive losses take negatives from every process under DDP; the segmentation losses live in
``glcnet.losses.segmentation``.
"""

from glcnet.losses.contrastive import NTXentLoss, info_nce
from glcnet.losses.distributed import gather_with_grad, world_info
from glcnet.losses.segmentation import (
    AsymmetricUnifiedFocalLoss,
    BinaryCrossEntropyLoss,
    ComboLoss,
    CrossEntropyLoss,
    DiceFocalLoss,
    DiceLoss,
    FocalLoss,
    FocalTverskyLoss,
    HybridFocalLoss,
    SymmetricUnifiedFocalLoss,
    TverskyLoss,
)
from glcnet.losses.supcon import SupConLoss

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
    "NTXentLoss",
    "SupConLoss",
    "SymmetricUnifiedFocalLoss",
    "TverskyLoss",
    "gather_with_grad",
    "info_nce",
    "world_info",
]
