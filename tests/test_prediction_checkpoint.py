"""load_model_for_prediction: the model and data contract of a fine-tuning run, and its refusals."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from prediction_fakes import make_run

from glcnet.data.classes import ISPRS_CLASSES, ISPRS_PALETTE
from glcnet.data.errors import MissingDataError
from glcnet.models.segmenter import Segmenter
from glcnet.prediction.checkpoint import load_model_for_prediction
from glcnet.prediction.settings import default_palette
from glcnet.training.export import CheckpointMismatchError


def test_sample_run_gives_weights_classes_bands_and_tile(tmp_path):
    ckpt = make_run(tmp_path / "run")
    model, s = load_model_for_prediction(ckpt)
    assert isinstance(model, Segmenter) and not model.training
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    conv1 = "net.encoder.conv1.weight"
    assert torch.equal(model.state_dict()[conv1], saved[f"model.{conv1}"])
    assert s.class_names == ISPRS_CLASSES and s.palette == ISPRS_PALETTE
    assert (s.in_channels, s.band_indexes, s.band_names) == (4, None, ("R", "G", "B", "IR"))
    assert s.tile_size == 64 and s.ignore_index == 255 and s.source == str(ckpt)


def test_folder_run_with_band_list_and_index_masks(tmp_path):
    ckpt = make_run(
        tmp_path / "run", "data=folder", "data.bands=[3,2,1]", "data.num_classes=4",
        "data.class_names=[a,b,c,d]",
    )  # fmt: skip
    model, s = load_model_for_prediction(ckpt)
    assert model.num_classes == 4 and s.band_indexes == (3, 2, 1)
    assert s.class_names == ("a", "b", "c", "d")
    assert s.palette == default_palette(4)  # index masks: no palette in the run
    assert len(set(s.palette)) == 4


def test_run_without_config_is_refused(tmp_path):
    ckpt = make_run(tmp_path / "run")
    (tmp_path / "run" / "config.yaml").unlink()
    with pytest.raises(CheckpointMismatchError, match="no run config next to it"):
        load_model_for_prediction(ckpt)


def test_missing_checkpoint_and_foreign_model_are_refused(tmp_path):
    with pytest.raises(MissingDataError, match="checkpoint not found"):
        load_model_for_prediction(tmp_path / "nope.ckpt")
    ckpt = make_run(tmp_path / "run")
    config = tmp_path / "run" / "config.yaml"
    config.write_text(config.read_text().replace("glcnet.models.Segmenter", "os.system"))
    with pytest.raises(CheckpointMismatchError, match="builds glcnet.models.Segmenter only"):
        load_model_for_prediction(ckpt)


def test_weights_that_do_not_fit_are_named(tmp_path):
    ckpt = make_run(tmp_path / "run")
    config = tmp_path / "run" / "config.yaml"
    config.write_text(config.read_text().replace("in_channels: 4", "in_channels: 3"))
    with pytest.raises(CheckpointMismatchError, match="in_channels=3.*conv1.weight"):
        load_model_for_prediction(ckpt)


class Payload:
    """Not plain data: a weights-only load must refuse it."""


def test_checkpoint_that_needs_unpickling_code_is_refused(tmp_path):
    ckpt = make_run(tmp_path / "run")
    blob = torch.load(ckpt, weights_only=True)
    blob["extra"] = Payload()
    torch.save(blob, ckpt)
    with pytest.raises(CheckpointMismatchError, match="weights-only"):
        load_model_for_prediction(ckpt)


def test_pixel_type_that_would_change_meaning_is_refused(tmp_path):
    """With the training dtype known (the run record), uint16 input to a uint8 model is refused."""
    import numpy as np
    import rasterio
    from prediction_fakes import settings, write_raster

    from glcnet.prediction.errors import InputMismatchError
    from glcnet.prediction.input_fit import fit_input

    s = replace(settings(bands=3), input_dtype="uint8")
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
    with rasterio.open(u16) as ds:  # dtype unknown (today's run config): dtype max, as training
        assert fit_input(ds, settings(bands=3)).divisors == (65535.0,) * 3
