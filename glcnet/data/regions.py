"""Local regions matched by source area: sampling, feature pooling and matching diagnostics.

A region is a box ``[row0, col0, row1, col1)`` (half-open) in *source* pixels, sampled inside the
intersection of the two views' crops, so both views see all of it. Each view pools its features over
exactly the view pixels whose source pixel (from the view's index map) lies in the box, so the two
pooled features describe the same source area whatever the crops' scales, flips and rotations.

The official GLCNet code instead takes a fixed-size box around one matched centre pixel in each view;
when the two crops have different scales those boxes cover different source areas (mean IoU about
0.7). :func:`matched_area_iou` and :func:`centre_matched_iou` measure both schemes the same way.

Geometry of a view, for the diagnostics, is an affine map from view pixel (y, x) to continuous source
coordinates (row, col), with integer coordinates at pixel centres: ``source = A @ (y, x) + t``, stored
as a (B, 2, 3) tensor ``[A | t]``. :func:`exact_affine` builds it from the crop, flip and rotation that
:class:`glcnet.data.views.PairedViews` returns; :func:`fit_affine` recovers it from an index map alone
(least squares, to within a fraction of a pixel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

_HALF = 0.5 + 1e-9
"""Rounding offset: exact ties (a source pixel centre on a view pixel border) go to the higher
view pixel whatever the floating-point error; real distances to a border are >= 1 / (2 * crop side)."""

# --------------------------------------------------------------------------------------------------
# Sampling (numpy, per pair, in the data pipeline)


def _intersection(crop_a: Sequence[int], crop_b: Sequence[int]) -> tuple[int, int, int, int]:
    """Half-open intersection ``(row0, col0, row1, col1)`` of two ``(row0, col0, h, w)`` crops."""
    r0 = max(crop_a[0], crop_b[0])
    c0 = max(crop_a[1], crop_b[1])
    r1 = min(crop_a[0] + crop_a[2], crop_b[0] + crop_b[2])
    c1 = min(crop_a[1] + crop_a[3], crop_b[1] + crop_b[3])
    return r0, c0, r1, c1


def sample_regions(
    crop_a: Sequence[int],
    crop_b: Sequence[int],
    rng: np.random.Generator,
    n_regions: int = 4,
    region_size: int = 48,
    size: int = 224,
    min_region_size: int | None = None,
    attempts: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample non-overlapping boxes, in source pixels, that both views see entirely.

    The box is ``region_size`` view-a pixels on a side (``region_size * h_a / size`` source rows by
    ``region_size * w_a / size`` source columns); when the crops' intersection is too small it is
    shrunk to fit, but not below ``min_region_size`` view-a pixels, nor below one view pixel of
    either view (``ceil(h / size)`` source pixels), so every valid box is sampled by at least one
    pixel of each view. Positions are uniform inside the intersection; candidates overlapping an
    accepted box are rejected, ``n_regions * attempts`` candidates in all. Slots left unfilled are
    invalid with an all-zero box.

    Args:
        crop_a: ``(row0, col0, h, w)`` source crop of view a.
        crop_b: ``(row0, col0, h, w)`` source crop of view b.
        rng: Random generator.
        n_regions: Boxes wanted.
        region_size: Box side in view-a pixels.
        size: Side of the views in pixels.
        min_region_size: Smallest box side in view-a pixels; ``None`` = ``region_size // 2``.
        attempts: Random placements tried per box.

    Returns:
        ``boxes`` (n_regions, 4) int32 ``[row0, col0, row1, col1)`` and ``valid`` (n_regions,) bool.
    """
    boxes = np.zeros((n_regions, 4), dtype=np.int32)
    valid = np.zeros(n_regions, dtype=bool)
    if n_regions == 0:
        return boxes, valid
    min_size = region_size // 2 if min_region_size is None else min_region_size
    r0, c0, r1, c1 = _intersection(crop_a, crop_b)
    if r1 <= r0 or c1 <= c0:
        return boxes, valid
    h_a, w_a = crop_a[2], crop_a[3]
    # side in view-a pixels that fits the intersection, then in source pixels
    side = min(region_size, math.floor((r1 - r0) * size / h_a), math.floor((c1 - c0) * size / w_a))
    if side < max(min_size, 1):
        return boxes, valid
    rows = max(round(side * h_a / size), math.ceil(h_a / size), math.ceil(crop_b[2] / size))
    cols = max(round(side * w_a / size), math.ceil(w_a / size), math.ceil(crop_b[3] / size))
    if rows > r1 - r0 or cols > c1 - c0:
        return boxes, valid
    cand_r = rng.integers(r0, r1 - rows + 1, size=n_regions * attempts)
    cand_c = rng.integers(c0, c1 - cols + 1, size=n_regions * attempts)
    count = 0
    for r, c in zip(cand_r.tolist(), cand_c.tolist(), strict=True):
        overlaps = any(
            r < b_r1 and b_r0 < r + rows and c < b_c1 and b_c0 < c + cols
            for b_r0, b_c0, b_r1, b_c1 in boxes[:count].tolist()
        )
        if not overlaps:
            boxes[count] = (r, c, r + rows, c + cols)
            valid[count] = True
            count += 1
            if count == n_regions:
                break
    return boxes, valid


