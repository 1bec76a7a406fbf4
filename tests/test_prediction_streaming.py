"""Streamed sliding-window prediction in column blocks: equal to the whole-scene version, memory
independent of the scene, no-data windows skipped, nodata found by the data sets' rules."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from prediction_fakes import ContextNet, ThresholdModel, expected_classes, write_raster

from glcnet.data.errors import NodataError
from glcnet.data.nodata import nodata_rule, parse_setting
from glcnet.inference import sliding_window_predict, window_starts
from glcnet.prediction.streaming import (
    ScanStats,
    WindowReader,
    buffer_rows,
    column_blocks,
    stream_predict,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reader_of(ds, nodata="auto", bands=None):
    """The prediction's window reader of an open file (the predict setting ``image_nodata``)."""
    bands = tuple(bands or range(1, ds.count + 1))
    div = [255.0 if ds.dtypes[b - 1] == "uint8" else 1.0 for b in bands]
    rule = nodata_rule(ds, bands, parse_setting(nodata, "image_nodata"), "image_nodata")
    return WindowReader(ds, bands, div, rule)


def scan(path, model, k, tile, stride, batch, tta=False, blend="gaussian", nodata="auto", bw=None):
    """Run the streamed predictor over a file; return the blocks and the stats."""
    stats = ScanStats()
    with rasterio.open(path) as ds:
        blocks = list(
            stream_predict(
                model, reader_of(ds, nodata), k, tile, stride, batch, tta, blend, stats=stats,
                block_width=bw,
            )
        )  # fmt: skip
    return blocks, stats


def assemble(blocks, k, height, width):
    """The scene's probabilities, valid pixels and classes from the blocks; each pixel once."""
    probs = torch.full((k, height, width), float("nan"))
    valid = np.zeros((height, width), bool)
    labels = np.full((height, width), 254, np.uint8)
    seen = np.zeros((height, width), int)
    for b in blocks:
        n, w = b.valid.shape
        probs[:, b.row : b.row + n, b.col : b.col + w] = b.probabilities
        valid[b.row : b.row + n, b.col : b.col + w] = b.valid
        labels[b.row : b.row + n, b.col : b.col + w] = b.class_indices(255)
        seen[b.row : b.row + n, b.col : b.col + w] += 1
    assert (seen == 1).all()
    return probs, valid, labels


