"""The benchmark functions run on tiny sizes and return the ratios the README quotes."""

from __future__ import annotations

import math

from glcnet.bench.method_losses import bench_method_losses
from glcnet.bench.pretrain_step import bench_pretrain_step


def test_method_loss_bench_covers_every_method():
    rows = bench_method_losses(sizes=(32,), num_samples=128, queue_size=50, repeats=1)
    assert {r["method"] for r in rows} == {
        "simclr",
        "supcon",
        "npid_softmax",
        "npid_nce",
        "moco",
        "moco_supcon",
        "swav",
    }
    assert all(r["ms"] > 0 and math.isfinite(r["loss"]) for r in rows)


def test_pretrain_step_bench_reports_ratios():
    out = bench_pretrain_step(batch_size=2, tile_size=64, view_size=64, repeats=1, num_workers=0)
    for key in ("ssl_overhead", "ssl_overhead_two_passes", "loader_vs_model"):
        assert math.isfinite(out[key]) and out[key] > 0
    assert math.isclose(out["ssl_overhead"], out["glcnet_step_s"] / out["two_plain_passes_s"])


def test_diagnostics_bench_reports_its_share_of_training_time():
    from glcnet.bench.diagnostics import bench_diagnostics

    out = bench_diagnostics(
        batch_size=2, view_size=64, tile_size=64, probe_tiles=2, every=50, repeats=1
    )
    assert out["diagnostics_s"] == out["health_s"] + out["probe_s"] > 0
    assert math.isclose(out["overhead"], out["diagnostics_s"] / (50 * out["step_s"]))
