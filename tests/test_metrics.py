"""Confusion matrix and segmentation metrics: hand-computed examples, torchmetrics, distributed."""

from __future__ import annotations

import math
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from gloo import run_ranks
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCohenKappa,
    MulticlassF1Score,
    MulticlassJaccardIndex,
    MulticlassPrecision,
    MulticlassRecall,
)

from glcnet.metrics import (
    ConfusionMatrix,
    SegmentationMetrics,
    confusion_matrix,
    format_metrics_table,
    segmentation_metrics,
)

IGNORE = 255


def close(value: float, fraction: Fraction) -> bool:
    return math.isclose(value, float(fraction), rel_tol=1e-12, abs_tol=1e-15)


# ----------------------------------------------------------------------------- hand examples

# Example A: 3 classes; class 2 absent from target and (counted) prediction; two ignored pixels,
# one of them predicted as class 2 (must not count). Counted (target, pred) pairs:
# (0,0) x3, (0,1) x1, (1,1) x2, (1,0) x1  ->  M = [[3, 1, 0], [1, 2, 0], [0, 0, 0]], N = 7.
TARGET_A = torch.tensor([[0, 0, 0], [1, 1, IGNORE], [0, 1, IGNORE]])
PRED_A = torch.tensor([[0, 1, 0], [1, 0, 2], [0, 1, 0]])


def test_hand_example_with_absent_class_and_ignored_pixels():
    cm = ConfusionMatrix(3, ignore_index=IGNORE)
    cm.update(PRED_A, TARGET_A)
    assert cm.matrix.tolist() == [[3, 1, 0], [1, 2, 0], [0, 0, 0]]
    m = cm.compute(class_names=["a", "b", "c"])
    # class a: TP 3, FP 1, FN 1; class b: TP 2, FP 1, FN 1
    assert close(m["per_class"]["a"]["IoU"], Fraction(3, 5))
    assert close(m["per_class"]["a"]["precision"], Fraction(3, 4))
    assert close(m["per_class"]["a"]["recall"], Fraction(3, 4))
    assert close(m["per_class"]["a"]["F1"], Fraction(3, 4))
    assert close(m["per_class"]["b"]["IoU"], Fraction(2, 4))
    assert close(m["per_class"]["b"]["F1"], Fraction(4, 6))
    # class c absent from both: undefined, not 0 and not 1
    for key in ("IoU", "precision", "recall", "F1"):
        assert math.isnan(m["per_class"]["c"][key])
    assert m["per_class"]["a"]["support"] == 4 and m["per_class"]["c"]["support"] == 0
    assert close(m["mIoU"], (Fraction(3, 5) + Fraction(1, 2)) / 2)  # 11/20, class c left out
    assert close(m["mF1"], (Fraction(3, 4) + Fraction(2, 3)) / 2)  # 17/24
    assert close(m["OA"], Fraction(5, 7))
    # p_o = 5/7, p_e = (4*4 + 3*3) / 49 = 25/49 -> kappa = (10/49) / (24/49) = 5/12
    assert close(m["Kappa"], Fraction(5, 12))
    assert m["mean_over"] == ["a", "b"] and m["num_pixels"] == 7


def test_exclude_from_mean_keeps_oa_and_kappa():
    m = segmentation_metrics(confusion_matrix(PRED_A, TARGET_A, 3), exclude_from_mean=[1])
    assert close(m["mIoU"], Fraction(3, 5)) and close(m["mF1"], Fraction(3, 4))
    assert close(m["OA"], Fraction(5, 7)) and close(m["Kappa"], Fraction(5, 12))
    assert m["excluded"] == ["1"] and m["mean_over"] == ["0"]
    everything = segmentation_metrics(
        confusion_matrix(PRED_A, TARGET_A, 3), exclude_from_mean=[0, 1]
    )
    assert math.isnan(everything["mIoU"]) and math.isnan(everything["mF1"])


