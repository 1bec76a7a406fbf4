"""Peak memory of streamed prediction (glcnet/bench/predict_memory.py, `make bench` section (c))."""

from __future__ import annotations

import math

import pytest

from glcnet.bench.predict_memory import bench_predict_memory


def test_memory_bench_reports_consistent_figures(tmp_path):
    out = bench_predict_memory(size=700, classes=3, tile=128, workdir=tmp_path)
    assert out["windows"] == 10 * 10  # starts 0, 64, ..., 512 and 572 per axis
    assert out["buffer_rows"] == 128 + 64
    assert out["scene_MB"] == pytest.approx(700 * 700 * 4 / 2**20)
    assert out["whole_scene_accumulator_MB"] == pytest.approx(4 * 4 * 700 * 700 / 2**20)
    assert out["peak_rss_MB"] >= out["rss_before_MB"] > 0
    assert math.isclose(out["added_vs_scene"], out["added_MB"] / out["scene_MB"])


@pytest.mark.slow
def test_a_12000_px_scene_needs_memory_bounded_by_its_width_not_its_size(tmp_path):
    """About 4 min on one core (the README's figures, `make bench` section (c))."""
    square = bench_predict_memory(size=12000, workdir=tmp_path)
    quarter = bench_predict_memory(size=12000, height=3000, workdir=tmp_path)
    assert square["added_MB"] < square["scene_MB"]
    assert square["added_MB"] < 0.1 * square["whole_scene_accumulator_MB"]
    # four times the rows, about the same memory: it does not grow with the scene's height
    assert square["added_MB"] < 1.25 * quarter["added_MB"]
