"""Image nodata (value, alpha band not read, internal mask): ignored in masks, empty tiles left out."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from glcnet.data.errors import EmptySplitError, NodataError
from glcnet.data.folder import FolderDataset

H, W, T = 32, 48, 16  # 2 x 3 tiles of 16 px


def write(path: Path, data: np.ndarray, mask: np.ndarray | None = None, **profile) -> Path:
    """Write (C, H, W) data; ``mask`` (H, W) bool becomes an internal mask band."""
    path.parent.mkdir(parents=True, exist_ok=True)
    driver = "PNG" if path.suffix == ".png" else "GTiff"
    with warnings.catch_warnings(), rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path, "w", driver=driver, width=data.shape[2], height=data.shape[1],
            count=data.shape[0], dtype=data.dtype.name, **profile,
        ) as dst:  # fmt: skip
            dst.write(data)
            if mask is not None:
                dst.write_mask(mask.astype(np.uint8) * 255)
    return path


def classes() -> np.ndarray:
    """Class of each pixel, (H, W): 0/1/2 in vertical stripes."""
    return np.broadcast_to((np.arange(W) // 5) % 3, (H, W)).astype(np.uint8)


def image(count: int = 3) -> np.ndarray:
    """Image with no zero pixel: (count, H, W) uint8 in 10..209."""
    r, c = np.mgrid[0:H, 0:W]
    return np.stack([10 + (r * 7 + c * 3 + 40 * b) % 200 for b in range(count)]).astype(np.uint8)


def nodata_area() -> np.ndarray:
    """(H, W) bool: the whole top-left tile and a 4x4 square inside the bottom-right tile."""
    area = np.zeros((H, W), dtype=bool)
    area[:T, :T] = True
    area[20:24, 40:44] = True
    return area


def make_root(root: Path, img: np.ndarray, name="a.tif", mask=None, **profile) -> Path:
    write(root / "images" / name, img, mask=mask, **profile)
    write(root / "masks" / name.replace(".png", ".tif"), classes()[None])
    return root


def expected_labels() -> np.ndarray:
    return np.where(nodata_area(), 255, classes()).astype(np.int64)


def check_dataset(ds: FolderDataset) -> None:
    """Tile (0, 0) is gone, nodata pixels are ignored in tiles and in whole-scene labels."""
    assert ds.nodata_tiles_dropped == 1
    assert [(r, c) for _, r, c in ds.tiles] == [(0, 16), (0, 32), (16, 0), (16, 16), (16, 32)]
    np.testing.assert_array_equal(ds.read_labels("a"), expected_labels())
    np.testing.assert_array_equal(ds.read_valid("a"), ~nodata_area())
    np.testing.assert_array_equal(
        ds.read_valid("a", Window(32, 16, 16, 16)), ~nodata_area()[16:, 32:]
    )
    for i in range(len(ds)):
        r, c, h, w = ds[i]["window"].tolist()
        np.testing.assert_array_equal(
            ds[i]["mask"].numpy(), expected_labels()[r : r + h, c : c + w]
        )


def dataset(root: Path, **kwargs) -> FolderDataset:
    return FolderDataset(root, split="all", tile_size=T, num_classes=3, **kwargs)


def test_gdal_nodata_value_needs_every_band(tmp_path, caplog):
    img = image()
    img[:, nodata_area()] = 0
    img[0, 30, 1] = 0  # one band at the nodata value is still data
    make_root(tmp_path, img, nodata=0)
    with caplog.at_level(logging.INFO, logger="glcnet.data.tiling"):
        ds = dataset(tmp_path)
    check_dataset(ds)
    assert ds.nodata_rule("a").describe() == "nodata value 0 in bands 1, 2, 3"
    assert "left out 1 of 6 tiles that are entirely nodata" in caplog.text
    assert "image nodata from nodata value 0 in bands 1, 2, 3" in caplog.text
    unlabeled = dataset(tmp_path, labeled=False)
    assert len(unlabeled) == 5 and unlabeled.nodata_tiles_dropped == 1
    everything = dataset(tmp_path, image_nodata="none")
    assert len(everything) == 6 and everything.read_valid("a") is None
    np.testing.assert_array_equal(everything.read_labels("a"), classes())


def test_alpha_band_not_read_marks_nodata(tmp_path):
    img = image(4)
    img[3] = 255
    img[3, nodata_area()] = 0
    make_root(tmp_path, img, name="a.png")  # RGBA PNG
    ds = dataset(tmp_path, bands=[1, 2, 3])
    assert ds.nodata_rule("a").kind == "alpha" and ds.nodata_rule("a").bands == (4,)
    check_dataset(ds)
    read = dataset(tmp_path, bands=[1, 2, 3, 4])  # the alpha band read as data says nothing
    assert read.nodata_rule("a") is None and len(read) == 6


def test_ir_band_tagged_alpha_is_data_not_nodata(tmp_path):
    img = image(4)  # a 4-band uint8 GeoTIFF: GDAL tags band 4 alpha, as in ISPRS RGBIR files
    path = make_root(tmp_path, img) / "images" / "a.tif"
    with warnings.catch_warnings(), rasterio.open(path) as src:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        assert src.colorinterp[3].name == "alpha"
    full = dataset(tmp_path, bands=[1, 2, 3, 4])
    assert full.nodata_rule("a") is None
    np.testing.assert_array_equal(full[0]["image"].numpy()[3], img[3, :T, :T] / np.float32(255))
    with pytest.raises(
        NodataError,
        match=rf"{path}: band 4 is tagged alpha but holds values other than 0 and 255 "
        r"\(e\.g\. \[.*\]\).*image_nodata=none",
    ):
        dataset(tmp_path, bands=[1, 2, 3])
    assert len(dataset(tmp_path, bands=[1, 2, 3], image_nodata="none")) == 6


def test_internal_mask_band(tmp_path):
    make_root(tmp_path, image(), mask=~nodata_area())
    ds = dataset(tmp_path)
    assert ds.nodata_rule("a").kind == "mask"
    check_dataset(ds)


def test_nodata_value_from_the_setting(tmp_path):
    img = image()
    img[:, nodata_area()] = 255  # white fill without a nodata tag (Massachusetts)
    make_root(tmp_path, img)
    assert len(dataset(tmp_path)) == 6  # no tag: every pixel is data
    check_dataset(dataset(tmp_path, image_nodata=255))
    check_dataset(dataset(tmp_path, image_nodata="255"))
    with pytest.raises(NodataError, match="image_nodata must be auto, none or a number"):
        dataset(tmp_path, image_nodata="white")


def test_a_split_of_nodata_only_is_an_error(tmp_path):
    img = np.zeros((3, H, W), dtype=np.uint8)
    make_root(tmp_path, img, nodata=0)
    with pytest.raises(EmptySplitError, match="every one of its 6 tiles is entirely nodata"):
        dataset(tmp_path)