def test_hand_example_with_class_predicted_but_absent_from_target():
    # Example B: (0,0) x2, (0,2), (1,1) x2, (1,0) -> M = [[2, 0, 1], [1, 2, 0], [0, 0, 0]]
    target = torch.tensor([0, 0, 1, 1, 1, 0])
    pred = torch.tensor([0, 2, 1, 1, 0, 0])
    m = segmentation_metrics(confusion_matrix(pred, target, 3))
    assert close(m["IoU"][0], Fraction(2, 4)) and close(m["F1"][0], Fraction(4, 6))
    assert close(m["IoU"][1], Fraction(2, 3)) and close(m["precision"][1], Fraction(1))
    assert close(m["recall"][1], Fraction(2, 3)) and close(m["F1"][1], Fraction(4, 5))
    # class 2: a false positive only -> IoU = F1 = precision = 0 (counted), recall undefined
    assert m["IoU"][2] == 0.0 and m["F1"][2] == 0.0 and m["precision"][2] == 0.0
    assert math.isnan(m["recall"][2])
    assert close(m["mIoU"], (Fraction(1, 2) + Fraction(2, 3) + 0) / 3)  # 7/18
    assert close(m["mF1"], (Fraction(2, 3) + Fraction(4, 5) + 0) / 3)  # 22/45
    assert close(m["OA"], Fraction(4, 6))
    # rows (3, 3, 0), cols (3, 2, 1): p_e = 15/36, p_o = 24/36 -> kappa = (9/36) / (21/36) = 3/7
    assert close(m["Kappa"], Fraction(3, 7))


def test_accumulation_sums_counts_over_the_split_not_per_tile_means():
    g = torch.Generator().manual_seed(0)
    tiles = [
        (torch.randint(0, 4, (2, 8, 8), generator=g), torch.randint(0, 4, (2, 8, 8), generator=g))
        for _ in range(3)
    ]
    for _, t in tiles:
        t[t == 3] = IGNORE
    cm = ConfusionMatrix(4)
    for p, t in tiles:
        cm.update(p, t)
    whole = confusion_matrix(torch.cat([p for p, _ in tiles]), torch.cat([t for _, t in tiles]), 4)
    assert torch.equal(cm.matrix, whole)
    assert int(cm.matrix.sum()) == sum(int((t != IGNORE).sum()) for _, t in tiles)
    cm.reset()
    assert int(cm.matrix.sum()) == 0


def test_degenerate_matrices():
    empty = segmentation_metrics(torch.zeros(3, 3, dtype=torch.long))
    for key in ("mIoU", "mF1", "OA", "Kappa"):
        assert math.isnan(empty[key])
    # one class only, perfectly predicted: IoU 1, OA 1, kappa undefined (p_e = 1)
    one = segmentation_metrics(torch.tensor([[5, 0], [0, 0]]))
    assert one["mIoU"] == 1.0 and one["OA"] == 1.0 and math.isnan(one["Kappa"])


# ----------------------------------------------------------------------------- torchmetrics


def test_matches_torchmetrics_on_random_data():
    g = torch.Generator().manual_seed(1)
    c = 5
    target = torch.randint(0, c, (4, 32, 32), generator=g)
    # predictions right about 60% of the time, so that no class is absent and values are varied
    noise = torch.randint(0, c, target.shape, generator=g)
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.6, target, noise)
    target[:, :2] = IGNORE
    cm = ConfusionMatrix(c)
    for b in range(4):
        cm.update(pred[b], target[b])
    m = cm.compute()
    kw = {"num_classes": c, "ignore_index": IGNORE}
    iou = MulticlassJaccardIndex(average=None, **kw)(pred, target)
    f1 = MulticlassF1Score(average=None, **kw)(pred, target)
    precision = MulticlassPrecision(average=None, **kw)(pred, target)
    recall = MulticlassRecall(average=None, **kw)(pred, target)
    assert torch.allclose(torch.tensor(m["IoU"], dtype=torch.float64), iou.double(), atol=1e-6)
    assert torch.allclose(torch.tensor(m["F1"], dtype=torch.float64), f1.double(), atol=1e-6)
    assert torch.allclose(
        torch.tensor(m["precision"], dtype=torch.float64), precision.double(), atol=1e-6
    )
    assert torch.allclose(
        torch.tensor(m["recall"], dtype=torch.float64), recall.double(), atol=1e-6
    )
    assert m["mIoU"] == pytest.approx(iou.mean().item(), abs=1e-6)
    assert m["mF1"] == pytest.approx(MulticlassF1Score(average="macro", **kw)(pred, target).item())
    oa = MulticlassAccuracy(average="micro", **kw)(pred, target)
    assert m["OA"] == pytest.approx(oa.item(), abs=1e-6)
    kappa = MulticlassCohenKappa(**kw)(pred, target)
    assert m["Kappa"] == pytest.approx(kappa.item(), abs=1e-6)


