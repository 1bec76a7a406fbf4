"""load_model_for_prediction: the model and data contract from the checkpoint's run record alone."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import rasterio
import torch
from own_data_fakes import make_convention_root
from prediction_fakes import make_run, settings, write_raster

from glcnet.data.classes import ISPRS_CLASSES, ISPRS_PALETTE
from glcnet.models.segmenter import Segmenter
from glcnet.prediction.checkpoint import load_model_for_prediction
from glcnet.prediction.errors import InputMismatchError
from glcnet.prediction.input_fit import fit_input
from glcnet.training.checkpoints import CheckpointReadError, UnsafeCheckpointError
from glcnet.training.export import CheckpointMismatchError
from glcnet.training.run_record import RECORD_KEY


@pytest.fixture(scope="module")
def sample_ckpt(tiny_sample_root, tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run"), root=tiny_sample_root)


def test_sample_run_gives_weights_classes_bands_scaling_and_tile(sample_ckpt, tmp_path):
    copy = tmp_path / "elsewhere" / "model.ckpt"  # away from its run folder: the file suffices
    copy.parent.mkdir()
    shutil.copy(sample_ckpt, copy)
    model, s = load_model_for_prediction(copy)
    assert isinstance(model, Segmenter) and not model.training
    assert model.encoder_name == "resnet18" and model.in_channels == 4
    saved = torch.load(sample_ckpt, weights_only=True)["state_dict"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[f"model.{key}"]), key
    assert s.class_names == ISPRS_CLASSES and s.palette == ISPRS_PALETTE
    assert (s.in_channels, s.band_indexes, s.band_names) == (4, (1, 2, 3, 4), ("R", "G", "B", "IR"))
    assert (s.input_dtype, s.input_scale) == ("uint8", 255.0)
    assert s.tile_size == 64 and s.ignore_index == 255 and s.source == str(copy)
    assert s.mask_spec["kind"] == "colors" and s.image_nodata == "none"


def test_folder_run_with_band_list_and_index_masks(tmp_path):
    root = tmp_path / "data"
    make_convention_root(root, "index")
    ckpt = make_run(
        tmp_path / "run", "data=folder", "data.bands=[3,2,1]", "data.num_classes=3",
        "data.class_names=[a,b,c]", root=root,
    )  # fmt: skip
    model, s = load_model_for_prediction(ckpt)
    assert model.num_classes == 3 and model.in_channels == 3
    assert s.band_indexes == (3, 2, 1) and s.band_names == ("B3", "B2", "B1")
    assert s.class_names == ("a", "b", "c")
    assert len(set(s.palette)) == 3  # index masks: generated display colours, one per class
    assert s.mask_spec["kind"] == "index" and s.image_nodata == "auto"


def rewrite(ckpt, tmp_path, change):
    blob = torch.load(ckpt, weights_only=True)
    change(blob)
    out = tmp_path / "changed.ckpt"
    torch.save(blob, out)
    return out


def test_checkpoint_without_a_record_is_refused_in_one_line(sample_ckpt, tmp_path):
    old = rewrite(sample_ckpt, tmp_path, lambda blob: blob.pop(RECORD_KEY))
    with pytest.raises(CheckpointMismatchError, match="carries no run record.*fine-tuned by this"):
        load_model_for_prediction(old)


def test_pretraining_checkpoint_and_missing_file_are_refused(sample_ckpt, tmp_path):
    def pretrain(blob):
        blob[RECORD_KEY]["stage"] = "pretrain"

    with pytest.raises(CheckpointMismatchError, match="is a pretrain checkpoint; predict.py takes"):
        load_model_for_prediction(rewrite(sample_ckpt, tmp_path, pretrain))
    with pytest.raises(CheckpointReadError, match="checkpoint not found"):
        load_model_for_prediction(tmp_path / "nope.ckpt")


def test_weights_that_do_not_fit_the_record_are_named(sample_ckpt, tmp_path):
    def three_bands(blob):
        blob[RECORD_KEY]["model"]["in_channels"] = 3

    with pytest.raises(CheckpointMismatchError, match="conv1.weight"):
        load_model_for_prediction(rewrite(sample_ckpt, tmp_path, three_bands))


class Payload:
    """Not plain data: a weights-only load must refuse it."""


def test_checkpoint_that_needs_unpickling_code_is_refused(sample_ckpt, tmp_path):
    def payload(blob):
        blob["extra"] = Payload()

    with pytest.raises(UnsafeCheckpointError, match="refused to load"):
        load_model_for_prediction(rewrite(sample_ckpt, tmp_path, payload))


def test_pixel_type_that_would_change_meaning_is_refused(sample_ckpt, tmp_path):
    """The record's training dtype (uint8) refuses uint16 input unless scale= is given."""
    _, s = load_model_for_prediction(sample_ckpt)
    s = replace(s, band_indexes=(1, 2, 3), in_channels=3, band_names=None)
    u16 = write_raster(tmp_path / "u16.tif", np.zeros((3, 8, 8), np.uint16))
    f32 = write_raster(tmp_path / "f32.tif", np.zeros((3, 8, 8), np.float32))
    u8 = write_raster(tmp_path / "u8.tif", np.zeros((3, 8, 8), np.uint8))
    with rasterio.open(u16) as ds:
        expected = (
            r"uint16 pixels \(divided by 65535\).*uint8 imagery \(divided by 255\).*scale=255"
        )
        with pytest.raises(InputMismatchError, match=expected):
            fit_input(ds, s)
        assert fit_input(ds, s, scale=4095).divisors == (4095.0,) * 3
    with rasterio.open(f32) as ds, pytest.raises(InputMismatchError, match="float32 pixels"):
        fit_input(ds, s)
    with rasterio.open(u8) as ds:
        assert fit_input(ds, s).divisors == (255.0,) * 3
    with rasterio.open(u16) as ds:  # dtype unknown: the dtype maximum, as training
        assert fit_input(ds, settings(bands=3)).divisors == (65535.0,) * 3
