"""Which input pixels hold data: each rule of glcnet.prediction.validity on a file that uses it."""

from __future__ import annotations

import logging

import numpy as np
import rasterio
from prediction_fakes import write_raster
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from glcnet.prediction.validity import ValidityReader

WIN = Window(0, 0, 8, 6)


def valid_of(path, bands, nodata=None):
    with rasterio.open(path) as ds:
        reader = ValidityReader(ds, bands, nodata)
        pixels = ds.read(bands, window=WIN)
        return reader.rule, reader.valid(WIN, pixels if reader.needs_pixels else None)


def test_nodata_value_marks_pixels_where_every_band_is_nodata(tmp_path):
    data = np.full((3, 6, 8), 9, np.uint8)
    data[:, 0, 0] = 0  # all bands nodata
    data[0, 1, 1] = 0  # one band only: still data
    rule, valid = valid_of(write_raster(tmp_path / "a.tif", data, nodata=0), [1, 2, 3])
    assert rule == "nodata"
    assert not valid[0, 0] and valid[1, 1] and valid.sum() == 6 * 8 - 1


def test_internal_mask_is_read(tmp_path):
    path = write_raster(tmp_path / "m.tif", np.full((3, 6, 8), 9, np.uint8))
    mask = np.ones((6, 8), bool)
    mask[2:4, 3:6] = False
    with rasterio.open(path, "r+") as ds:
        ds.write_mask(mask)
    rule, valid = valid_of(path, [1, 2, 3])
    assert rule == "mask" and np.array_equal(valid, mask)


def tag_alpha(path):
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]


def test_alpha_band_not_read_is_the_mask(tmp_path):
    data = np.full((4, 6, 8), 9, np.uint8)
    data[3] = 255
    data[3, :, :2] = 0
    path = write_raster(tmp_path / "rgba.tif", data)
    tag_alpha(path)
    rule, valid = valid_of(path, [1, 2, 3])
    assert rule == "mask" and valid[:, :2].sum() == 0 and valid[:, 2:].all()


def test_alpha_tagged_band_read_as_ir_is_data_not_a_mask(tmp_path, caplog):
    """ISPRS RGBIR files may tag IR as alpha: an IR value of 0 must not become no data."""
    data = np.full((4, 6, 8), 9, np.uint8)
    data[3, :, :2] = 0  # dark IR
    path = write_raster(tmp_path / "rgbir.tif", data)
    tag_alpha(path)
    with caplog.at_level(logging.WARNING):
        rule, valid = valid_of(path, [1, 2, 3, 4])
    assert rule == "none" and valid is None
    assert "tagged alpha but the model reads it as data" in caplog.text


def test_override_value_and_no_declaration(tmp_path):
    data = np.full((3, 6, 8), 9, np.uint8)
    data[:, 5, 7] = 255
    path = write_raster(tmp_path / "plain.tif", data)
    assert valid_of(path, [1, 2, 3]) == ("none", None)
    rule, valid = valid_of(path, [1, 2, 3], nodata=255)
    assert rule == "override" and not valid[5, 7] and valid.sum() == 47


def test_non_finite_float_pixels_are_no_data(tmp_path):
    data = np.ones((2, 6, 8), np.float32)
    data[1, 0, 0] = np.nan
    data[0, 1, 1] = np.inf
    rule, valid = valid_of(write_raster(tmp_path / "f.tif", data), [1, 2])
    assert rule == "none" and not valid[0, 0] and not valid[1, 1] and valid.sum() == 46
