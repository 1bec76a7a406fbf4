"""Data: ISPRS and folder tile data sets, the embedded sample set, paired views.

Example:
    >>> from glcnet.data import Potsdam
    >>> ds = Potsdam(root="data/potsdam", split="train", bands="RGBIR", tile_size=256)
    >>> item = ds[0]  # {"image": (4, 256, 256) float, "mask": (256, 256) long, "scene", "window"}
"""

from glcnet.data.classes import IGNORE_INDEX, ISPRS_CLASSES, ISPRS_PALETTE
from glcnet.data.folder import FolderDataset
from glcnet.data.isprs import Potsdam, Vaihingen
from glcnet.data.masks import MaskSpec

__all__ = [
    "IGNORE_INDEX",
    "ISPRS_CLASSES",
    "ISPRS_PALETTE",
    "FolderDataset",
    "MaskSpec",
    "Potsdam",
    "Vaihingen",
]