# --------------------------------------------------------------------------------------------------
# Pooling (torch, batched, on the model's device)


def region_membership(index: Tensor, regions: Tensor) -> Tensor:
    """Which view pixels were sampled from inside each source box.

    Args:
        index: (B, 2, S, S) source (row, col) of every view pixel.
        regions: (B, R, 4) boxes ``[row0, col0, row1, col1)`` in source pixels.

    Returns:
        (B, R, S, S) bool.
    """
    rows = index[:, None, 0].float()
    cols = index[:, None, 1].float()
    box = regions.float()[..., None, None]
    return (
        (rows >= box[:, :, 0])
        & (rows < box[:, :, 2])
        & (cols >= box[:, :, 1])
        & (cols < box[:, :, 3])
    )


def region_weights(
    index: Tensor, regions: Tensor, valid: Tensor, feature_size: Sequence[int]
) -> Tensor:
    """Per-region pooling weights at feature-map resolution.

    The full-resolution membership mask of each region is area-pooled to the feature grid (the
    weight of a feature cell is the fraction of its view pixels that came from inside the box) and
    normalised to sum 1. Invalid regions, and regions no view pixel came from, get all-zero weights.

    Args:
        index: (B, 2, S, S) source (row, col) of every view pixel.
        regions: (B, R, 4) boxes in source pixels.
        valid: (B, R) bool.
        feature_size: ``(h, w)`` of the feature map (e.g. S / 4 for the DeepLabV3+ decoder).

    Returns:
        (B, R, h, w) float32 weights.
    """
    _check_index(index)
    if regions.shape[:2] != valid.shape or regions.shape[-1] != 4:
        raise ValueError(
            f"regions must be (B, R, 4) and valid (B, R), got {tuple(regions.shape)} "
            f"and {tuple(valid.shape)}"
        )
    member = region_membership(index, regions).float()
    pooled = F.adaptive_avg_pool2d(member, tuple(int(s) for s in feature_size))
    pooled = pooled * valid.to(pooled.dtype)[..., None, None]
    total = pooled.sum(dim=(-2, -1), keepdim=True)
    return torch.where(total > 0, pooled / total.clamp_min(1e-12), torch.zeros_like(pooled))


def pool_regions(features: Tensor, weights: Tensor) -> Tensor:
    """Weighted mean of the features of each region.

    Args:
        features: (B, C, h, w).
        weights: (B, R, h, w), each row summing to 1 (or 0 for invalid regions).

    Returns:
        (B, R, C).
    """
    if features.shape[0] != weights.shape[0] or features.shape[-2:] != weights.shape[-2:]:
        raise ValueError(
            f"features (B, C, h, w) {tuple(features.shape)} and weights (B, R, h, w) "
            f"{tuple(weights.shape)} disagree"
        )
    return torch.einsum("bchw,brhw->brc", features, weights.to(features.dtype))


# --------------------------------------------------------------------------------------------------
# Geometry and matched-area diagnostics


def _check_index(index: Tensor) -> None:
    if index.ndim != 4 or index.shape[1] != 2:
        raise ValueError(f"index maps must be (B, 2, S, S), got {tuple(index.shape)}")


