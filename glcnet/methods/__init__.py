"""Pretraining methods: each turns a batch of paired views into a dict of losses."""

from glcnet.methods.glcnet import GLCNet

__all__ = ["GLCNet"]
