"""Tile grid, windowed reads and raster helpers."""

from __future__ import annotations

import os
import pickle
import re
import zipfile

import numpy as np
import pytest
import rasterio
from isprs_fakes import fake_image, write_tif
from rasterio.windows import Window

from glcnet.data.errors import CorruptRasterError, DataError, MissingDataError
from glcnet.data.raster import (
    FileSource,
    RasterCache,
    find_sources,
    index_sources,
    open_raster,
    raster_info,
    read_window,
    to_unit_float,
)
from glcnet.data.tiling import tile_grid, tile_offsets

# --- tile grid -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "tile", "stride", "expected"),
    [
        (40, 16, None, [0, 16, 24]),  # last tile shifted back to end at 40
        (56, 16, None, [0, 16, 32, 40]),
        (48, 16, None, [0, 16, 32]),  # exact fit: no extra tile
        (16, 16, None, [0]),
        (40, 16, 8, [0, 8, 16, 24]),
        (41, 16, 8, [0, 8, 16, 24, 25]),
        (50, 10, 20, [0, 20, 40]),  # stride > tile leaves gaps
        (55, 10, 20, [0, 20, 40, 45]),
        (6000, 256, None, [*range(0, 5632 + 1, 256), 5744]),  # 24 tiles = ceil(6000 / 256)
    ],
)
def test_tile_offsets_hand_computed(length, tile, stride, expected):
    assert tile_offsets(length, tile, stride) == expected


def _reference_offsets(length: int, tile: int, stride: int) -> list[int]:
    """Slow reference: walk from 0 by stride while the tile fits, then snap one tile to the end."""
    out, pos = [], 0
    while pos + tile <= length:
        out.append(pos)
        pos += stride
    if out[-1] != length - tile:
        out.append(length - tile)
    return out


@pytest.mark.parametrize("tile", [1, 3, 7, 16])
@pytest.mark.parametrize("stride", [1, 2, 5, 16, 23])
def test_tile_offsets_match_reference_and_cover(tile, stride):
    for length in range(tile, tile + 40):
        offsets = tile_offsets(length, tile, stride)
        assert offsets == _reference_offsets(length, tile, stride)
        assert offsets[0] == 0 and offsets[-1] == length - tile
        assert all(b > a for a, b in zip(offsets, offsets[1:]))
        if stride <= tile:  # no gaps: every pixel is covered
            covered = np.zeros(length, dtype=bool)
            for o in offsets:
                covered[o : o + tile] = True
            assert covered.all()


def test_tile_grid_is_row_major_product():
    grid = tile_grid(40, 56, 16)
    assert grid == [(r, c) for r in (0, 16, 24) for c in (0, 16, 32, 40)]
    assert tile_grid(40, 56, 16, 8) == [
        (r, c) for r in (0, 8, 16, 24) for c in (0, 8, 16, 24, 32, 40)
    ]


@pytest.mark.parametrize(("length", "tile", "stride"), [(10, 0, None), (10, 4, 0), (3, 4, None)])
def test_tile_offsets_rejects_bad_arguments(length, tile, stride):
    with pytest.raises(ValueError):
        tile_offsets(length, tile, stride)


# --- raster helpers ------------------------------------------------------------------------------


@pytest.fixture
def tif(tmp_path):
    data = fake_image("2_10", "RGBIR", 4)
    return str(write_tif(tmp_path / "a.tif", data)), data


def test_read_window_equals_crop_of_full_read(tif):
    path, data = tif
    with open_raster(path) as ds:
        full = ds.read()
        for row, col, h, w in [(0, 0, 16, 16), (24, 40, 16, 16), (3, 7, 10, 20)]:
            win = read_window(ds, (4, 1, 2), Window(col, row, w, h), path)
            np.testing.assert_array_equal(win, full[[3, 0, 1], row : row + h, col : col + w])
            np.testing.assert_array_equal(win, data[[3, 0, 1], row : row + h, col : col + w])


def test_raster_info(tif):
    path, _ = tif
    info = raster_info(path)
    assert (info.height, info.width, info.count, info.dtype) == (40, 56, 4, "uint8")


