"""Tests of glcnet.inference: sliding-window prediction and prediction GeoTIFFs."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from torch import nn

from glcnet.data.classes import BOUNDARY_COLOR, ISPRS_PALETTE, decode_palette
from glcnet.inference import (
    predict_labels,
    sliding_window_predict,
    sliding_windows,
    window_starts,
    write_prediction_geotiff,
)

CRS = "EPSG:32632"
TRANSFORM = Affine(0.05, 0.0, 368000.0, 0.0, -0.05, 5808000.0)


def write_tif(path, data: np.ndarray) -> str:
    """Write a (C, H, W) array as a georeferenced GeoTIFF."""
    c, h, w = data.shape
    with rasterio.open(
        path, "w", driver="GTiff", height=h, width=w, count=c, dtype=data.dtype,
        crs=CRS, transform=TRANSFORM,
    ) as dst:  # fmt: skip
        dst.write(data)
    return str(path)


def gaussian_1d(t: int) -> np.ndarray:
    """Reference Gaussian window profile: centre (t - 1) / 2, sigma t / 8."""
    i = np.arange(t, dtype=np.float64)
    return np.exp(-((i - (t - 1) / 2) ** 2) / (2 * (t / 8) ** 2))


def softmax_np(x: np.ndarray, axis: int = 0) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def pixel_model(c_in: int = 3, k: int = 5, seed: int = 0) -> nn.Module:
    """A per-pixel (1x1 conv) nonlinear model with fixed random weights."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(c_in, 8, 1), nn.Tanh(), nn.Conv2d(8, k, 1)).eval()


def whole_image_probs(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model(image[None]), dim=1)[0]


