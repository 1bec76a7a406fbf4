"""Protocol statistics against hand computations: mean ± sample std, paired Δ, t-interval."""

from __future__ import annotations

import math

import pytest
from scipy.stats import t as student_t

from glcnet.protocol_results import format_table, summarize_rows
from glcnet.stats import paired_difference, summarize


def test_summary_is_mean_and_sample_std():
    s = summarize([0.50, 0.54, 0.58])
    assert s.mean == pytest.approx(0.54)
    # ddof=1: sqrt((0.04^2 + 0 + 0.04^2) / 2) = 0.04
    assert s.std == pytest.approx(0.04)
    assert s.n == 3
    one = summarize([0.7])
    assert one.mean == 0.7 and math.isnan(one.std)
    with pytest.raises(ValueError, match="NaN"):
        summarize([0.5, float("nan")])


def test_paired_difference_and_t_interval_by_hand():
    a = [0.50, 0.55, 0.53]
    b = [0.48, 0.50, 0.52]
    # differences 0.02, 0.05, 0.01: mean 0.08/3, sample variance
    mean = 0.08 / 3
    var = ((0.02 - mean) ** 2 + (0.05 - mean) ** 2 + (0.01 - mean) ** 2) / 2
    half = student_t.ppf(0.975, 2) * math.sqrt(var) / math.sqrt(3)
    assert student_t.ppf(0.975, 2) == pytest.approx(4.302652729911275)
    d = paired_difference(a, b)
    assert d.mean == pytest.approx(mean)
    assert d.low == pytest.approx(mean - half) and d.high == pytest.approx(mean + half)
    assert d.n == 3 and d.confidence == 0.95
    assert not d.excludes_zero  # [-0.024, +0.078]
    clear = paired_difference([0.6, 0.61, 0.62], [0.5, 0.5, 0.5])
    assert clear.excludes_zero and clear.low > 0
    single = paired_difference([0.6], [0.5])
    assert single.mean == pytest.approx(0.1) and math.isnan(single.low)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([0.1, 0.2], [0.1])


def _row(init, transfer, ev, seed, miou, fraction=0.01):
    return {
        "init": init,
        "transfer": transfer,
        "eval": ev,
        "label_fraction": fraction,
        "labeled_tiles": 3,
        "seed": seed,
        "mIoU": miou,
        "mF1": miou + 0.1,
        "OA": 0.8,
        "Kappa": 0.7,
    }


def test_summary_rows_pair_by_seed_and_by_eval():
    rows = [
        _row("random", None, "finetune", 0, 0.50),
        _row("random", None, "finetune", 1, 0.40),
        _row("random", None, "finetune", 2, 0.45),
        _row("random", "encoder", "linear", 0, 0.20),
        _row("random", "encoder", "linear", 1, 0.22),
        # pretrained rows listed in another seed order: pairing goes by seed, not by position
        _row("glcnet", "encoder", "finetune", 2, 0.47),
        _row("glcnet", "encoder", "finetune", 0, 0.53),
        _row("glcnet", "encoder", "finetune", 1, 0.41),
        _row("glcnet", "encoder", "linear", 0, 0.35),
        _row("glcnet", "encoder", "linear", 1, 0.38),
        _row("glcnet", "encoder+decoder", "linear", 0, 0.30),  # no random (encoder+decoder) row
    ]
    summary = {(e["init"], e["transfer"], e["eval"]): e for e in summarize_rows(rows)}
    ft = summary[("glcnet", "encoder", "finetune")]
    assert ft["seeds"] == [0, 1, 2] and ft["n"] == 3
    assert ft["mIoU_mean"] == pytest.approx((0.53 + 0.41 + 0.47) / 3)
    diffs = [0.53 - 0.50, 0.41 - 0.40, 0.47 - 0.45]  # seeds 0, 1, 2
    m = sum(diffs) / 3
    s = math.sqrt(sum((x - m) ** 2 for x in diffs) / 2)
    half = student_t.ppf(0.975, 2) * s / math.sqrt(3)
    delta = ft["delta"]["mIoU"]
    assert delta["mean"] == pytest.approx(m) and delta["n"] == 3
    assert delta["low"] == pytest.approx(m - half) and delta["high"] == pytest.approx(m + half)
    lin = summary[("glcnet", "encoder", "linear")]["delta"]["mIoU"]  # against random *linear*
    assert lin["mean"] == pytest.approx(((0.35 - 0.20) + (0.38 - 0.22)) / 2)
    assert lin["high"] - lin["low"] == pytest.approx(
        2
        * student_t.ppf(0.975, 1)
        * math.sqrt(((0.15 - 0.155) ** 2 + (0.16 - 0.155) ** 2) / 1)
        / math.sqrt(2)
    )
    assert "delta" not in summary[("glcnet", "encoder+decoder", "linear")]
    assert "delta" not in summary[("random", None, "finetune")]
    rnd = summary[("random", None, "finetune")]
    assert rnd["mIoU_std"] == pytest.approx(0.05)  # 0.50, 0.40, 0.45: sample std 0.05

    table = format_table(rows, {"init": ["random", "glcnet"], "eval": ["finetune", "linear"]})
    lines = table.splitlines()
    assert lines[0].startswith("| init | transfer | eval | labels | tiles | n | mIoU")
    assert "| random | – | finetune | 1% | 3 | 3 | 45.0 ± 5.0 |" in table
    want = f"{100 * m:+.1f} [{100 * (m - half):+.1f}, {100 * (m + half):+.1f}]"
    assert any(
        line.startswith("| glcnet | encoder | finetune |") and want in line for line in lines
    )
    # the single-seed row shows its mean without a spread
    assert "| glcnet | encoder+decoder | linear | 1% | 3 | 1 | 30.0 |" in table