@pytest.mark.parametrize(
    ("height", "width", "batch", "tta", "blend", "bw"),
    [
        (150, 230, 5, True, "gaussian", None),  # not multiples of the tile; batches span rows
        (97, 61, 16, False, "mean", None),  # a batch holds more than a window row
        (20, 45, 3, True, "gaussian", None),  # smaller than a tile along one axis (padding)
        (150, 230, 5, True, "gaussian", 64),  # four column blocks, the last one 38 px wide
        (230, 150, 7, False, "gaussian", 48),  # blocks of 1.5 tiles: straddlers on both sides
        (40, 100, 3, False, "mean", 32),  # blocks of one tile, a scene of 40 rows
    ],
)
def test_streamed_probabilities_equal_whole_scene_prediction(
    tmp_path, height, width, batch, tta, blend, bw
):
    rng = np.random.default_rng(0)
    path = write_raster(tmp_path / "s.tif", rng.integers(0, 256, (3, height, width), np.uint8))
    model = ContextNet()
    whole = sliding_window_predict(
        model, str(path), 3, tile_size=32, overlap=0.5, batch_size=batch, tta_flip=tta, blend=blend
    )
    blocks, stats = scan(path, model, 3, 32, 16, batch, tta, blend, bw=bw)
    probs, valid, labels = assemble(blocks, 3, height, width)
    assert torch.equal(probs, whole)  # bitwise: same windows and summation order per pixel
    assert np.array_equal(labels, whole.argmax(0).numpy().astype(np.uint8))
    assert valid.all()
    assert stats.run == stats.visits and stats.skipped == 0
    cols = window_starts(width, 32, 16)
    assert stats.windows == len(window_starts(height, 32, 16)) * len(cols)
    assert stats.column_blocks == (1 if bw is None else -(-width // bw))
    if stats.column_blocks > 1:  # windows across a block border were computed for both blocks
        assert stats.visits > stats.windows
        for b in blocks:
            assert b.col % bw == 0 and b.valid.shape[1] == min(bw, width - b.col)


def test_column_blocks_list_every_window_that_overlaps_them():
    blocks = column_blocks(230, 32, 16, 64)
    assert [(b.x0, b.x1) for b in blocks] == [(0, 64), (64, 128), (128, 192), (192, 230)]
    starts = window_starts(230, 32, 16)  # 0, 16, ..., 192, 198
    for b in blocks:
        assert b.window_cols == tuple(c for c in starts if c < b.x1 and c + 32 > b.x0)
    assert blocks[1].window_cols == (48, 64, 80, 96, 112)  # 48 and 112 straddle the borders
    assert column_blocks(230, 32, 16, None) == column_blocks(230, 32, 16, 4096)
    assert len(column_blocks(230, 32, 16, None)) == 1


def test_buffer_depends_on_neither_width_nor_height(tmp_path):
    """The probability buffer is one block wide and about one tile high, whatever the scene.

    Widths 600 and 1240 both end in a 24 px block (1240 = 600 + 10 x 64), so their blocks have
    the same shapes; the scan of a scene 2 x wider or 6 x taller holds the same buffer.
    """
    shapes = {}
    for h, w in [(100, 600), (600, 600), (100, 1240), (600, 1240)]:
        rng = np.random.default_rng(1)
        path = write_raster(tmp_path / f"{h}x{w}.tif", rng.integers(0, 256, (3, h, w), np.uint8))
        blocks, stats = scan(path, ThresholdModel(), 3, 32, 16, batch=4, bw=64)
        shapes[h, w] = (stats.buffer_rows, stats.buffer_cols)
        assert max(b.probabilities.shape[1] for b in blocks) <= stats.buffer_rows
        assert max(b.probabilities.shape[2] for b in blocks) == 64
        assert sum(b.probabilities[0].numel() for b in blocks) == h * w
    assert len(set(shapes.values())) == 1
    rows, cols = shapes[600, 1240]
    # a middle block: 5 windows per row (4 of its own + 1 across a border), 48 .. 144; the last
    # block (24 px) has 2 windows per row, so a batch of 4 spans 2 window rows: 32 + 2 x 16
    assert cols == 64 + 2 * 16 + 8 and rows == 32 + 2 * 16 == buffer_rows(600, 2, 32, 16, 4)


def test_all_nodata_windows_are_skipped_and_written_invalid(tmp_path):
    h, w = 96, 128
    data = np.full((3, h, w), 200, np.uint8)
    data[:, :48, :] = 0  # rows 0..47 hold no data
    data[:, 60:70, 100:110] = 0  # a small hole inside valid windows
    path = write_raster(tmp_path / "nd.tif", data, nodata=0)
    model = ThresholdModel()
    blocks, stats = scan(path, model, 3, 32, 16, batch=4)
    # window rows start at 0, 16, 32, 48, 64; rows 0 and 16 cover only no data (2 x 7 windows)
    assert stats.windows == 5 * 7
    assert stats.skipped == 2 * 7
    assert stats.run == 3 * 7 and model.batches == stats.model_batches == 6  # ceil(21 / 4)
    assert model.windows_seen == 6 * 4  # each call gets exactly batch_size windows
    _, _, labels = assemble(blocks, 3, h, w)
    valid = (data != 0).any(axis=0)
    assert (labels[~valid] == 255).all()
    assert np.array_equal(labels[valid], expected_classes(data[0])[valid].astype(np.uint8))


def test_model_input_has_nodata_pixels_zeroed(tmp_path):
    data = np.full((1, 32, 32), 0.5, np.float32)
    data[0, :4, :4] = -9999.0
    data[0, 10, 10] = np.nan
    path = write_raster(tmp_path / "f.tif", data, nodata=-9999.0)
    seen = []

    def model(x):
        seen.append(x.clone())
        return torch.zeros(x.shape[0], 2, *x.shape[-2:])

    with rasterio.open(path) as ds:
        blocks = list(stream_predict(model, reader_of(ds), 2, 32, 32, batch_size=1))
    x = seen[0][0, 0]
    assert x[:4, :4].eq(0).all() and x[10, 10] == 0 and torch.isfinite(x).all()
    assert x[20, 20] == 0.5
    assert not blocks[0].valid[:4, :4].any() and not blocks[0].valid[10, 10]


def test_long_nodata_stretch_keeps_the_buffer_bounded(tmp_path):
    """Skipped windows between two valid ones must not make the buffer grow."""
    h, w = 400, 200  # 12 windows per row, batches of 8: capacity 32 + 16 rows
    data = np.zeros((3, h, w), np.uint8)
    data[:, :20] = 100
    data[:, -20:] = 230
    path = write_raster(tmp_path / "gap.tif", data, nodata=0)
    model = ThresholdModel()
    blocks, stats = scan(path, model, 3, 32, 16, batch=8)
    _, _, labels = assemble(blocks, 3, h, w)
    assert (labels[:20] == 1).all() and (labels[-20:] == 2).all() and (labels[40:-40] == 255).all()
    assert stats.buffer_rows == 32 + 16
    assert max(b.probabilities.shape[1] for b in blocks) <= stats.buffer_rows
    assert stats.run == 4 * 12  # two window rows at each end
    assert model.windows_seen == stats.model_batches * 8 == 6 * 8


# --- which pixels hold data: the data sets' rules (glcnet.data.nodata), with predict's setting ---


def valid_of(path, nodata="auto", bands=None):
    """Validity of the top-left 6 x 8 window as the prediction reads it (None: all valid)."""
    with rasterio.open(path) as ds:
        return reader_of(ds, nodata, bands).read(0, 0, 6, 8)[1]


def tag_alpha(path):
    from rasterio.enums import ColorInterp

    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]


def test_nodata_value_mask_and_setting_follow_the_data_rules(tmp_path):
    data = np.full((3, 6, 8), 9, np.uint8)
    data[:, 0, 0] = 0  # every band at the nodata value: no data
    data[0, 1, 1] = 0  # one band only: data
    tagged = write_raster(tmp_path / "a.tif", data, nodata=0)
    valid = valid_of(tagged)
    assert not valid[0, 0] and valid[1, 1] and valid.sum() == 47
    assert valid_of(tagged, nodata="none") is None
    valid = valid_of(tagged, nodata=9)  # a number: every band equal to it
    assert valid[0, 0] and valid[1, 1] and valid.sum() == 2
    masked = write_raster(tmp_path / "m.tif", np.full((3, 6, 8), 9, np.uint8))
    mask = np.ones((6, 8), bool)
    mask[2:4, 3:6] = False
    with rasterio.open(masked, "r+") as ds:
        ds.write_mask(mask)
    assert np.array_equal(valid_of(masked), mask)


def test_alpha_band_is_a_mask_only_when_not_read_and_only_with_0_and_255(tmp_path):
    data = np.full((4, 6, 8), 9, np.uint8)
    data[3] = 255
    data[3, :, :2] = 0
    rgba = write_raster(tmp_path / "rgba.tif", data)
    tag_alpha(rgba)
    valid = valid_of(rgba, bands=[1, 2, 3])
    assert not valid[:, :2].any() and valid[:, 2:].all()
    assert valid_of(rgba, bands=[1, 2, 3, 4]) is None  # read as data (an IR band tagged alpha)
    data[3, 0, 5] = 17  # not transparency: refused, naming predict's setting
    ir = write_raster(tmp_path / "ir.tif", data)
    tag_alpha(ir)
    with pytest.raises(NodataError, match=r"band 4 is tagged alpha but holds .* image_nodata=none"):
        valid_of(ir, bands=[1, 2, 3])


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_nodata_declared_on_some_bands_only_is_refused(tmp_path):
    tif = write_raster(tmp_path / "mixed.tif", np.full((2, 6, 8), 9, np.uint8))
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}">{nodata}<SimpleSource>'
        f"<SourceFilename>{tif}</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource>"
        "</VRTRasterBand>"
        for b, nodata in ((1, "<NoDataValue>0</NoDataValue>"), (2, ""))
    )
    path = tmp_path / "mixed.vrt"  # GeoTIFF keeps one nodata value for all bands; a VRT does not
    path.write_text(f'<VRTDataset rasterXSize="8" rasterYSize="6">{bands}</VRTDataset>')
    with pytest.raises(NodataError, match=r"bands \[2\] have no nodata value.*set image_nodata"):
        valid_of(path)


def test_non_finite_float_pixels_are_no_data(tmp_path):
    data = np.ones((2, 6, 8), np.float32)
    data[1, 0, 0] = np.nan
    data[0, 1, 1] = np.inf
    valid = valid_of(write_raster(tmp_path / "f.tif", data))
    assert not valid[0, 0] and not valid[1, 1] and valid.sum() == 46