def test_torchmetrics_wrapper_equals_confusion_matrix():
    g = torch.Generator().manual_seed(2)
    metric = SegmentationMetrics(4, class_names=["w", "x", "y", "z"], exclude_from_mean=[3])
    cm = ConfusionMatrix(4)
    for _ in range(3):
        target = torch.randint(0, 4, (2, 6, 6), generator=g)
        target[0, 0] = IGNORE
        pred = torch.randint(0, 4, (2, 6, 6), generator=g)
        metric.update(pred, target)
        cm.update(pred, target)
    assert torch.equal(metric.confusion, cm.matrix)
    got = metric.compute()
    want = cm.compute(["w", "x", "y", "z"], exclude_from_mean=[3])
    assert got["mIoU"] == want["mIoU"] and got["per_class"] == want["per_class"]
    assert metric._reductions["confusion"] is not None  # summed across processes
    metric.reset()
    assert int(metric.confusion.sum()) == 0


# ----------------------------------------------------------------------------- table, errors


def test_format_metrics_table():
    m = segmentation_metrics(confusion_matrix(PRED_A, TARGET_A, 3), ["road", "house", "car"], [1])
    table = format_metrics_table(m)
    lines = table.splitlines()
    rows = lines[2:5]
    assert rows[0].split() == ["road", "60.00", "75.00", "75.00", "75.00", "4"]
    assert rows[1].split()[0] == "house*"
    assert rows[2].split() == ["car", "n/a", "n/a", "n/a", "n/a", "0"]
    assert len({len(line) for line in [lines[0], *rows]}) == 1  # aligned columns
    assert "mIoU     60.00" in table and "mean over 1: road" in table
    assert "OA       71.43" in table and "Kappa    41.67" in table


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(
            torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), 3
        )
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix(torch.zeros(4), torch.zeros(4, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"target \[7\]"):
        confusion_matrix(torch.zeros(2, dtype=torch.long), torch.tensor([0, 7]), 3)
    with pytest.raises(ValueError, match=r"pred \[3\]"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="square"):
        segmentation_metrics(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="class_names"):
        segmentation_metrics(torch.zeros(2, 2), class_names=["a"])
    with pytest.raises(ValueError, match="exclude_from_mean"):
        segmentation_metrics(torch.zeros(2, 2), exclude_from_mean=[2])
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMatrix(0)


def test_small_integer_dtypes_and_numpy_inputs():
    cm = ConfusionMatrix(3)
    cm.update(PRED_A.to(torch.uint8), TARGET_A.to(torch.uint8))
    cm.update(PRED_A.numpy().astype("int32"), TARGET_A.numpy())
    assert cm.matrix.tolist() == [[6, 2, 0], [2, 4, 0], [0, 0, 0]]


# ----------------------------------------------------------------------------- distributed

WORLD = 2
TIMEOUT_S = 90


def _rank_data(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10 + rank)
    target = torch.randint(0, 3, (3 + rank, 5, 5), generator=g)  # unequal shares on purpose
    target[:, 0] = IGNORE
    return torch.randint(0, 3, target.shape, generator=g), target


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=TIMEOUT_S),
    )
    try:
        pred, target = _rank_data(rank)
        cm = ConfusionMatrix(3)
        cm.update(pred, target)
        local = cm.matrix.clone()
        cm.sync()
        cm.sync()  # idempotent: no double counting
        try:
            cm.update(pred, target)
            update_after_sync = "allowed"
        except RuntimeError:
            update_after_sync = "refused"
        metric = SegmentationMetrics(3)
        metric.update(pred, target)
        res = {
            "local": local,
            "synced": cm.matrix.clone(),
            "update_after_sync": update_after_sync,
            "torchmetrics_mIoU": metric.compute()["mIoU"],
        }
        torch.save(res, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_sync_sums_the_ranks_matrices(tmp_path):
    ranks = run_ranks(_worker, WORLD, tmp_path, TIMEOUT_S)
    full = ConfusionMatrix(3)
    for r in range(WORLD):
        full.update(*_rank_data(r))
    for r, res in enumerate(ranks):
        assert torch.equal(res["local"], confusion_matrix(*_rank_data(r), 3))
        assert torch.equal(res["synced"], full.matrix)
        assert res["update_after_sync"] == "refused"
        assert res["torchmetrics_mIoU"] == pytest.approx(full.compute()["mIoU"], rel=1e-12)
    assert not torch.equal(ranks[0]["local"], ranks[1]["local"])
    # outside a process group sync is a no-op
    single = ConfusionMatrix(3)
    single.update(*_rank_data(0))
    single.sync()
    assert torch.equal(single.matrix, ranks[0]["local"])