def test_to_unit_float_divides_by_dtype_max():
    np.testing.assert_allclose(to_unit_float(np.array([0, 51, 255], np.uint8)), [0, 0.2, 1])
    np.testing.assert_allclose(to_unit_float(np.array([0, 65535], np.uint16)), [0, 1])
    f = np.array([0.25, 2.0], np.float32)
    np.testing.assert_array_equal(to_unit_float(f), f)
    assert to_unit_float(np.array([7], np.uint8)).dtype == np.float32


def test_open_missing_and_corrupt_files_name_the_file(tmp_path, tif):
    missing = tmp_path / "nope.tif"
    with pytest.raises(MissingDataError, match=re.escape(str(missing))):
        open_raster(str(missing))
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"not a tiff" * 50)
    with pytest.raises(CorruptRasterError, match=re.escape(str(garbage))):
        raster_info(str(garbage))
    path, _ = tif
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(open(path, "rb").read()[:5000])
    with open_raster(str(truncated)) as ds:  # header intact: opens, fails on reading the data
        with pytest.raises(CorruptRasterError, match=re.escape(str(truncated))):
            read_window(ds, (1, 2, 3, 4), Window(0, 0, 56, 40), str(truncated))


def test_cache_reuses_handles_and_drops_them_on_pickle(tif):
    path, _ = tif
    cache = RasterCache(max_open=2)
    a = cache.get(path)
    assert cache.get(path) is a and len(cache) == 1
    clone = pickle.loads(pickle.dumps(cache))
    assert len(clone) == 0 and clone.max_open == 2
    assert clone.get(path) is not a
    cache.close()
    assert a.closed


def test_cache_evicts_least_recently_used(tmp_path):
    paths = [str(write_tif(tmp_path / f"{i}.tif", fake_image("2_10", "RGB", 3))) for i in range(3)]
    cache = RasterCache(max_open=2)
    first = cache.get(paths[0])
    cache.get(paths[1])
    cache.get(paths[0])  # paths[1] is now the least recently used
    cache.get(paths[2])
    assert len(cache) == 2 and not first.closed
    assert cache.get(paths[0]) is first


def test_cache_starts_empty_in_a_forked_child(tif):
    path, _ = tif
    cache = RasterCache()
    parent_handle = cache.get(path)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's handle
        ok = len(cache) == 0 and cache.get(path) is not parent_handle
        ok = ok and cache.get(path).read(1).shape == (40, 56)
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert len(cache) == 1 and not parent_handle.closed


def test_file_source_finds_files_at_any_depth_in_zip_and_folder(tmp_path):
    data = fake_image("2_10", "RGB", 3)
    folder = tmp_path / "prod"
    write_tif(folder / "deep" / "er" / "x_3_10.tif", data)
    write_tif(folder / "x_2_10.tif", data)
    write_tif(folder / "x_2_10_other.tif", data)  # does not match the whole name
    with zipfile.ZipFile(tmp_path / "prod.zip", "w") as zf:
        zf.write(folder / "x_2_10.tif", "inner/x_2_10.tif")
        zf.write(folder / "x_2_10.tif", "inner/x_4_1.tif")
    pattern = re.compile(r"x_(\d+)_(\d+)\.tif")
    src = FileSource(folder)
    assert src.index(pattern) == {
        (2, 10): str(folder.resolve() / "x_2_10.tif"),
        (3, 10): str(folder.resolve() / "deep/er/x_3_10.tif"),
    }
    zsrc = FileSource(tmp_path / "prod.zip")
    idx = zsrc.index(pattern)
    assert idx[(4, 1)] == f"/vsizip/{(tmp_path / 'prod.zip').resolve()}/inner/x_4_1.tif"
    with rasterio.open(idx[(2, 10)]) as ds:
        np.testing.assert_array_equal(ds.read(), data)
    assert zsrc.index(pattern, parent="elsewhere") == {}
    # folder first, the zip fills in what the folder lacks
    sources = find_sources(tmp_path, "prod")
    assert [s.is_zip for s in sources] == [False, True]
    merged = index_sources(sources, pattern)
    assert set(merged) == {(2, 10), (3, 10), (4, 1)}
    assert not merged[(2, 10)].startswith("/vsizip/")
    assert find_sources(tmp_path, "absent") == []


def test_file_source_rejects_a_broken_zip(tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"PK not really")
    with pytest.raises(DataError, match="broken.zip"):
        FileSource(bad)
