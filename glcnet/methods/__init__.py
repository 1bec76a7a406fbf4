"""Pretraining methods: each turns a batch of paired views into a dict of losses."""

from glcnet.methods.base import PretrainMethod
from glcnet.methods.glcnet import GLCNet
from glcnet.methods.moco import MoCo, MoCoSupCon
from glcnet.methods.npid import NPID
from glcnet.methods.simclr import SimCLR
from glcnet.methods.supcon import SupCon
from glcnet.methods.swav import SwAV

__all__ = ["GLCNet", "MoCo", "MoCoSupCon", "NPID", "PretrainMethod", "SimCLR", "SupCon", "SwAV"]
