"""The view colour-op benchmark runs, and the semantic claims behind keeping our ops hold."""

from __future__ import annotations

import math
import random

import albumentations as A
import numpy as np
import torch
from albumentations.augmentations.blur.functional import create_gaussian_kernel_1d
from albumentations.augmentations.pixel.functional import separable_convolve

from glcnet.bench.view_ops import AlbumentationsColourViews, bench_view_ops, format_view_ops
from glcnet.data.seg_augment import RGBOnly
from glcnet.data.transforms import gaussian_blur, to_grayscale


def test_bench_reports_every_op_and_both_pipelines():
    out = bench_view_ops(size=32, tile_size=48, calls=2, pairs=2, rounds=1)
    assert [r["op"] for r in out["ops"]] == ["color_jitter", "grayscale", "gaussian_blur", "noise"]
    for r in out["ops"]:
        assert r["ours_per_s"] > 0 and r["albumentations_per_s"] > 0
        assert math.isclose(
            r["albumentations_vs_ours"], r["albumentations_per_s"] / r["ours_per_s"]
        )
    p = out["pipeline"]
    assert p["ours_pairs_per_s"] > 0 and p["albumentations_pairs_per_s"] > 0
    assert "view pipeline pairs/s" in format_view_ops(out)


def test_albumentations_views_keep_the_index_maps_and_the_ir_band_under_grayscale():
    tile = np.random.default_rng(0).random((4, 48, 48), dtype=np.float32)
    views = AlbumentationsColourViews(
        size=32, region_size=8, color_p=0, grayscale_p=1, blur_p=0, noise_p=0
    )
    pair = views(tile, np.random.default_rng(1))
    index = pair["index_b"].long()
    source = torch.from_numpy(tile)[:, index[0], index[1]]
    assert torch.equal(pair["view_b"][3], source[3])  # IR untouched, pixels where the map says
    grey = 0.299 * source[0] + 0.587 * source[1] + 0.114 * source[2]
    assert torch.allclose(pair["view_b"][:3], grey.expand(3, -1, -1), atol=1e-6)


def test_grayscale_and_blur_kernels_match_albumentations_for_the_same_parameters():
    x = np.random.default_rng(0).random((4, 40, 40), dtype=np.float32)
    hwc = np.ascontiguousarray(x.transpose(1, 2, 0))
    grey = RGBOnly(A.ToGray(p=1))(image=hwc)["image"].transpose(2, 0, 1)
    np.testing.assert_allclose(grey, to_grayscale(x), atol=1e-6)
    for kernel, sigma in ((3, 0.1), (5, 1.3), (7, 2.0)):
        theirs = separable_convolve(hwc, kernel=create_gaussian_kernel_1d(sigma, kernel))
        np.testing.assert_allclose(
            theirs.transpose(2, 0, 1), gaussian_blur(x, kernel, sigma), atol=1e-6
        )


def test_albumentations_blur_draws_kernel_sides_unevenly():
    """The reason the blur's parameter law differs: sides 3..7 drawn as integers, even ones bumped."""
    blur = A.GaussianBlur(blur_limit=(3, 7), sigma_limit=(0.1, 2.0), p=1)
    blur.set_random_state(np.random.default_rng(0), random.Random(0))
    n = 5000
    sides = [len(blur.get_params_dependent_on_data({}, {})["kernel"]) for _ in range(n)]
    assert abs(sides.count(3) / n - 1 / 5) < 0.03  # ours: 1/3 each of 3, 5, 7
    assert abs(sides.count(7) / n - 2 / 5) < 0.03
