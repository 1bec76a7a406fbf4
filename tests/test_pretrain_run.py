"""Short pretraining runs on the tiny sample set: loss decreases, checkpoints, resume, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import compose_config, tiny_overrides

from glcnet.data.paired import PairedViewDataset
from glcnet.models.segmenter import Segmenter
from glcnet.training.checkpoints import load_torch_file
from glcnet.training.export import CheckpointMismatchError, load_pretrained, read_pretrained
from glcnet.training.pretrain import run_pretrain
from glcnet.utils.config import instantiate

VIEW_ARGS = ["augment.size=64", "augment.region_size=16"]


def pretrain_cfg(root, out, *extra):
    return compose_config("pretrain", [*tiny_overrides(root, out), *VIEW_ARGS, *extra])


def logged(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return [e.value for e in acc.Scalars(tag)]


def test_pretraining_loss_decreases(tiny_sample_root, tmp_path):
    cfg = pretrain_cfg(
        tiny_sample_root,
        tmp_path,
        "trainer.max_steps=40",
        "data.batch_size=8",
        "optimizer.lr=2e-3",
        "scheduler=constant",
        "diagnostics_every=10",
    )
    run_pretrain(cfg)
    losses = logged(tmp_path, "train/loss")
    assert len(losses) == 40
    assert np.mean(losses[-8:]) < np.mean(losses[:8]) - 0.05, losses
    iou = logged(tmp_path, "train/matched_area_iou")
    assert iou and min(iou) > 0.9
    for branch in ("global", "local"):  # pretraining health, every 10 steps
        for stat in ("std", "std_x_sqrt_d", "align", "uniform", "pos_sim", "hardest_neg_sim"):
            assert len(logged(tmp_path, f"health/{branch}_{stat}")) == 4, (branch, stat)
    assert max(logged(tmp_path, "health/global_align")) <= 4.0
    probe = logged(tmp_path, "health/probe_mIoU")  # at the start, then every 10 steps
    assert len(probe) == 5 and all(0.0 <= v <= 1.0 for v in probe)
    assert (tmp_path / "config.yaml").exists()
    assert (tmp_path / "pretrained.safetensors").exists()


def test_resume_continues_step_count(tiny_sample_root, tmp_path):
    first = run_pretrain(pretrain_cfg(tiny_sample_root, tmp_path / "a", "trainer.max_steps=2"))
    ckpt = first["last_checkpoint"]
    assert load_torch_file(ckpt)["global_step"] == 2
    second = run_pretrain(
        pretrain_cfg(tiny_sample_root, tmp_path / "b", "trainer.max_steps=4", f"ckpt_path={ckpt}")
    )
    assert load_torch_file(second["last_checkpoint"])["global_step"] == 4


def test_export_loads_into_finetuning_model_and_mismatch_is_named(tiny_sample_root, tmp_path):
    result = run_pretrain(pretrain_cfg(tiny_sample_root, tmp_path, "trainer.max_steps=1"))
    model = Segmenter("resnet18", in_channels=4, num_classes=6)
    assert load_pretrained(model, result["export"]) == ["encoder"]
    exported = read_pretrained(result["export"])[0]["encoder"]
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, exported[key])
    # the Lightning checkpoint works as a source too
    load_pretrained(model, result["last_checkpoint"], transfer="encoder+decoder")
    wrong = Segmenter("resnet18", in_channels=3, num_classes=6)
    with pytest.raises(CheckpointMismatchError, match="conv1.weight"):
        load_pretrained(wrong, result["export"])
    with pytest.raises(CheckpointMismatchError, match="missing"):
        load_pretrained(Segmenter("resnet34", in_channels=4, num_classes=6), result["export"])


def test_paired_view_items(tiny_sample_root, tmp_path):
    cfg = pretrain_cfg(tiny_sample_root, tmp_path)
    pairs = PairedViewDataset(instantiate(cfg.data).pretrain_dataset(), instantiate(cfg.augment))
    item = pairs[0]
    assert item["view_a"].shape == (4, 64, 64)
    assert item["index_a"].shape[-2:] == (64, 64)
    assert np.isfinite(item["view_b"].numpy()).all()