def _homogeneous(rows: list[list[float]]) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def exact_affine(crop: Tensor, flip: Tensor, rot: Tensor, size: int) -> Tensor:
    """Affine map view pixel -> source coordinates of views built by crop, resize, flip and rot90.

    Args:
        crop: (B, 4) ``(row0, col0, h, w)`` source crops.
        flip: (B,) bool, horizontal flip after the resize.
        rot: (B,) int, counter-clockwise quarter turns after the flip.
        size: View side.

    Returns:
        (B, 2, 3) float64 ``[A | t]`` with ``source = A @ (y, x) + t``; rounding it to the nearest
        integer reproduces the view's index map.
    """
    last = float(size - 1)
    flip_m = _homogeneous([[1, 0, 0], [0, -1, last], [0, 0, 1]])
    rot_m = _homogeneous([[0, 1, 0], [-1, 0, last], [0, 0, 1]])
    out = []
    for (row0, col0, h, w), f, k in zip(
        crop.double().tolist(), flip.bool().tolist(), rot.long().tolist(), strict=True
    ):
        sy, sx = h / size, w / size
        m = _homogeneous(
            [[sy, 0, row0 + 0.5 * sy - 0.5], [0, sx, col0 + 0.5 * sx - 0.5], [0, 0, 1]]
        )
        if f:
            m = m @ flip_m
        m = m @ torch.linalg.matrix_power(rot_m, k % 4)
        out.append(m[:2])
    return torch.stack(out).to(crop.device)


def fit_affine(index: Tensor) -> Tensor:
    """Least-squares affine map view pixel -> source coordinates from an index map alone.

    On a full view grid the centred coordinates are orthogonal, so each coefficient is a ratio of
    means. Rounding errors of nearest-neighbour sampling average out (within ~0.1 px at S = 224).

    Args:
        index: (B, 2, S, S) source (row, col) of every view pixel.

    Returns:
        (B, 2, 3) float64 ``[A | t]`` as in :func:`exact_affine`.
    """
    _check_index(index)
    s = index.shape[-1]
    src = index.double()
    centre = (s - 1) / 2
    y = torch.arange(s, dtype=torch.float64, device=index.device) - centre
    var = (y * y).mean()
    mean = src.mean(dim=(-2, -1))  # (B, 2)
    a_y = (src * y[:, None]).mean(dim=(-2, -1)) / var  # (B, 2): d source / d y
    a_x = (src * y[None, :]).mean(dim=(-2, -1)) / var
    a = torch.stack([a_y, a_x], dim=-1)  # (B, 2, 2)
    t = mean - centre * (a_y + a_x)
    return torch.cat([a, t[..., None]], dim=-1)


def _source_hw(source_size, batch: int) -> tuple[int, int]:
    size = torch.as_tensor(source_size).reshape(-1, 2)
    if size.shape[0] not in (1, batch) or not bool((size == size[0]).all()):
        raise ValueError(f"source_size must be one (H, W) for the batch, got {source_size}")
    return int(size[0, 0]), int(size[0, 1])


def nearest_view_pixel(affine: Tensor, points: Tensor, size: int) -> Tensor:
    """Forward mapping: the view pixel nearest to each source pixel.

    Args:
        affine: (B, 2, 3) view -> source affine maps.
        points: (B, 2, N) integer source (row, col).
        size: View side S.

    Returns:
        (B, 2, N) long view (y, x); ``-1`` in both where the nearest position falls outside the
        view (the source pixel is outside the crop).
    """
    a, t = affine[..., :2].double(), affine[..., 2].double()
    view = torch.linalg.solve(a, points.double() - t[..., None])
    view = torch.floor(view + _HALF).long()
    inside = ((view >= 0) & (view < size)).all(dim=1, keepdim=True)
    return torch.where(inside, view, torch.full_like(view, -1))


