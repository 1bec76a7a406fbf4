"""Streamed sliding-window prediction: equal to the whole-scene version, bounded, skips no data."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from prediction_fakes import ContextNet, ThresholdModel, expected_classes, write_raster

from glcnet.inference import sliding_window_predict
from glcnet.prediction.streaming import ScanStats, WindowReader, buffer_rows, stream_predict
from glcnet.prediction.validity import ValidityReader


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors: one thread is faster, and much faster on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def scan(path, model, k, tile, stride, batch, tta=False, blend="gaussian", nodata=None):
    """Run the streamed predictor over a file; return the stacked blocks and the stats."""
    stats = ScanStats()
    with rasterio.open(path) as ds:
        bands = list(range(1, ds.count + 1))
        div = [255.0] * ds.count if ds.dtypes[0] == "uint8" else [1.0] * ds.count
        reader = WindowReader(ds, bands, div, ValidityReader(ds, bands, nodata))
        blocks = list(
            stream_predict(model, reader, k, tile, stride, batch, tta, blend, stats=stats)
        )
    return blocks, stats


@pytest.mark.parametrize(
    ("height", "width", "batch", "tta", "blend"),
    [
        (150, 230, 5, True, "gaussian"),  # not multiples of the tile; batches span window rows
        (97, 61, 16, False, "mean"),  # a batch holds more than a window row
        (20, 45, 3, True, "gaussian"),  # smaller than a tile along one axis (reflection padding)
    ],
)
def test_streamed_probabilities_equal_whole_scene_prediction(
    tmp_path, height, width, batch, tta, blend
):
    rng = np.random.default_rng(0)
    path = write_raster(tmp_path / "s.tif", rng.integers(0, 256, (3, height, width), np.uint8))
    model = ContextNet()
    whole = sliding_window_predict(
        model, str(path), 3, tile_size=32, overlap=0.5, batch_size=batch, tta_flip=tta, blend=blend
    )
    blocks, stats = scan(path, model, 3, 32, 16, batch, tta, blend)
    assert [b.row for b in blocks] == sorted(b.row for b in blocks)
    streamed = torch.cat([b.probabilities for b in blocks], dim=1)
    assert streamed.shape == whole.shape
    assert torch.equal(streamed, whole)  # bitwise: same windows, batches and summation order
    labels = np.concatenate([b.class_indices(255) for b in blocks])
    assert np.array_equal(labels, whole.argmax(0).numpy().astype(np.uint8))
    assert all(b.valid.all() for b in blocks)
    assert stats.run == stats.windows and stats.skipped == 0


def test_buffer_holds_about_one_window_row_not_the_scene(tmp_path):
    rng = np.random.default_rng(1)
    path = write_raster(tmp_path / "tall.tif", rng.integers(0, 256, (3, 600, 70), np.uint8))
    blocks, stats = scan(path, ContextNet(), 3, 32, 16, batch=4)
    # windows per row: 0, 16, 32, 38 -> 4; a batch of 4 spans at most 1 row change
    assert stats.buffer_rows == buffer_rows(600, 70, 32, 16, 4) == 32 + 16
    assert max(b.probabilities.shape[1] for b in blocks) <= stats.buffer_rows
    assert sum(b.probabilities.shape[1] for b in blocks) == 600


def test_all_nodata_windows_are_skipped_and_written_invalid(tmp_path):
    h, w = 96, 128
    data = np.full((3, h, w), 200, np.uint8)
    data[:, :48, :] = 0  # rows 0..47 hold no data
    data[:, 60:70, 100:110] = 0  # a small hole inside valid windows
    path = write_raster(tmp_path / "nd.tif", data, nodata=0)
    model = ThresholdModel()
    blocks, stats = scan(path, model, 3, 32, 16, batch=4)
    # window rows start at 0, 16, 32, 48, 64; rows 0 and 16 cover only no data (4 x 7 windows)
    assert stats.windows == 5 * 7
    assert stats.skipped == 2 * 7
    assert model.windows_seen == stats.run == 3 * 7
    labels = np.concatenate([b.class_indices(255) for b in blocks])
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
        reader = WindowReader(ds, [1], [1.0], ValidityReader(ds, [1]))
        blocks = list(stream_predict(model, reader, 2, 32, 32, batch_size=1))
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
    labels = np.concatenate([b.class_indices(255) for b in blocks])
    assert labels.shape == (h, w)
    assert (labels[:20] == 1).all() and (labels[-20:] == 2).all() and (labels[40:-40] == 255).all()
    assert stats.buffer_rows == 32 + 16
    assert max(b.probabilities.shape[1] for b in blocks) <= stats.buffer_rows
    assert model.windows_seen == stats.run == 4 * 12  # two window rows at each end
