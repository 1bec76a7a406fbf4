"""Segmentation networks and projection heads."""

from glcnet.models.heads import GlobalPooling, ProjectionHead
from glcnet.models.segmenter import Segmenter, SegmenterFeatures

__all__ = ["GlobalPooling", "ProjectionHead", "Segmenter", "SegmenterFeatures"]