def _windows(regions: Tensor, side: int, source_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Source pixels of a ``side`` x ``side`` window centred on each box.

    Returns:
        ``points`` (B, 2, R * side * side) long and ``inside`` (B, R, side * side) bool (pixel
        within the source tile).
    """
    b, r = regions.shape[:2]
    box = regions.long()
    origin = torch.stack([box[..., 0] + box[..., 2], box[..., 1] + box[..., 3]], -1) // 2
    origin = origin - side // 2  # (B, R, 2)
    offs = torch.arange(side, device=regions.device)
    grid = torch.stack(torch.meshgrid(offs, offs, indexing="ij")).reshape(2, -1)  # (2, side^2)
    pts = origin[..., None] + grid  # (B, R, 2, side^2)
    limit = torch.tensor(source_hw, device=regions.device)[:, None]
    inside = ((pts >= 0) & (pts < limit)).all(dim=2)
    return pts.permute(0, 2, 1, 3).reshape(b, 2, -1), inside


def _window_side(regions: Tensor, affines: list[Tensor], region_size: int) -> int:
    """A window side holding every footprint: the box, or a ``region_size`` view box, plus margins.

    A source pixel is at most ``scale / 2 + 1/2`` source pixels from the source pixel its nearest
    view pixel samples, ``scale`` being the largest source-per-view-pixel step of the views.
    """
    scale = max(float(a[..., :2].abs().amax()) if a.numel() else 1.0 for a in affines)
    box = regions.long()
    side = int((box[..., 2:] - box[..., :2]).amax()) if box.numel() else 0
    margin = math.ceil(scale / 2 + 1)
    return max(side, math.ceil((region_size + 2) * scale)) + 2 * margin + 2


def _box_test(coords: Tensor, boxes: Tensor) -> Tensor:
    """Box membership: coords (B, 2, R, N), boxes (B, R, 4) ``[row0, col0, row1, col1)`` -> (B, R, N)."""
    b = boxes[..., None]
    r, c = coords[:, 0], coords[:, 1]
    return (r >= b[:, :, 0]) & (r < b[:, :, 2]) & (c >= b[:, :, 1]) & (c < b[:, :, 3])


def _region_footprint(
    index: Tensor, affine: Tensor, regions: Tensor, points: Tensor, inside: Tensor
) -> Tensor:
    """Window pixels whose nearest view pixel was sampled from inside the box: (B, R, N) bool."""
    bsz, r = regions.shape[:2]
    s = index.shape[-1]
    nearest = nearest_view_pixel(affine, points, s)  # (B, 2, R*N)
    seen = nearest[:, 0] >= 0
    lin = (nearest[:, 0] * s + nearest[:, 1]).clamp_min(0)
    src = index.flatten(2).long().gather(2, lin[:, None].expand(-1, 2, -1))  # (B, 2, R*N)
    hit = _box_test(src.reshape(bsz, 2, r, -1), regions.long())
    return hit & seen.reshape(bsz, r, -1) & inside


def _view_box_footprint(
    affine: Tensor, boxes: Tensor, points: Tensor, inside: Tensor, size: int
) -> Tensor:
    """Window pixels whose nearest view pixel lies in a view-space box: (B, R, N) bool."""
    bsz, r = boxes.shape[:2]
    nearest = nearest_view_pixel(affine, points, size).reshape(bsz, 2, r, -1)
    return _box_test(nearest, boxes) & (nearest[:, 0] >= 0) & inside


def _iou(fa: Tensor, fb: Tensor, valid: Tensor) -> Tensor:
    inter = (fa & fb).sum(-1).double()
    union = (fa | fb).sum(-1).double()
    return (inter / union.clamp_min(1))[valid.bool()]


def _affines(index_a, index_b, affine_a, affine_b) -> tuple[Tensor, Tensor]:
    _check_index(index_a)
    _check_index(index_b)
    return (
        fit_affine(index_a) if affine_a is None else affine_a,
        fit_affine(index_b) if affine_b is None else affine_b,
    )


def matched_area_iou(
    index_a: Tensor,
    index_b: Tensor,
    regions: Tensor,
    valid: Tensor,
    source_size,
    affine_a: Tensor | None = None,
    affine_b: Tensor | None = None,
) -> Tensor:
    """IoU, in source space, of the areas a region's pooled pixels cover in the two views.

    A view pools the pixels sampled from inside the box; the area they cover (their footprint) is
    the set of source pixels whose nearest view pixel (forward mapping through the view's crop,
    resize, flip and rotation) is pooled. This is what a region means to each view regardless of
    its scale; 1.0 means both views describe exactly the same ground. Computed on a window around
    each box that holds both footprints.

    Args:
        index_a: (B, 2, S, S) index map of view a.
        index_b: (B, 2, S, S) index map of view b.
        regions: (B, R, 4) boxes in source pixels.
        valid: (B, R) bool.
        source_size: ``(H, W)`` of the source tiles (a (2,) or (B, 2) tensor is accepted).
        affine_a: (B, 2, 3) exact geometry of view a (:func:`exact_affine`); ``None`` = fitted
            from ``index_a`` (:func:`fit_affine`).
        affine_b: Same for view b.

    Returns:
        (num_valid,) float64 IoUs, in the order of ``valid.nonzero()``.
    """
    if not bool(valid.any()):
        return torch.zeros(0, dtype=torch.float64)
    aff_a, aff_b = _affines(index_a, index_b, affine_a, affine_b)
    hw = _source_hw(source_size, index_a.shape[0])
    side = _window_side(regions, [aff_a, aff_b], 0)
    points, inside = _windows(regions, side, hw)
    fa = _region_footprint(index_a, aff_a, regions, points, inside)
    fb = _region_footprint(index_b, aff_b, regions, points, inside)
    return _iou(fa, fb, valid)


def centre_matched_boxes(
    index_a: Tensor,
    index_b: Tensor,
    regions: Tensor,
    region_size: int,
    affine_a: Tensor | None = None,
    affine_b: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The official code's matching: a ``region_size`` box around the same source centre per view.

    The centre of each source box is mapped to its nearest pixel in each view; each view then takes
    the ``region_size`` x ``region_size`` box of view pixels around it (clipped to the view),
    whatever the view's scale.

    Args:
        index_a: (B, 2, S, S) index map of view a.
        index_b: (B, 2, S, S) index map of view b.
        regions: (B, R, 4) boxes in source pixels (their centres are used).
        region_size: Box side in view pixels.
        affine_a: Optional exact geometry of view a (see :func:`matched_area_iou`).
        affine_b: Optional exact geometry of view b.

    Returns:
        ``(boxes_a, boxes_b)``, each (B, R, 4) long ``[y0, x0, y1, x1)`` in view pixels.
    """
    aff_a, aff_b = _affines(index_a, index_b, affine_a, affine_b)
    s = index_a.shape[-1]
    r = regions.double()
    centre = torch.stack([(r[..., 0] + r[..., 2] - 1) / 2, (r[..., 1] + r[..., 3] - 1) / 2], 1)
    out = []
    for aff in (aff_a, aff_b):
        a, t = aff[..., :2].double(), aff[..., 2].double()
        view = torch.linalg.solve(a, centre - t[..., None])  # (B, 2, R)
        start = (torch.floor(view + _HALF).long() - region_size // 2).transpose(1, 2)
        out.append(torch.cat([start, start + region_size], dim=-1).clamp(0, s))
    return out[0], out[1]


def centre_matched_iou(
    index_a: Tensor,
    index_b: Tensor,
    regions: Tensor,
    valid: Tensor,
    source_size,
    region_size: int,
    affine_a: Tensor | None = None,
    affine_b: Tensor | None = None,
) -> Tensor:
    """Source-space IoU of the centre-matched boxes (:func:`centre_matched_boxes`).

    Footprints as in :func:`matched_area_iou`, so the two numbers compare like with like.

    Returns:
        (num_valid,) float64 IoUs.
    """
    aff_a, aff_b = _affines(index_a, index_b, affine_a, affine_b)
    boxes_a, boxes_b = centre_matched_boxes(index_a, index_b, regions, region_size, aff_a, aff_b)
    hw = _source_hw(source_size, index_a.shape[0])
    s = index_a.shape[-1]
    side = _window_side(regions, [aff_a, aff_b], region_size)
    points, inside = _windows(regions, side, hw)
    fa = _view_box_footprint(aff_a, boxes_a, points, inside, s)
    fb = _view_box_footprint(aff_b, boxes_b, points, inside, s)
    return _iou(fa, fb, valid)
