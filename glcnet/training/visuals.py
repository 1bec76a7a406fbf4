"""Pictures for TensorBoard: a view pair with its matched regions outlined."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from glcnet.data.regions import region_membership

_COLOURS = torch.tensor(
    [
        [1.0, 0.2, 0.2],
        [0.2, 1.0, 0.2],
        [0.3, 0.5, 1.0],
        [1.0, 1.0, 0.2],
        [1.0, 0.2, 1.0],
        [0.2, 1.0, 1.0],
        [1.0, 0.6, 0.1],
        [0.7, 0.7, 0.7],
    ]
)


def _outline(mask: Tensor) -> Tensor:
    m = mask.float()[:, None]
    grown = F.max_pool2d(m, 3, stride=1, padding=1)
    return (grown - m)[:, 0] > 0


def draw_pair(
    view_a: Tensor, view_b: Tensor, index_a: Tensor, index_b: Tensor, regions: Tensor, valid: Tensor
) -> Tensor:
    """Side-by-side RGB picture of two views with each matched region outlined in its colour.

    Args:
        view_a: (C, S, S) in [0, 1]; the first three bands are shown.
        view_b: (C, S, S).
        index_a: (2, S, S) source pixel of every pixel of view a.
        index_b: (2, S, S).
        regions: (R, 4) boxes in source pixels.
        valid: (R,) bool.

    Returns:
        (3, S, 2S + 4) float image in [0, 1].
    """
    panels = []
    boxes = regions[valid.bool()]
    for view, index in ((view_a, index_a), (view_b, index_b)):
        img = view[:3].detach().float().cpu().clamp(0, 1).clone()
        if img.shape[0] < 3:
            img = img[:1].expand(3, -1, -1).clone()
        if len(boxes):
            edges = _outline(region_membership(index.cpu()[None], boxes.cpu()[None])[0])
            for k, edge in enumerate(edges):
                colour = _COLOURS[k % len(_COLOURS)][:, None]
                img[:, edge] = colour.expand(3, int(edge.sum()))
        panels.append(img)
    gap = torch.ones(3, img.shape[1], 4)
    return torch.cat([panels[0], gap, panels[1]], dim=2)
