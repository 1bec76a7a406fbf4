"""Local regions: sampling inside both crops, exact area matching, pooling weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from glcnet.data import regions as R
from glcnet.data.transforms import index_map, sample_crop
from glcnet.data.views import PairedViews


def batch_of_pairs(n: int, seed: int = 0, **kwargs) -> dict[str, torch.Tensor]:
    views = PairedViews(**{"color_p": 0.0, "blur_p": 0.0, "noise_p": 0.0, **kwargs})
    tile = np.zeros((4, 256, 256), dtype=np.float32)
    rng = np.random.default_rng(seed)
    return torch.utils.data.default_collate([views(tile, rng) for _ in range(n)])


def affines(batch, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        R.exact_affine(batch["crop_a"], batch["flip_a"], batch["rot_a"], size),
        R.exact_affine(batch["crop_b"], batch["flip_b"], batch["rot_b"], size),
    )


# ------------------------------------------------------------------------------------------------
# Slow exact reference of the forward mapping, in integer arithmetic (no affine algebra)


def reference_view_cells(crop, flip: bool, rot: int, size: int, num_r, num_c, den: int):
    """Final-view pixel containing the source point ``(num_r, num_c) / den`` (continuous coords).

    The point is taken into crop cell space (cell i spans [i, i + 1)), then through the flip
    (x -> S - x) and k quarter turns ((y, x) -> (S - x, y), np.rot90's direction), all as exact
    fractions; the pixel is the floor.
    """
    row0, col0, h, w = (int(v) for v in crop)
    # u = (p - row0) * S / h as numerator / denominator
    y = ((num_r - row0 * den) * size, den * h)
    x = ((num_c - col0 * den) * size, den * w)
    if flip:
        x = (size * x[1] - x[0], x[1])
    for _ in range(rot % 4):
        y, x = (size * x[1] - x[0], x[1]), y
    return y[0] // y[1], x[0] // x[1]


def reference_footprints(index, crop, flip, rot, size, source_hw, boxes, view_boxes=None):
    """(R, H, W) bool footprints over the whole source tile, one region at a time."""
    height, width = source_hw
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    # source pixel centre r + 1/2 = (2r + 1) / 2
    y, x = reference_view_cells(crop, flip, rot, size, 2 * rows + 1, 2 * cols + 1, 2)
    seen = (y >= 0) & (y < size) & (x >= 0) & (x < size)
    yc, xc = np.clip(y, 0, size - 1), np.clip(x, 0, size - 1)
    src_r, src_c = index[0][yc, xc], index[1][yc, xc]
    out = []
    for k, (r0, c0, r1, c1) in enumerate(boxes):
        if view_boxes is None:
            hit = (src_r >= r0) & (src_r < r1) & (src_c >= c0) & (src_c < c1)
        else:
            y0, x0, y1, x1 = view_boxes[k]
            hit = (y >= y0) & (y < y1) & (x >= x0) & (x < x1)
        out.append(hit & seen)
    return np.stack(out)


def reference_centre_boxes(crop, flip, rot, size, boxes, region_size):
    out = []
    for r0, c0, r1, c1 in boxes:
        # centre (r0 + r1 - 1) / 2 in index coords = point (r0 + r1) / 2 in continuous coords
        y, x = reference_view_cells(crop, flip, rot, size, r0 + r1, c0 + c1, 2)
        y0, x0 = y - region_size // 2, x - region_size // 2
        out.append([np.clip(v, 0, size) for v in (y0, x0, y0 + region_size, x0 + region_size)])
    return out


def reference_iou(fa, fb):
    return (fa & fb).sum((-2, -1)) / np.maximum((fa | fb).sum((-2, -1)), 1)


# ------------------------------------------------------------------------------------------------
# Sampling


def test_boxes_lie_inside_both_crops_and_do_not_overlap():
    rng = np.random.default_rng(0)
    counts = []
    for _ in range(400):
        crop_a = sample_crop(rng, 256, 256)
        crop_b = sample_crop(rng, 256, 256)
        boxes, valid = R.sample_regions(crop_a, crop_b, rng, 4, 48, 224)
        counts.append(valid.sum())
        assert (boxes[~valid] == 0).all()
        good = boxes[valid]
        for crop in (crop_a, crop_b):
            assert (good[:, 0] >= crop[0]).all() and (good[:, 2] <= crop[0] + crop[2]).all()
            assert (good[:, 1] >= crop[1]).all() and (good[:, 3] <= crop[1] + crop[3]).all()
        for i in range(len(good)):
            for j in range(i):
                a, b = good[i], good[j]
                disjoint = a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
                assert disjoint, (a, b)
        # side in view-a pixels: region_size (48) unless shrunk, never below 24
        for r0, c0, r1, c1 in good:
            side_rows = (r1 - r0) * 224 / crop_a[2]
            side_cols = (c1 - c0) * 224 / crop_a[3]
            assert 24 - 3 <= side_rows <= 48 + 3 and 24 - 3 <= side_cols <= 48 + 3
    assert np.mean(counts) > 3.5  # the default crops nearly always leave room for all four


def test_full_size_box_when_the_intersection_is_large():
    rng = np.random.default_rng(1)
    boxes, valid = R.sample_regions((0, 0, 200, 150), (10, 5, 190, 140), rng, 4, 48, 224)
    assert valid.all()
    sides = boxes[:, 2:] - boxes[:, :2]
    assert (sides == [round(48 * 200 / 224), round(48 * 150 / 224)]).all()


def test_small_overlap_gives_fewer_regions_not_errors():
    rng = np.random.default_rng(2)
    # intersection 13 x 13 source pixels = 29 view-a pixels: one box shrunk to 29 (>= 24) fits
    boxes, valid = R.sample_regions((0, 0, 100, 100), (87, 87, 100, 100), rng, 4, 48, 224)
    assert valid.tolist() == [True, False, False, False]
    assert boxes[0].tolist() == [87, 87, 100, 100]
    # intersection 10 x 10 = 22 view-a pixels < min_region_size 24: none
    boxes, valid = R.sample_regions((0, 0, 100, 100), (90, 90, 100, 100), rng, 4, 48, 224)
    assert not valid.any() and (boxes == 0).all()
    # ... unless the minimum is lowered
    _, valid = R.sample_regions((0, 0, 100, 100), (90, 90, 100, 100), rng, 4, 48, 224, 16)
    assert valid.sum() == 1
    # disjoint crops, touching crops, no regions asked
    for crop_b in ((100, 100, 50, 50), (0, 100, 100, 100)):
        _, valid = R.sample_regions((0, 0, 100, 100), crop_b, rng, 4, 48, 224)
        assert not valid.any()
    boxes, valid = R.sample_regions((0, 0, 100, 100), (0, 0, 100, 100), rng, 0, 48, 224)
    assert boxes.shape == (0, 4) and valid.shape == (0,)


def test_every_valid_box_is_seen_by_both_views():
    """Even for a box smaller than one pixel of the coarser view, which is then widened."""
    rng = np.random.default_rng(3)
    size = 32
    crop_a, crop_b = (100, 100, 40, 40), (0, 0, 400, 400)  # view b: 12.5 source px per pixel
    boxes, valid = R.sample_regions(crop_a, crop_b, rng, 4, 4, size, 1)
    assert valid.any()
    assert ((boxes[valid, 2:] - boxes[valid, :2]) >= 13).all()
    index = torch.from_numpy(np.stack([index_map(crop_a, size), index_map(crop_b, size)]))
    member = R.region_membership(index, torch.from_numpy(boxes)[None].expand(2, -1, -1))
    assert (member.sum((-2, -1))[:, torch.from_numpy(valid)] > 0).all()


# ------------------------------------------------------------------------------------------------
# Geometry


def test_exact_affine_reproduces_the_index_maps_and_the_fit_recovers_it():
    batch = batch_of_pairs(24, flip_p=0.5, rotate_p=0.8)
    size = 224
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    grid = torch.stack([ys, xs, torch.ones_like(ys)]).double().reshape(3, -1)
    for key, aff in zip(("a", "b"), affines(batch, size), strict=True):
        index = batch[f"index_{key}"]
        rebuilt = torch.floor(aff @ grid + R._HALF).long().reshape(index.shape)
        assert torch.equal(rebuilt, index.long())
        fit = R.fit_affine(index)
        assert torch.allclose(fit[..., :2], aff[..., :2], atol=5e-3)
        assert torch.allclose(fit[..., 2], aff[..., 2], atol=0.5)


def test_matched_area_iou_equals_the_exact_slow_reference():
    size, region = 64, 16
    batch = batch_of_pairs(30, seed=4, size=size, region_size=region, flip_p=0.5, rotate_p=0.8)
    aff_a, aff_b = affines(batch, size)
    iou = R.matched_area_iou(
        batch["index_a"], batch["index_b"], batch["regions"], batch["region_valid"],
        batch["source_size"], aff_a, aff_b,
    )  # fmt: skip
    centre = R.centre_matched_iou(
        batch["index_a"], batch["index_b"], batch["regions"], batch["region_valid"],
        batch["source_size"], region, aff_a, aff_b,
    )  # fmt: skip
    ref, ref_centre = [], []
    for i in range(30):
        valid = batch["region_valid"][i].numpy()
        boxes = batch["regions"][i].numpy()[valid]
        geo = {
            key: (batch[f"crop_{key}"][i].tolist(), bool(batch[f"flip_{key}"][i]),
                  int(batch[f"rot_{key}"][i]))
            for key in "ab"
        }  # fmt: skip
        feet = [
            reference_footprints(batch[f"index_{k}"][i].numpy(), *geo[k], size, (256, 256), boxes)
            for k in "ab"
        ]
        ref.extend(reference_iou(*feet))
        centre_feet = [
            reference_footprints(
                batch[f"index_{k}"][i].numpy(), *geo[k], size, (256, 256), boxes,
                reference_centre_boxes(*geo[k], size, boxes, region),
            )
            for k in "ab"
        ]  # fmt: skip
        ref_centre.extend(reference_iou(*centre_feet))
    assert len(ref) == iou.numel() > 60
    np.testing.assert_allclose(iou.numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(centre.numpy(), ref_centre, atol=1e-12)


def test_matched_area_iou_is_high_and_centre_matching_is_not():
    """Default parameters: ours >= 0.95 on average; the official centre matching about 0.7."""
    batch = batch_of_pairs(160, seed=5)
    args = (batch["index_a"], batch["index_b"], batch["regions"], batch["region_valid"])
    aff = affines(batch, 224)
    ours = R.matched_area_iou(*args, batch["source_size"], *aff)
    centre = R.centre_matched_iou(*args, batch["source_size"], 48, *aff)
    print(f"\nmatched-area IoU: ours {ours.mean():.3f} (min {ours.min():.3f}), "
          f"centre matching {centre.mean():.3f}")  # fmt: skip
    assert ours.numel() > 0.9 * 160 * 4
    assert ours.mean() >= 0.95 and ours.min() > 0.85
    assert 0.55 < centre.mean() < 0.85
    assert centre.mean() < ours.mean() - 0.15
    # the lead's call: geometry fitted from the index maps, source_size as collated
    fitted = R.matched_area_iou(*args, source_size=batch["source_size"])
    assert abs(float(fitted.mean() - ours.mean())) < 0.005


def test_centre_boxes_have_region_size_and_share_the_centre():
    batch = batch_of_pairs(20, seed=6, flip_p=0.5, rotate_p=0.8)
    aff_a, aff_b = affines(batch, 224)
    boxes_a, boxes_b = R.centre_matched_boxes(
        batch["index_a"], batch["index_b"], batch["regions"], 48, aff_a, aff_b
    )
    valid = batch["region_valid"]
    regions = batch["regions"].double()
    centre = torch.stack([regions[..., 0] + regions[..., 2], regions[..., 1] + regions[..., 3]], -1)
    centre = (centre - 1) / 2
    for boxes, index in ((boxes_a, batch["index_a"]), (boxes_b, batch["index_b"])):
        sides = boxes[..., 2:] - boxes[..., :2]
        inner = (boxes[..., :2] > 0) & (boxes[..., 2:] < 224)
        assert (sides[inner.all(-1) & valid] == 48).all()
        # the pixel at offset 24 is the one nearest the source centre: within one source pixel
        y, x = boxes[..., 0] + 24, boxes[..., 1] + 24
        src = index.long()[torch.arange(20)[:, None], :, y.clamp(max=223), x.clamp(max=223)]
        ok = valid & inner.all(-1)
        assert ((src.double() - centre).abs()[ok] <= 1.0).all()


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="index maps"):
        R.fit_affine(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="regions"):
        R.region_weights(torch.zeros(1, 2, 8, 8), torch.zeros(1, 3, 4), torch.ones(1, 2), (2, 2))
    with pytest.raises(ValueError, match="disagree"):
        R.pool_regions(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 5, 5))
    with pytest.raises(ValueError, match="source_size"):
        R._source_hw(torch.tensor([[8, 8], [9, 9]]), 2)


# ------------------------------------------------------------------------------------------------
# Pooling


def reference_weights(index, regions, valid, feature):
    """Loop over images and regions; block means of the membership mask; normalised."""
    b, r = valid.shape
    s = index.shape[-1]
    out = np.zeros((b, r, feature, feature))
    for i in range(b):
        for k in range(r):
            if not valid[i, k]:
                continue
            r0, c0, r1, c1 = regions[i, k]
            rows, cols = index[i, 0], index[i, 1]
            mask = (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)
            block = mask.reshape(feature, s // feature, feature, s // feature).mean((1, 3))
            out[i, k] = block / block.sum()
    return out


def test_region_weights_match_the_loop_reference_and_sum_to_one():
    batch = batch_of_pairs(8, seed=7, flip_p=0.5, rotate_p=0.8)
    valid = batch["region_valid"].clone()
    valid[0, 1] = False  # an invalid slot with a real box still gets zero weight
    for key in ("a", "b"):
        w = R.region_weights(batch[f"index_{key}"], batch["regions"], valid, (56, 56))
        assert w.shape == (8, 4, 56, 56) and w.dtype == torch.float32
        ref = reference_weights(
            batch[f"index_{key}"].numpy(), batch["regions"].numpy(), valid.numpy(), 56
        )
        np.testing.assert_allclose(w.numpy(), ref, atol=1e-6)
        sums = w.sum((-2, -1))
        assert torch.allclose(sums[valid], torch.ones(int(valid.sum())), atol=1e-5)
        assert (sums[~valid] == 0).all()


def test_pooling_source_coordinates_recovers_the_box_centre():
    size = 224
    batch = batch_of_pairs(16, seed=8, flip_p=0.5, rotate_p=0.8)
    valid = batch["region_valid"]
    regions = batch["regions"].double()
    centre = torch.stack([regions[..., 0] + regions[..., 2], regions[..., 1] + regions[..., 3]], -1)
    centre = (centre - 1) / 2
    for key in ("a", "b"):
        index = batch[f"index_{key}"]
        # a feature map at S / 4 whose two channels are the source row and column it looks at
        features = F.avg_pool2d(index.float(), 4)
        w = R.region_weights(index, batch["regions"], valid, (size // 4, size // 4))
        pooled = R.pool_regions(features, w)  # (B, R, 2)
        err = (pooled.double() - centre).abs()[valid]
        # one feature cell spans 4 view pixels = at most 4 * 256 / 224 source pixels; partial
        # cells at the box border shift the mean by less than half of that
        assert err.max() < 2 * 256 / 224
        assert err.mean() < 0.5


def test_pool_regions_is_the_weighted_mean():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(2, 5, 6, 6, generator=gen)
    weights = torch.rand(2, 3, 6, 6, generator=gen)
    weights = weights / weights.sum((-2, -1), keepdim=True)
    weights[1, 2] = 0
    out = R.pool_regions(features, weights)
    for b in range(2):
        for r in range(3):
            expected = (features[b] * weights[b, r]).sum((-2, -1))
            assert torch.allclose(out[b, r], expected, atol=1e-6)
    assert (out[1, 2] == 0).all()


def test_matched_area_iou_of_no_regions_is_empty():
    tile = torch.rand(4, 64, 64)
    for views in (PairedViews(size=32, n_regions=0), PairedViews(size=32, n_regions=2)):
        batch = torch.utils.data.default_collate([views(tile, np.random.default_rng(0))])
        batch["region_valid"][:] = False
        iou = R.matched_area_iou(
            batch["index_a"],
            batch["index_b"],
            batch["regions"],
            batch["region_valid"],
            source_size=batch["source_size"],
        )
        assert iou.shape == (0,)