class MeanModel(nn.Module):
    """Constant logits per window, a function of the window's mean value (position dependent)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(dim=(1, 2, 3))
        logits = torch.stack([torch.zeros_like(m), 10 * m, 5 - 10 * m], dim=1)
        return logits[:, :, None, None].expand(-1, -1, *x.shape[-2:])


def mean_model_probs(patch: np.ndarray) -> np.ndarray:
    m = patch.mean()
    return softmax_np(np.array([0.0, 10 * m, 5 - 10 * m]))


# ----------------------------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("size", "tile", "stride", "expected"),
    [
        (10, 4, 3, [0, 3, 6]),
        (11, 4, 3, [0, 3, 6, 7]),
        (8, 4, 4, [0, 4]),
        (9, 4, 4, [0, 4, 5]),
        (4, 4, 1, [0]),
        (3, 4, 2, [0]),
        (5, 4, 1, [0, 1]),
    ],
)
def test_window_starts_hand_computed(size, tile, stride, expected):
    assert window_starts(size, tile, stride) == expected


@pytest.mark.parametrize(
    ("height", "width", "tile", "stride"),
    [(40, 40, 16, 8), (37, 53, 16, 12), (10, 7, 16, 8), (5, 30, 16, 7), (256, 300, 64, 64),
     (1, 1, 8, 3), (97, 13, 32, 1)],
)  # fmt: skip
def test_windows_cover_every_pixel(height, width, tile, stride):
    wins = sliding_windows(height, width, tile, stride)
    cover = np.zeros((height, width), dtype=int)
    for r, c, h, w in wins:
        assert 0 <= r and 0 <= c and r + h <= height and c + w <= width
        assert h == min(tile, height) and w == min(tile, width)
        cover[r : r + h, c : c + w] += 1
    assert (cover > 0).all()
    assert len(wins) == len(set(wins))


def test_bad_window_arguments_raise():
    with pytest.raises(ValueError, match="stride"):
        window_starts(10, 4, 5)
    with pytest.raises(ValueError, match="stride"):
        window_starts(10, 4, 0)


# ---------------------------------------------------------------- equality with whole-image model


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap", "stride", "blend"),
    [
        (40, 40, 16, 0.5, None, "gaussian"),
        (37, 53, 16, 0.25, None, "gaussian"),
        (10, 7, 16, 0.5, None, "mean"),  # smaller than the tile: padded, cropped back
        (5, 30, 16, 0.5, 7, "gaussian"),  # smaller along one axis only
        (16, 16, 16, 0.0, None, "gaussian"),
        (1, 1, 8, 0.5, None, "gaussian"),
        (33, 20, 16, 0.5, 5, "mean"),
    ],
)
def test_per_pixel_model_matches_whole_image(height, width, tile, overlap, stride, blend):
    g = torch.Generator().manual_seed(height * 100 + width)
    image = torch.rand(3, height, width, generator=g)
    model = pixel_model()
    probs = sliding_window_predict(
        model, image, num_classes=5, tile_size=tile, overlap=overlap, stride=stride,
        batch_size=3, blend=blend,
    )  # fmt: skip
    assert probs.shape == (5, height, width) and probs.dtype == torch.float32
    torch.testing.assert_close(probs, whole_image_probs(model, image), atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(probs.sum(0), torch.ones(height, width), atol=1e-5, rtol=0)


def test_model_sees_full_tiles_and_batches():
    seen = []

    def model(x):
        seen.append(tuple(x.shape))
        return torch.zeros(x.shape[0], 2, *x.shape[-2:])

    probs = sliding_window_predict(model, torch.rand(3, 10, 40), 2, tile_size=16, stride=8,
                                   batch_size=2)  # fmt: skip
    # columns: starts 0, 8, 16, 24 -> 4 windows in batches of 2; rows padded from 10 to 16
    assert seen == [(2, 3, 16, 16), (2, 3, 16, 16)]
    torch.testing.assert_close(probs, torch.full((2, 10, 40), 0.5))


# ------------------------------------------------------------------------------------------ blend


def test_pixel_covered_by_two_windows_gets_weighted_mean():
    h, w, t = 16, 24, 16  # windows at columns 0 and 8 (hand-computed)
    image = np.tile(np.linspace(0.0, 1.0, w), (h, 1))[None].astype(np.float32)
    p0 = mean_model_probs(image[:, :, 0:16])
    p1 = mean_model_probs(image[:, :, 8:24])
    assert np.abs(p0 - p1).max() > 0.1  # the two windows really disagree

    g = gaussian_1d(t)
    out = sliding_window_predict(MeanModel(), torch.from_numpy(image), 3, tile_size=t, stride=8)
    out = out.double().numpy()
    # pixel (5, 12): column 12 of window 0, column 4 of window 1; the row factor cancels
    expected = (g[12] * p0 + g[4] * p1) / (g[12] + g[4])
    np.testing.assert_allclose(out[:, 5, 12], expected, atol=1e-6)
    gap = np.abs(p0 - p1).max()
    assert np.abs(out[:, 5, 12] - p1).max() > 0.2 * gap  # not last-write-wins
    assert np.abs(out[:, 5, 12] - p0).max() > 0.2 * gap
    # columns seen by one window only get that window's output
    np.testing.assert_allclose(out[:, 3, 4], p0, atol=1e-6)
    np.testing.assert_allclose(out[:, 3, 20], p1, atol=1e-6)

    uniform = sliding_window_predict(
        MeanModel(), torch.from_numpy(image), 3, tile_size=t, stride=8, blend="mean"
    )
    np.testing.assert_allclose(uniform[:, 5, 10].double().numpy(), (p0 + p1) / 2, atol=1e-6)


@pytest.mark.parametrize("blend", ["gaussian", "mean"])
def test_blend_matches_loop_reference(blend):
    rng = np.random.default_rng(3)
    height, width, t, s = 37, 45, 16, 10
    image = rng.random((2, height, width)).astype(np.float32)
    # reference windows: starts every s, the last one moved back to the border
    rows = [0, 10, 20, 21]
    cols = [0, 10, 20, 29]
    weight = np.outer(gaussian_1d(t), gaussian_1d(t)) if blend == "gaussian" else np.ones((t, t))
    acc = np.zeros((3, height, width))
    norm = np.zeros((height, width))
    for r in rows:
        for c in cols:
            p = mean_model_probs(image[:, r : r + t, c : c + t].astype(np.float64))
            acc[:, r : r + t, c : c + t] += p[:, None, None] * weight
            norm[r : r + t, c : c + t] += weight
    expected = acc / norm
    out = sliding_window_predict(MeanModel(), torch.from_numpy(image), 3, tile_size=t, stride=s,
                                 blend=blend, batch_size=5)  # fmt: skip
    np.testing.assert_allclose(out.double().numpy(), expected, atol=2e-6)


# -------------------------------------------------------------------------------------------- TTA


class SymmetricConv(nn.Module):
    """3x3 convolution whose kernels are symmetric under both flips (flip-equivariant)."""

    def __init__(self, c_in: int, k: int) -> None:
        super().__init__()
        torch.manual_seed(1)
        a, b, c, d = torch.randn(4, k, c_in)
        kernel = torch.stack(
            [torch.stack([a, b, a], -1), torch.stack([c, d, c], -1), torch.stack([a, b, a], -1)],
            -2,
        )
        self.register_buffer("kernel", kernel)

    def forward(self, x):
        return nn.functional.conv2d(x, self.kernel, padding=1)


class RampConv(nn.Module):
    """3x3 random convolution plus a column ramp: not flip-equivariant."""

    def __init__(self, c_in: int, k: int) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(c_in, k, 3, padding=1)

    def forward(self, x):
        ramp = torch.linspace(0, 2, x.shape[-1])
        cls = torch.arange(self.conv.out_channels, dtype=x.dtype)
        return self.conv(x) + cls[:, None, None] * ramp


def test_tta_with_flip_equivariant_model_equals_no_tta():
    model = SymmetricConv(3, 4)
    image = torch.rand(3, 30, 41, generator=torch.Generator().manual_seed(0))
    x = image[None, :, :16, :16]
    with torch.no_grad():  # the symmetric kernel really is flip-equivariant
        torch.testing.assert_close(model(x.flip(-1)).flip(-1), model(x), atol=1e-5, rtol=1e-5)
    plain = sliding_window_predict(model, image, 4, tile_size=16, overlap=0.5)
    tta = sliding_window_predict(model, image, 4, tile_size=16, overlap=0.5, tta_flip=True)
    torch.testing.assert_close(tta, plain, atol=1e-5, rtol=1e-5)


def test_tta_averages_unflipped_outputs_single_window():
    model = RampConv(3, 4)
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    x = image[None]
    with torch.no_grad():
        ident = torch.softmax(model(x), 1)[0]
        hflip = torch.softmax(model(x.flip(-1)), 1)[0].flip(-1)
        vflip = torch.softmax(model(x.flip(-2)), 1)[0].flip(-2)
    expected = (ident + hflip + vflip) / 3
    tta = sliding_window_predict(model, image, 4, tile_size=16, tta_flip=True)
    torch.testing.assert_close(tta, expected, atol=1e-6, rtol=1e-5)
    assert (tta - ident).abs().max() > 1e-2  # the model is not equivariant: TTA changes things


def test_tta_multi_window_equals_blend_of_flip_averaged_model():
    model = RampConv(3, 4)

    def averaged(x):  # log of the flip-averaged probabilities: softmax gives them back
        p = (
            torch.softmax(model(x), 1)
            + torch.softmax(model(x.flip(-1)), 1).flip(-1)
            + torch.softmax(model(x.flip(-2)), 1).flip(-2)
        ) / 3
        return p.log()

    image = torch.rand(3, 29, 35, generator=torch.Generator().manual_seed(2))
    tta = sliding_window_predict(model, image, 4, tile_size=16, stride=8, tta_flip=True)
    ref = sliding_window_predict(averaged, image, 4, tile_size=16, stride=8)
    torch.testing.assert_close(tta, ref, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- model mode, labels


class ModeRecorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.drop = nn.Dropout(0.9)
        self.calls: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.calls.append((self.training, torch.is_inference_mode_enabled()))
        return self.drop(self.conv(x))


def test_model_runs_in_eval_and_inference_mode_then_mode_restored():
    model = ModeRecorder().train()
    image = torch.rand(3, 20, 20)
    a = sliding_window_predict(model, image, 2, tile_size=16, tta_flip=True)
    b = sliding_window_predict(model, image, 2, tile_size=16)
    assert model.calls and all(c == (False, True) for c in model.calls)
    assert model.training  # restored
    torch.testing.assert_close(b, whole_image_probs(model.eval(), image), atol=2e-6, rtol=1e-5)
    assert a.shape == b.shape


def test_predict_labels_is_argmax():
    model = pixel_model()
    image = torch.rand(3, 23, 31, generator=torch.Generator().manual_seed(5))
    labels = predict_labels(model, image, 5, tile_size=16, overlap=0.5)
    assert labels.dtype == torch.int64 and labels.shape == (23, 31)
    assert torch.equal(labels, whole_image_probs(model, image).argmax(0))


def test_bad_inputs_raise():
    model = pixel_model()
    image = torch.rand(3, 20, 20)
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_predict(model, image, 5, tile_size=16, overlap=1.0)
    with pytest.raises(ValueError, match="stride"):
        sliding_window_predict(model, image, 5, tile_size=16, stride=17)
    with pytest.raises(ValueError, match="blend"):
        sliding_window_predict(model, image, 5, tile_size=16, blend="max")
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        sliding_window_predict(model, image[0], 5, tile_size=16)
    with pytest.raises(ValueError, match="num_classes"):
        sliding_window_predict(model, image, 6, tile_size=16)
    with pytest.raises(ValueError, match="band_indexes"):
        sliding_window_predict(model, image, 5, tile_size=16, band_indexes=[0, 1, 2])
    with pytest.raises(ValueError, match="scale"):
        sliding_window_predict(model, image, 5, tile_size=16, scale=0.0)
    with pytest.raises(TypeError):
        sliding_window_predict(model, [[1.0]], 5, tile_size=16)


# ------------------------------------------------------------------------------------ raster input


def test_path_input_equals_tensor_input_and_reads_windows_only(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, size=(4, 45, 38), dtype=np.uint8)
    path = write_tif(tmp_path / "scene_RGBIR.tif", data)
    bands = [4, 1, 2]
    model = pixel_model()
    from_tensor = sliding_window_predict(
        model, torch.from_numpy(data[[3, 0, 1]].astype(np.float32) / 255), 5, tile_size=16
    )
    reads = []
    original = rasterio.io.DatasetReader.read

    def spy(self, *args, **kwargs):
        reads.append(kwargs.get("window"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    from_path = sliding_window_predict(model, path, 5, tile_size=16, band_indexes=bands)
    monkeypatch.undo()
    torch.testing.assert_close(from_path, from_tensor, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(from_path, whole_image_probs(model, torch.from_numpy(
        data[[3, 0, 1]].astype(np.float32) / 255)), atol=2e-6, rtol=1e-5)  # fmt: skip
    assert len(reads) == len(sliding_windows(45, 38, 16, 8))
    assert all(w is not None and w.height <= 16 and w.width <= 16 for w in reads)

    # the same scene inside a zip archive, read through GDAL's /vsizip/
    archive = tmp_path / "4_Ortho_RGBIR.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(path, "4_Ortho_RGBIR/scene_RGBIR.tif")
    zipped = f"/vsizip/{archive}/4_Ortho_RGBIR/scene_RGBIR.tif"
    from_zip = sliding_window_predict(model, zipped, 5, tile_size=16, band_indexes=bands)
    torch.testing.assert_close(from_zip, from_path, atol=0, rtol=0)


def test_integer_inputs_scaled_by_dtype_max(tmp_path):
    rng = np.random.default_rng(8)
    data = rng.integers(0, 65536, size=(3, 20, 27), dtype=np.uint16)
    as_float = torch.from_numpy(data.astype(np.float32) / 65535)
    model = pixel_model()
    ref = whole_image_probs(model, as_float)
    kw = dict(num_classes=5, tile_size=16)
    path = write_tif(tmp_path / "u16.tif", data)
    torch.testing.assert_close(sliding_window_predict(model, path, **kw), ref, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(sliding_window_predict(model, data, **kw), ref, atol=2e-6, rtol=1e-5)
    scaled = sliding_window_predict(model, data, scale=1000.0, **kw)
    ref_scaled = whole_image_probs(model, torch.from_numpy(data.astype(np.float32) / 1000))
    torch.testing.assert_close(scaled, ref_scaled, atol=2e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="band_indexes"):
        sliding_window_predict(model, path, band_indexes=[1, 4], **kw)


# ------------------------------------------------------------------------------------ GeoTIFF out


def test_written_geotiff_is_georeferenced_and_decodes_to_labels(tmp_path):
    ref = write_tif(tmp_path / "ref.tif", np.zeros((4, 33, 50), dtype=np.uint8))
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 6, size=(33, 50)).astype(np.uint8)
    labels[0, :5] = 255  # ignored pixels are written black

    out = write_prediction_geotiff(labels, ref, tmp_path / "pred" / "scene_prediction.tif")
    assert out.is_file()
    with rasterio.open(out) as src:
        assert src.crs == rasterio.crs.CRS.from_string(CRS)
        assert src.transform == TRANSFORM
        assert (src.height, src.width, src.count) == (33, 50, 3)
        assert src.dtypes == ("uint8",) * 3
        assert src.profile["tiled"] and src.compression.name.lower() == "deflate"
        rgb = src.read()
    decoded = decode_palette(rgb, ISPRS_PALETTE, ignore_colors=[BOUNDARY_COLOR])
    np.testing.assert_array_equal(decoded, labels.astype(np.int64))
    assert tuple(rgb[:, 1, 0]) == ISPRS_PALETTE[labels[1, 0]]

    idx = write_prediction_geotiff(torch.from_numpy(labels), ref, tmp_path / "idx.tif",
                                   colour=False)  # fmt: skip
    with rasterio.open(idx) as src:
        assert src.count == 1 and src.crs == rasterio.crs.CRS.from_string(CRS)
        assert src.transform == TRANSFORM
        np.testing.assert_array_equal(src.read(1), labels)
        assert src.colormap(1)[2] == (*ISPRS_PALETTE[2], 255)

    plain = write_prediction_geotiff(labels, ref, tmp_path / "plain.tif", palette=None)
    with rasterio.open(plain) as src:
        assert src.count == 1
        np.testing.assert_array_equal(src.read(1), labels)


def test_geotiff_size_mismatch_and_bad_labels_raise(tmp_path):
    ref = write_tif(tmp_path / "ref.tif", np.zeros((1, 10, 12), dtype=np.uint8))
    with pytest.raises(ValueError, match="reference"):
        write_prediction_geotiff(np.zeros((12, 10), np.uint8), ref, tmp_path / "a.tif")
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        write_prediction_geotiff(np.full((10, 12), 300), ref, tmp_path / "b.tif")
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        write_prediction_geotiff(np.zeros((1, 10, 12), np.uint8), ref, tmp_path / "c.tif")


def test_end_to_end_path_to_prediction_geotiff(tmp_path):
    data = np.random.default_rng(10).integers(0, 256, size=(3, 40, 29), dtype=np.uint8)
    path = write_tif(tmp_path / "scene.tif", data)
    model = pixel_model(k=6)
    labels = predict_labels(model, path, 6, tile_size=16, tta_flip=True)
    out = write_prediction_geotiff(labels.numpy().astype(np.uint8), path, tmp_path / "p.tif")
    with rasterio.open(out) as src:
        back = decode_palette(src.read())
    expected = whole_image_probs(model, torch.from_numpy(data.astype(np.float32) / 255)).argmax(0)
    np.testing.assert_array_equal(back, expected.numpy())
