"""Paired views: exact index maps, colour ops on 4 bands, multi-crop, determinism, configs."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from glcnet.data import transforms as T
from glcnet.data.views import PairedViews
from glcnet.utils.config import CONFIG_DIR

GEOMETRY_ONLY = {"color_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0, "noise_p": 0.0}


def coordinate_tile(height: int = 256, width: int = 256) -> np.ndarray:
    """4-band tile whose values encode their own (row, col), exactly representable in float32."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    tile = np.stack(
        [rows / 512, cols / 512, (rows * width + cols) / 2**20, np.full_like(rows, 0.5)]
    )
    return tile.astype(np.float32)


def random_rgbir(rng: np.random.Generator, size: int = 32, low=0.0, high=1.0) -> np.ndarray:
    return rng.uniform(low, high, size=(4, size, size)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Geometry


@pytest.mark.parametrize("flip_p, rotate_p", [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_view_pixels_are_the_source_pixels_named_by_the_index_map(flip_p, rotate_p):
    tile = coordinate_tile(200, 256)
    views = PairedViews(size=96, flip_p=flip_p, rotate_p=rotate_p, **GEOMETRY_ONLY)
    rots = set()
    for seed in range(24):
        pair = views(tile, np.random.default_rng(seed))
        for key in ("a", "b"):
            view, index = pair[f"view_{key}"].numpy(), pair[f"index_{key}"].numpy()
            expected = tile[:, index[0].astype(int), index[1].astype(int)]
            np.testing.assert_array_equal(view, expected)
            # decode the source position from the pixel values themselves
            np.testing.assert_array_equal(view[0] * 512, index[0])
            np.testing.assert_array_equal(view[1] * 512, index[1])
        assert bool(pair["flip_b"]) == (flip_p == 1.0)
        assert not bool(pair["flip_a"]) and int(pair["rot_a"]) == 0
        rots.add(int(pair["rot_b"]))
    assert rots == ({1, 2, 3} if rotate_p == 1.0 else {0})


def test_index_map_matches_torch_nearest_exact_flip_and_rot90():
    """Crop + resize against F.interpolate(nearest-exact), then torch.flip / torch.rot90."""
    rng = np.random.default_rng(3)
    for _ in range(30):
        height, width = rng.integers(20, 120, size=2)
        size = int(rng.integers(8, 100))  # both up- and down-sampling
        crop = T.sample_crop(rng, height, width, (0.1, 1.0), (0.5, 2.0))
        row0, col0, h, w = crop
        rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        coords = torch.stack([rows, cols]).double()[None, :, row0 : row0 + h, col0 : col0 + w]
        resized = F.interpolate(coords, size=(size, size), mode="nearest-exact")[0].long()
        for flip in (False, True):
            for k in range(4):
                ref = torch.flip(resized, dims=[-1]) if flip else resized
                ref = torch.rot90(ref, k, dims=(-2, -1))
                got = torch.from_numpy(T.index_map(crop, size, flip, k)).long()
                assert torch.equal(got, ref), (crop, size, flip, k)


def test_sample_crop_respects_scale_ratio_and_bounds():
    rng = np.random.default_rng(0)
    areas, ratios = [], []
    for _ in range(2000):
        row0, col0, h, w = T.sample_crop(rng, 256, 256, (0.4, 1.0), (3 / 4, 4 / 3))
        assert 0 <= row0 and row0 + h <= 256 and 0 <= col0 and col0 + w <= 256
        areas.append(h * w / 256**2)
        ratios.append(w / h)
    # rounding to whole pixels moves the bounds by at most one pixel per side
    assert 0.4 - 0.01 <= min(areas) and max(areas) <= 1.0
    assert 3 / 4 - 0.02 <= min(ratios) and max(ratios) <= 4 / 3 + 0.02
    # below area 0.75 every ratio fits, so no draw is rejected there: the area density is flat
    areas = np.array(areas)
    low = ((areas >= 0.42) & (areas < 0.58)).sum()
    high = ((areas >= 0.58) & (areas < 0.74)).sum()
    assert low == pytest.approx(high, rel=0.2)
    # impossible constraints fall back to a centre crop
    assert T.sample_crop(rng, 100, 300, (1.0, 1.0), (1.0, 1.0)) == (0, 100, 100, 100)


# ------------------------------------------------------------------------------------------------
# Colour ops on RGBIR


def test_hue_saturation_grayscale_leave_ir_alone():
    rng = np.random.default_rng(0)
    x = random_rgbir(rng)
    for out in (
        T.adjust_hue(x, 0.3),
        T.adjust_saturation(x, 1.7),
        T.adjust_saturation(x, 0.0),
        T.to_grayscale(x),
        T.color_jitter(x, rng, brightness=0, contrast=0, saturation=0.8, hue=0.4),
    ):
        np.testing.assert_array_equal(out[3], x[3])
        assert not np.allclose(out[:3], x[:3])


def test_grayscale_makes_rgb_equal_to_luma():
    rng = np.random.default_rng(1)
    x = random_rgbir(rng)
    out = T.to_grayscale(x)
    grey = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
    for band in range(3):
        np.testing.assert_allclose(out[band], grey, atol=1e-6)
    np.testing.assert_allclose(T.adjust_saturation(x, 0.0), out, atol=1e-6)


def test_brightness_contrast_closed_forms_on_all_bands():
    rng = np.random.default_rng(2)
    x = random_rgbir(rng, low=0.3, high=0.6)
    np.testing.assert_allclose(T.adjust_brightness(x, 1.2), x * 1.2, atol=1e-6)
    out = T.adjust_contrast(x, 0.5)
    mean = x.reshape(4, -1).mean(1)[:, None, None]
    np.testing.assert_allclose(out, mean + 0.5 * (x - mean), atol=1e-6)
    np.testing.assert_allclose(out.reshape(4, -1).mean(1), mean.ravel(), atol=1e-6)


def test_hue_keeps_luma_and_greys_and_inverts():
    rng = np.random.default_rng(3)
    x = random_rgbir(rng, low=0.4, high=0.6)  # a small shift stays inside [0, 1]
    out = T.adjust_hue(x, 0.05)
    np.testing.assert_allclose(T.luma(out), T.luma(x), atol=1e-5)
    np.testing.assert_allclose(T.adjust_hue(out, -0.05), x, atol=1e-5)
    grey = np.full((4, 8, 8), 0.3, dtype=np.float32)
    np.testing.assert_allclose(T.adjust_hue(grey, 0.37), grey, atol=1e-6)
    np.testing.assert_allclose(T.hue_matrix(0.0), np.eye(3), atol=1e-6)
    np.testing.assert_allclose(
        T.hue_matrix(0.25) @ T.hue_matrix(0.25), T.hue_matrix(0.5), atol=1e-5
    )


def test_fused_jitter_equals_the_ops_applied_one_by_one():
    rng = np.random.default_rng(4)
    ops_fn = {
        "brightness": T.adjust_brightness,
        "contrast": T.adjust_contrast,
        "saturation": T.adjust_saturation,
        "hue": T.adjust_hue,
    }
    for seed in range(20):
        x = random_rgbir(rng, low=0.4, high=0.6)  # strengths below keep every step in [0, 1]
        kw = {"brightness": 0.2, "contrast": 0.3, "saturation": 0.5, "hue": 0.05}
        ops = T.sample_jitter(np.random.default_rng(seed), **kw)
        assert sorted(name for name, _ in ops) == sorted(kw)
        ref = x
        for name, factor in ops:
            ref = ops_fn[name](ref, factor)
        out = T.color_jitter(x, np.random.default_rng(seed), **kw)
        np.testing.assert_allclose(out, ref, atol=2e-5)


def test_values_are_clipped_to_unit_range():
    rng = np.random.default_rng(5)
    x = random_rgbir(rng)
    outs = [
        T.adjust_brightness(x, 1.8),
        T.adjust_contrast(x, 1.8),
        T.adjust_saturation(x, 1.9),
        T.adjust_hue(x, 0.4),
        T.add_noise(x, 0.5, rng),
        T.color_jitter(x, rng, 0.9, 0.9, 0.9, 0.5),
    ]
    views = PairedViews(size=32, color_p=1, noise_p=1, noise_std=0.5, brightness=0.9, contrast=0.9)
    outs += [views(x, np.random.default_rng(s))["view_b"].numpy() for s in range(10)]
    for out in outs:
        assert out.dtype == np.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
    assert any(out.max() == 1.0 for out in outs) and any(out.min() == 0.0 for out in outs)


def test_gaussian_blur_of_a_delta_is_the_normalised_kernel():
    x = np.zeros((4, 21, 21), dtype=np.float32)
    x[:, 10, 10] = 1.0
    for kernel, sigma in ((3, 0.7), (5, 1.3), (7, 2.0)):
        half = kernel // 2
        g = np.exp(-(np.arange(-half, half + 1) ** 2) / (2 * sigma**2))
        g /= g.sum()
        out = T.gaussian_blur(x, kernel, sigma)
        expected = np.zeros((21, 21))
        expected[10 - half : 11 + half, 10 - half : 11 + half] = np.outer(g, g)
        for band in range(4):
            np.testing.assert_allclose(out[band], expected, atol=1e-6)
    const = np.full((4, 9, 9), 0.25, dtype=np.float32)
    np.testing.assert_allclose(T.gaussian_blur(const, 7, 1.5), const, atol=1e-6)
    with pytest.raises(ValueError, match="odd"):
        T.gaussian_blur(x, 4, 1.0)


def test_noise_is_gaussian_with_the_requested_std():
    rng = np.random.default_rng(6)
    z = T.standard_normal(rng, (400_000,))
    assert abs(z.mean()) < 0.01 and z.std() == pytest.approx(1.0, abs=0.01)
    # fraction beyond 1 and 2 sigma: 2 * (1 - Phi(k))
    assert (np.abs(z) > 1).mean() == pytest.approx(0.3173, abs=0.005)
    assert (np.abs(z) > 2).mean() == pytest.approx(0.0455, abs=0.003)
    x = np.full((4, 128, 128), 0.5, dtype=np.float32)
    delta = T.add_noise(x, 0.03, rng) - x
    assert abs(delta.mean()) < 0.002 and delta.std() == pytest.approx(0.03, rel=0.03)


def test_colour_ops_need_rgb_bands():
    with pytest.raises(ValueError, match="C>=3"):
        T.adjust_hue(np.zeros((2, 4, 4), np.float32), 0.1)
    with pytest.raises(ValueError, match="3 bands"):
        PairedViews(size=16)(np.zeros((2, 32, 32), np.float32), np.random.default_rng(0))
    # geometry-only views accept any band count
    out = PairedViews(size=16, grayscale_p=0, color_p=0)(
        np.zeros((1, 32, 32), np.float32), np.random.default_rng(0)
    )
    assert out["view_a"].shape == (1, 16, 16)


# ------------------------------------------------------------------------------------------------
# The pair as a whole


def test_pair_shapes_dtypes_and_collation():
    views = PairedViews(size=64, region_size=16)
    items = [views(torch.rand(4, 80, 80), np.random.default_rng(s)) for s in range(3)]
    batch = torch.utils.data.default_collate(items)
    assert batch["view_a"].shape == batch["view_b"].shape == (3, 4, 64, 64)
    assert batch["view_a"].dtype == torch.float32
    assert batch["index_a"].shape == (3, 2, 64, 64) and batch["index_a"].dtype == torch.int16
    assert batch["regions"].shape == (3, 4, 4) and batch["region_valid"].dtype == torch.bool
    assert batch["crop_b"].shape == (3, 4) and batch["source_size"].tolist() == [[80, 80]] * 3
    three = views(np.random.default_rng(0).random((3, 80, 80)), np.random.default_rng(1))
    assert three["view_b"].shape == (3, 64, 64) and three["view_b"].dtype == torch.float32


def test_view_a_is_crop_only_and_view_b_is_augmented():
    tile = np.random.default_rng(0).random((4, 128, 128)).astype(np.float32)
    views = PairedViews(size=64, color_p=1.0, noise_p=1.0)
    for seed in range(5):
        pair = views(tile, np.random.default_rng(seed))
        ia, ib = pair["index_a"].long().numpy(), pair["index_b"].long().numpy()
        np.testing.assert_array_equal(pair["view_a"].numpy(), tile[:, ia[0], ia[1]])
        assert not np.allclose(pair["view_b"].numpy(), tile[:, ib[0], ib[1]], atol=1e-3)


def test_symmetric_views_augment_both():
    views = PairedViews(size=32, region_size=8, flip_p=1.0, rotate_p=1.0, symmetric=True)
    tile = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32)
    pairs = [views(tile, np.random.default_rng(s)) for s in range(10)]
    assert all(bool(p["flip_a"]) and int(p["rot_a"]) in (1, 2, 3) for p in pairs)


def test_determinism_from_the_passed_rng_only():
    tile = torch.rand(4, 96, 96)
    views = PairedViews(size=64, region_size=16, color_p=1.0, blur_p=1.0, noise_p=1.0)
    one = views(tile, np.random.default_rng(123))
    np.random.seed(999)
    torch.manual_seed(999)
    two = views(tile, np.random.default_rng(123))
    other = views(tile, np.random.default_rng(124))
    for key in one:
        assert torch.equal(one[key], two[key]), key
    assert not torch.equal(one["view_b"], other["view_b"])


def test_no_global_rng_is_consumed():
    views = PairedViews(size=32, region_size=8, color_p=1.0, blur_p=1.0, noise_p=1.0)
    tile = torch.rand(4, 48, 48)
    np.random.seed(7)
    torch.manual_seed(7)
    views(tile, np.random.default_rng(0))
    after_np, after_torch = np.random.random(), torch.rand(())
    np.random.seed(7)
    torch.manual_seed(7)
    assert np.random.random() == after_np and torch.equal(torch.rand(()), after_torch)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scale": (0.5, 1.2)}, "scale"),
        ({"ratio": (2.0, 1.0)}, "ratio"),
        ({"flip_p": 1.5}, "flip_p"),
        ({"hue": 0.7}, "hue"),
        ({"blur_kernels": (3, 4)}, "odd"),
        ({"min_region_size": 100}, "min_region_size"),
        ({"n_regions": -1}, "n_regions"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PairedViews(**kwargs)


def test_bad_input_raises():
    views = PairedViews(size=16)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        views(np.zeros((32, 32), np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="float"):
        views(np.zeros((4, 32, 32), np.uint8), np.random.default_rng(0))


def test_small_crops_are_small_augmented_views_drawn_after_the_pair():
    tile = coordinate_tile(200, 256)
    plain = PairedViews(size=96, **GEOMETRY_ONLY)
    multi = PairedViews(
        size=96, small_crops=3, small_size=32, small_scale=(0.05, 0.2), **GEOMETRY_ONLY
    )
    for seed in range(8):
        pair = plain(tile, np.random.default_rng(seed))
        more = multi(tile, np.random.default_rng(seed))
        assert set(more) - set(pair) == {"crops"}
        for key, value in pair.items():  # drawn after the pair: the pair is unchanged
            assert torch.equal(value, more[key]), key
        crops = more["crops"].numpy()
        assert crops.shape == (3, 4, 32, 32) and crops.dtype == np.float32
        for crop in crops:  # source pixels (decoded from their values) span a small window
            rows, cols = crop[0] * 512, crop[1] * 512
            np.testing.assert_array_equal(rows, np.round(rows))
            area = (np.ptp(rows) + 1) * (np.ptp(cols) + 1) / (200 * 256)
            assert 0.05 * 0.8 <= area <= 0.2 + 1e-6, area
    assert "crops" not in PairedViews(size=32)(tile, np.random.default_rng(0))
    with pytest.raises(ValueError, match="small_crops"):
        PairedViews(small_crops=-1)
    with pytest.raises(ValueError, match="small_scale"):
        PairedViews(small_scale=(0.1, 2.0))


# ------------------------------------------------------------------------------------------------
# Configs


def _load(name: str):
    return OmegaConf.load(CONFIG_DIR / "augment" / f"{name}.yaml")


def test_augment_configs_list_every_argument():
    names = set(inspect.signature(PairedViews).parameters)
    for name in ("glcnet", "simclr", "none"):
        cfg = _load(name)
        assert cfg._target_ == "glcnet.data.views.PairedViews"
        assert set(cfg) - {"_target_"} == names, name


def test_glcnet_config_holds_the_paper_defaults():
    cfg = OmegaConf.to_container(_load("glcnet"))
    for key, param in inspect.signature(PairedViews).parameters.items():
        value, default = cfg[key], param.default
        if isinstance(default, tuple):
            assert value == pytest.approx(list(default)), key
        else:
            assert value == default, key
    assert cfg["scale"] == [0.4, 1.0] and cfg["rotate_p"] == 0.8 and cfg["n_regions"] == 4


def test_none_config_is_the_identity():
    cfg = _load("none")
    cfg.size, cfg.region_size = 64, 16
    views = PairedViews(**{k: v for k, v in OmegaConf.to_container(cfg).items() if k != "_target_"})
    tile = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32)
    pair = views(tile, np.random.default_rng(0))
    np.testing.assert_array_equal(pair["view_a"].numpy(), tile)
    np.testing.assert_array_equal(pair["view_b"].numpy(), tile)
    assert pair["region_valid"].all()
