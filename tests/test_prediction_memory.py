"""Peak memory of streamed prediction (glcnet/bench/predict_memory.py, `make bench` section (d))."""

from __future__ import annotations

import math

import pytest

from glcnet.bench.predict_memory import bench_predict_memory


def test_memory_bench_reports_consistent_figures(tmp_path):
    out = bench_predict_memory(size=700, classes=3, tile=128, workdir=tmp_path, block_width=256)
    assert out["windows"] == 10 * 10  # starts 0, 64, ..., 512 and 572 per axis
    # blocks [0, 256) [256, 512) [512, 700) overlap the windows starting at 0..192, 192..448 and
    # 448..572: 4 + 5 + 3 per window row, 2 of them computed twice
    assert out["column_blocks"] == 3 and out["window_visits"] == 10 * (4 + 5 + 3)
    assert out["extra_windows_pct"] == pytest.approx(20.0)
    # the widest block spans 192..576; the last one, 3 windows per row, holds a batch of 8 over
    # 3 window-row changes: 128 + 3 x 64 rows
    assert out["buffer_cols"] == 576 - 192 and out["buffer_rows"] == 128 + 3 * 64
    assert out["scene_MB"] == pytest.approx(700 * 700 * 4 / 2**20)
    assert out["whole_scene_accumulator_MB"] == pytest.approx(4 * 4 * 700 * 700 / 2**20)
    assert out["peak_rss_MB"] >= out["rss_before_MB"] > 0
    assert math.isclose(out["added_vs_scene"], out["added_MB"] / out["scene_MB"])


@pytest.mark.slow
def test_memory_depends_on_neither_the_width_nor_the_height(tmp_path):
    """About 3 min on one core (the README's figures, `make bench` section (d))."""
    short = bench_predict_memory(size=12000, height=3000, workdir=tmp_path)
    square = bench_predict_memory(size=12000, workdir=tmp_path)
    wide = bench_predict_memory(size=24000, height=3000, workdir=tmp_path)
    assert square["added_MB"] < 0.6 * square["scene_MB"]
    assert square["added_MB"] < 0.1 * square["whole_scene_accumulator_MB"]
    assert square["extra_windows_pct"] < 3
    # four times the rows, twice the columns: about the same memory (one row of windows across
    # the width, as before the column blocks, would add 128 MB per 12,000 columns)
    assert square["added_MB"] < 1.25 * short["added_MB"]
    assert wide["added_MB"] < 1.25 * short["added_MB"]
