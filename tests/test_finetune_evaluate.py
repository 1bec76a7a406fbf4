"""Fine-tuning and evaluation runs on the tiny sample set, and their bad-input behaviour."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from conftest import compose_config, tiny_overrides

from glcnet.data.classes import BOUNDARY_COLOR, ISPRS_PALETTE, decode_palette
from glcnet.models.segmenter import Segmenter
from glcnet.training.checkpoints import load_torch_file
from glcnet.training.evaluate import load_finetuned, run_evaluate
from glcnet.training.export import CheckpointMismatchError, export_pretrained
from glcnet.training.finetune import run_finetune
from glcnet.training.pretrain_module import NonFiniteLossError
from glcnet.utils.config import instantiate


def finetune_cfg(root, out, *extra):
    return compose_config(
        "finetune",
        [*tiny_overrides(root, out), "trainer.max_epochs=1", "samples_per_epoch=8", *extra],
    )


@pytest.fixture(scope="module")
def finetuned(tiny_sample_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft")
    result = run_finetune(finetune_cfg(tiny_sample_root, out, "data.label_count=6"))
    return result


def test_finetune_writes_subset_and_best_checkpoint(finetuned):
    spec = json.loads(finetuned["subset_file"].read_text())
    assert spec["count"] == 6 and len(spec["tiles"]) == 6
    assert finetuned["best_checkpoint"].exists()
    assert "val/mIoU" in finetuned["metrics"]


def test_label_subset_is_reproducible_and_reusable(tiny_sample_root, finetuned, tmp_path):
    data = instantiate(finetune_cfg(tiny_sample_root, tmp_path, "data.label_count=6").data)
    n = len(data.dataset("train"))
    first = json.loads(finetuned["subset_file"].read_text())
    assert [t["index"] for t in first["tiles"]] == data.labeled_indices(n, seed=0)
    assert data.labeled_indices(n, seed=0) != data.labeled_indices(n, seed=1)
    again = run_finetune(
        finetune_cfg(
            tiny_sample_root,
            tmp_path,
            f"subset_file={finetuned['subset_file']}",
            "trainer.max_steps=1",
            "label_seed=5",
        )
    )
    assert json.loads(again["subset_file"].read_text())["tiles"] == first["tiles"]


def test_label_fraction_selecting_nothing_is_a_clear_error(tiny_sample_root, tmp_path):
    with pytest.raises(ValueError, match="selects no tile"):
        run_finetune(finetune_cfg(tiny_sample_root, tmp_path, "data.label_fraction=0.001"))


def test_missing_class_in_subset_warns_and_continues(tiny_sample_root, tmp_path):
    with pytest.warns(UserWarning, match="absent from the 1 labeled"):
        result = run_finetune(
            finetune_cfg(tiny_sample_root, tmp_path, "data.label_count=1", "trainer.max_steps=1")
        )
    assert result["best_checkpoint"].exists()


def test_pretrained_checkpoint_that_does_not_fit_names_keys(tiny_sample_root, tmp_path):
    bad = export_pretrained(Segmenter("resnet18", in_channels=3, num_classes=6), tmp_path / "w.pt")
    with pytest.raises(CheckpointMismatchError, match="conv1.weight"):
        run_finetune(finetune_cfg(tiny_sample_root, tmp_path, f"pretrained={bad}"))


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(tiny_sample_root, tmp_path):
    cfg = finetune_cfg(tiny_sample_root, tmp_path, "trainer.max_epochs=2", "optimizer.lr=1e30")
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        run_finetune(cfg)


def test_frozen_encoder_is_not_updated(tiny_sample_root, tmp_path):
    torch.manual_seed(0)
    result = run_finetune(
        finetune_cfg(tiny_sample_root, tmp_path, "freeze_encoder=true", "trainer.max_steps=2")
    )
    state = load_torch_file(result["best_checkpoint"])["state_dict"]
    torch.manual_seed(0)
    fresh = Segmenter("resnet18", in_channels=4, num_classes=6)
    w = state["model.net.encoder.conv1.weight"]
    assert torch.equal(w, fresh.encoder.conv1.weight)


def test_evaluate_counts_every_labeled_test_pixel_once(tiny_sample_root, finetuned, tmp_path):
    cfg = compose_config(
        "evaluate",
        [
            *tiny_overrides(tiny_sample_root, tmp_path, train=False),
            f"checkpoint={finetuned['best_checkpoint']}",
            "eroded=true",
            "write_predictions=true",
        ],
    )
    result = run_evaluate(cfg)
    confusion = np.load(tmp_path / "confusion.npy")
    data = instantiate(cfg.data)
    test = data.dataset("test", labeled=True, eroded=True)
    expected = 0
    for scene in test.scenes:
        with rasterio.open(test.label_path(scene, eroded=True)) as src:
            rgb = src.read()
        labels = decode_palette(rgb, ISPRS_PALETTE, ignore_colors=[BOUNDARY_COLOR])
        expected += int((labels != 255).sum())
    assert confusion.sum() == expected
    assert 0.0 <= result["metrics"]["OA"] <= 1.0
    assert np.isclose(result["metrics"]["OA"], np.trace(confusion) / confusion.sum())
    for name in ("metrics.json", "metrics.csv", "metrics.txt"):
        assert (tmp_path / name).exists()
    assert len(list((tmp_path / "predictions").glob("*.tif"))) == len(test.scenes)
    scene = test.scenes[0]
    pred_file = tmp_path / "predictions" / f"{scene}_prediction.tif"
    with rasterio.open(pred_file) as p, rasterio.open(test.image_path(scene)) as ref:
        assert p.crs == ref.crs and p.transform == ref.transform


def test_finetuned_checkpoint_mismatch_is_named(finetuned):
    with pytest.raises(CheckpointMismatchError, match="in_channels=3"):
        load_finetuned(
            Segmenter("resnet18", in_channels=3, num_classes=6), finetuned["best_checkpoint"]
        )
