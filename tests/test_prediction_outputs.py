"""What predict_scene writes: class COG, probabilities, polygons and quicklook, from known predictions."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from matplotlib.image import imread
from prediction_fakes import (
    NAMES,
    PALETTE,
    TRANSFORM,
    ContextNet,
    ThresholdModel,
    expected_classes,
    settings,
    write_raster,
)
from scipy import ndimage

from glcnet.inference import sliding_window_predict
from glcnet.prediction.cog_check import cog_layout_errors
from glcnet.prediction.errors import MissingDependencyError, PredictOptionError
from glcnet.prediction.run import PredictOptions, predict_scene
from glcnet.prediction.vectorize import vectorize_classes

pyogrio = pytest.importorskip("pyogrio")
shapely = pytest.importorskip("shapely")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


VALUES = (40, 128, 220)  # band-1 values of classes 0, 1, 2 under ThresholdModel


def blocks_scene(h: int = 300, w: int = 410) -> np.ndarray:
    """Band 1 of a scene of known class regions (some cross many windows), uint8 (3, h, w)."""
    cls = np.zeros((h, w), np.uint8)
    cls[40:260, 30:200] = 1  # a large region: crosses window and block borders
    cls[100:130, 250:400] = 2
    cls[200:203, 300:303] = 2  # a 9-pixel region
    cls[150:160, 60:70] = 0  # a hole in region 1
    cls[270:290, 380:410] = 1  # touches the right border
    data = np.stack([np.take(VALUES, cls)] * 3).astype(np.uint8)
    return data


def predict(tmp_path, data, crs="EPSG:32632", transform=TRANSFORM, model=None, **options):
    path = write_raster(tmp_path / "scene.tif", data, crs=crs, transform=transform)
    opts = PredictOptions(progress=False, **options)
    model = model or ThresholdModel()
    return predict_scene(model, settings(tile=64), path, tmp_path / "out", opts), path


def test_class_cog_keeps_grid_classes_colours_and_names(tmp_path):
    data = blocks_scene()
    result, path = predict(tmp_path, data)
    out = result.files["classes"]
    with rasterio.open(out) as dst, rasterio.open(path) as src:
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        assert dst.count == 1 and dst.dtypes[0] == "uint8" and dst.nodata == 255
        labels = dst.read(1)
        cmap = dst.colormap(1)
        tags = dst.tags()
        assert dst.descriptions[0].startswith("class (0=road, 1=roof, 2=grass")
        assert dst.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert dst.profile["tiled"] and dst.compression is not None
    assert np.array_equal(labels, expected_classes(data[0]))
    assert [cmap[i][:3] for i in range(3)] == list(PALETTE) and cmap[255][3] == 0
    assert json.loads(tags["CLASS_NAMES"]) == list(NAMES) and tags["CLASS_1"] == "roof"
    assert cog_layout_errors(out, full=True) == []


def test_cog_check_catches_layouts_that_are_not_cog(tmp_path):
    result, _ = predict(tmp_path, blocks_scene(700, 900), cog=False)
    out = result.files["classes"]
    with rasterio.open(out) as dst:
        assert dst.overviews(1) == [2, 4]  # tiled GeoTIFF with internal overviews
    errors = cog_layout_errors(out)
    assert any("main IFD" in e for e in errors)
    assert any("before the data of overview" in e for e in errors)


def test_cog_full_check_reads_tile_trailers(tmp_path):
    result, _ = predict(tmp_path, blocks_scene(700, 900))
    out = result.files["classes"]
    assert cog_layout_errors(out, full=True) == []
    with rasterio.open(out) as dst:
        offset = int(dst.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1))
        size = int(dst.get_tag_item("BLOCK_SIZE_0_0", "TIFF", bidx=1))
    raw = bytearray(out.read_bytes())
    raw[offset + size] ^= 0xFF  # first byte of the repeated trailer
    out.write_bytes(bytes(raw))
    assert cog_layout_errors(out, full=True) == ["full resolution: tile (0, 0) has a wrong trailer"]


def test_probabilities_are_streamed_uint8_of_the_blended_softmax(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, (3, 150, 170), np.uint8)
    model = ContextNet()
    result, path = predict(tmp_path, data, model=model, probabilities=True)
    whole = sliding_window_predict(model, str(path), 3, tile_size=64, overlap=0.5)
    with rasterio.open(result.files["probabilities"]) as p:
        probs = p.read()
        assert p.descriptions == ("p(road) x 255", "p(roof) x 255", "p(grass) x 255")
        assert p.scales == (1 / 255,) * 3
    assert np.array_equal(probs, np.rint(whole.numpy() * 255).astype(np.uint8))
    with rasterio.open(result.files["classes"]) as c:
        assert np.array_equal(c.read(1), whole.argmax(0).numpy())


def pixel_regions(labels: np.ndarray, k: int) -> dict[int, list[int]]:
    """Pixel count of every 4-connected region of each class, sorted."""
    out = {}
    for c in range(k):
        lab, n = ndimage.label(labels == c)
        out[c] = sorted(np.bincount(lab.ravel())[1:].tolist())
    return out


@pytest.mark.parametrize("fmt", ["gpkg", "geojson"])
def test_polygons_have_the_regions_classes_and_areas(tmp_path, fmt):
    data = blocks_scene()
    result, _ = predict(tmp_path, data, vector=fmt)
    path = result.files["vector"]
    assert path.suffix == f".{fmt}"
    info = pyogrio.read_info(path)
    assert list(info["fields"]) == ["class", "class_name", "area_m2"]
    assert info["crs"] == "EPSG:32632" and info["geometry_type"] == "Polygon"
    _, _, wkb, (cls, names, area) = pyogrio.raw.read(path)
    pixel_area = abs(TRANSFORM.a * TRANSFORM.e)
    expected = pixel_regions(expected_classes(data[0]), 3)
    for c in range(3):
        got = sorted(a / pixel_area for a in area[cls == c])
        assert got == pytest.approx(expected[c])  # one polygon per region, exact pixel areas
        assert set(names[cls == c]) == {NAMES[c]}
    geoms = shapely.from_wkb(wkb)
    assert np.allclose(shapely.area(geoms), area)


def test_min_area_and_simplify(tmp_path):
    data = blocks_scene()
    result, _ = predict(tmp_path, data)
    classes = result.files["classes"]
    full = vectorize_classes(classes, tmp_path / "all.gpkg", NAMES, 255)
    small = 9 * 0.0625
    kept = vectorize_classes(classes, tmp_path / "big.gpkg", NAMES, 255, min_area=small + 1e-6)
    assert kept.dropped >= 1 and kept.polygons + kept.dropped == full.polygons
    _, _, _, (_, _, area) = pyogrio.raw.read(tmp_path / "big.gpkg")
    assert area.min() > small
    simple = vectorize_classes(classes, tmp_path / "s.gpkg", NAMES, 255, simplify=2.0)
    _, _, wkb, _ = pyogrio.raw.read(tmp_path / "s.gpkg")
    _, _, wkb_full, _ = pyogrio.raw.read(tmp_path / "all.gpkg")
    geoms, geoms_full = shapely.from_wkb(wkb), shapely.from_wkb(wkb_full)
    assert simple.polygons == full.polygons and shapely.is_valid(geoms).all()
    assert shapely.get_num_coordinates(geoms).sum() <= shapely.get_num_coordinates(geoms_full).sum()


def ellipsoid_cell_area(lat_deg: float, dlon_deg: float, dlat_deg: float) -> float:
    """Area of a small lon/lat cell on the WGS84 ellipsoid: M(phi) N(phi) cos(phi) dlambda dphi."""
    a, f = 6378137.0, 1 / 298.257223563
    e2 = f * (2 - f)
    phi = math.radians(lat_deg)
    w = 1 - e2 * math.sin(phi) ** 2
    m, n = a * (1 - e2) / w**1.5, a / math.sqrt(w)
    return m * n * math.cos(phi) * math.radians(dlon_deg) * math.radians(dlat_deg)


def test_geographic_crs_areas_are_square_metres_on_the_ellipsoid(tmp_path):
    data = blocks_scene(120, 100)
    d = 1e-5  # degrees per pixel
    transform = Affine(d, 0, 10.0, 0, -d, 45.0)
    result, _ = predict(tmp_path, data, crs="EPSG:4326", transform=transform, vector="gpkg")
    _, _, _, (cls, _, area) = pyogrio.raw.read(result.files["vector"])
    labels = expected_classes(data[0])
    for c in range(3):
        rows = np.nonzero(labels == c)[0]
        lat = 45.0 - (rows + 0.5) * d
        expected = sum(ellipsoid_cell_area(la, d, d) for la in lat)
        assert area[cls == c].sum() == pytest.approx(expected, rel=1e-4)


def test_no_crs_gives_pixel_polygons_without_area(tmp_path):
    data = blocks_scene(100, 90)
    with pytest.warns(UserWarning, match="no CRS: polygons are in pixel coordinates"):
        result, _ = predict(tmp_path, data, crs=None, transform=None, vector="gpkg")
    _, _, _, (_, _, area) = pyogrio.raw.read(result.files["vector"])
    assert np.isnan(area).all()  # written as NULL
    with pytest.raises(PredictOptionError, match="has no CRS, so min_area"):
        vectorize_classes(result.files["classes"], tmp_path / "x.gpkg", NAMES, 255, min_area=1)


def test_missing_vector_library_names_the_install_command(tmp_path, monkeypatch):
    result, _ = predict(tmp_path, blocks_scene(64, 64))
    monkeypatch.setitem(sys.modules, "pyogrio", None)  # import fails
    with pytest.raises(MissingDependencyError, match=r"pip install -e '\.\[vector\]'"):
        vectorize_classes(result.files["classes"], tmp_path / "x.gpkg", NAMES, 255)


def test_quicklook_shows_image_and_palette_side_by_side(tmp_path):
    data = blocks_scene(300, 410)
    result, _ = predict(tmp_path, data, quicklook=True, quicklook_size=100)
    png = imread(result.files["quicklook"])
    h, w = 73, 100  # 300 x 410 shrunk by 4.1, rounded
    assert png.shape[:2] == (h, 2 * w + 8)
    right = (png[:, w + 8 :, :3] * 255).round().astype(int)
    with rasterio.open(result.files["classes"]) as c:
        small = c.read(1, out_shape=(h, w))
    for cls in range(3):
        assert (right[small == cls] == PALETTE[cls]).all()
    assert torch.tensor(png[:, :w, :3]).std() > 0  # the stretched image is not blank
