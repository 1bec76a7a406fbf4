"""Self-describing checkpoints: the run record, and evaluate.py checkpoint=X with nothing else."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from cli import error_line, run_many, run_script, tiny_args
from conftest import compose_config
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from glcnet.data.classes import ISPRS_CLASSES, ISPRS_PALETTE, decode_palette
from glcnet.models.segmenter import Segmenter
from glcnet.training.checkpoints import load_torch_file, save_torch_file
from glcnet.training.evaluate import load_finetuned, run_evaluate, user_overrides
from glcnet.training.export import CheckpointMismatchError, export_pretrained
from glcnet.training.run_record import RECORD_KEY, read_run_record, segmenter_from_record
from glcnet.utils.config import CONFIG_DIR


@pytest.fixture(scope="module")
def rgb_run(tiny_sample_root, tmp_path_factory):
    """A fine-tuning run on 3 of the 4 bands (RGB), through the CLI."""
    work = tmp_path_factory.mktemp("rgb_run")
    res = run_script(
        "finetune.py",
        *tiny_args(tiny_sample_root),
        "data.bands=RGB",
        "data.label_count=6",
        "samples_per_epoch=8",
        "trainer.max_steps=2",
        f"hydra.run.dir={work / 'run'}",
        cwd=work,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return work / "run" / "checkpoints" / "best.ckpt"


def test_checkpoint_carries_the_run_record(rgb_run, tiny_sample_root):
    record = read_run_record(rgb_run)
    assert record["format"] == "glcnet-run-record" and record["version"] == 1
    assert record["stage"] == "finetune"
    data = record["data"]
    assert data["dataset_class"] == "glcnet.data.isprs.Potsdam"
    assert data["root"] == str(tiny_sample_root)
    assert data["bands"] == "RGB" and data["band_indexes"] == [1, 2, 3]
    assert data["band_names"] == ["R", "G", "B"] and data["in_channels"] == 3
    assert data["num_classes"] == 6 and data["class_names"] == list(ISPRS_CLASSES)
    assert data["palette"] == [list(c) for c in ISPRS_PALETTE]
    assert data["ignore_index"] == 255 and data["tile_size"] == 64 and data["stride"] == 64
    assert data["input_scaling"]["image_dtype"] == "uint8"
    assert data["input_scaling"]["divisor"] == 255.0
    assert data["split"]["label_seed"] == 0 and data["split"]["labeled_tiles"] == 6
    assert record["model"]["encoder"] == "resnet18" and record["model"]["in_channels"] == 3
    assert record["model"]["decoder_channels"] == 32 and record["model"]["num_classes"] == 6
    assert record["config"]["data"]["bands"] == "RGB" and record["config"]["seed"] == 0
    last = read_run_record(rgb_run.parent / "last.ckpt")
    assert last["data"] == record["data"]
    # everything loads with weights_only=True; the record alone rebuilds the network
    model = load_finetuned(segmenter_from_record(record), rgb_run)
    assert model.in_channels == 3 and model.head[0].out_channels == 6


def test_evaluate_with_only_the_checkpoint_scores_the_runs_own_data(
    rgb_run, tiny_sample_root, tmp_path
):
    res = run_script(
        "evaluate.py", f"checkpoint={rgb_run}", f"hydra.run.dir={tmp_path}", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr[-3000:]
    used = (tmp_path / "config.yaml").read_text()
    assert "bands: RGB" in used and f"root: {tiny_sample_root}" in used
    # the confusion matrix counts exactly the labeled pixels of the run's test split
    cfg = compose_config("evaluate", [f"checkpoint={rgb_run}"])
    expected = 0
    for scene in ("2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15", "5_13", "5_14", "5_15",
                  "6_13", "6_14", "6_15", "7_13"):  # fmt: skip
        label = tiny_sample_root / "5_Labels_all" / f"top_potsdam_{scene}_label.tif"
        with rasterio.open(label) as src:
            expected += int((decode_palette(src.read(), ISPRS_PALETTE) != 255).sum())
    assert np.load(tmp_path / "confusion.npy").sum() == expected
    assert cfg.data.root != str(tiny_sample_root)  # the defaults alone would read another root


def test_checkpoint_that_does_not_fit_the_data_asked_for_is_one_line(rgb_run, tmp_path):
    names = "[a,b,c,d,e,f]"
    cases = [
        (["data.bands=RGBIR"], "it was trained with data.bands=RGB, data.bands=RGBIR asked for"),
        ([f"data.class_names={names}"], "data.class_names=['impervious_surfaces'"),
        (["data.num_classes=5"], "data.num_classes=6, data.num_classes=5 asked for"),
    ]
    runs = [
        [f"checkpoint={rgb_run}", *a, f"hydra.run.dir={tmp_path / str(i)}"]
        for i, (a, _) in enumerate(cases)
    ]
    for (args, expected), res in zip(cases, run_many("evaluate.py", runs, cwd=tmp_path)):
        assert res["code"] == 2, (args, res["stderr"][-2000:])
        line = res["stderr"].strip().splitlines()[-1]
        assert line.startswith(f"error: {rgb_run} does not fit") and expected in line, line


def test_overrides_given_to_the_run_function_apply_on_top(rgb_run, tmp_path):
    """The compose API (e.g. the protocol) passes overrides explicitly or via hydra.overrides."""
    cfg = compose_config("evaluate", [f"checkpoint={rgb_run}", "data.bands=IRRG"])
    with pytest.raises(CheckpointMismatchError, match="data.bands=IRRG asked for"):
        run_evaluate(cfg, overrides=["data.bands=IRRG"])
    assert user_overrides(cfg, None) == []  # composed without Hydra's node: none known
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(
                "evaluate", [f"checkpoint={rgb_run}", "data.bands=IRRG"], return_hydra_config=True
            )
    finally:
        GlobalHydra.instance().clear()
    assert user_overrides(cfg, None) == [f"checkpoint={rgb_run}", "data.bands=IRRG"]
    with pytest.raises(CheckpointMismatchError, match="data.bands=IRRG asked for"):
        run_evaluate(cfg)


def test_other_checkpoints_are_refused_or_flagged(rgb_run, tmp_path, tiny_sample_root):
    blob = load_torch_file(rgb_run)
    pre = dict(blob, **{RECORD_KEY: dict(blob[RECORD_KEY], stage="pretrain")})
    save_torch_file(pre, tmp_path / "pretrain.ckpt")
    cfg = compose_config("evaluate", [f"checkpoint={tmp_path / 'pretrain.ckpt'}"])
    with pytest.raises(CheckpointMismatchError, match="is a pretrain checkpoint"):
        run_evaluate(cfg)
    # a checkpoint of an older glcnet (no record): the command line's data, with a warning
    old = {k: v for k, v in blob.items() if k != RECORD_KEY}
    save_torch_file(old, tmp_path / "old.ckpt")
    cfg = compose_config(
        "evaluate",
        [
            f"checkpoint={tmp_path / 'old.ckpt'}",
            f"data.root={tiny_sample_root}",
            "data.sample_seed=null",
            "data.tile_size=64",
            "data.bands=RGB",
            "model.decoder_channels=32",
            "split=val",
            f"paths.output_dir={tmp_path / 'eval'}",
        ],
    )
    with pytest.warns(UserWarning, match="carries no run record"):
        result = run_evaluate(cfg)
    assert 0.0 <= result["metrics"]["OA"] <= 1.0


def test_pretrained_weights_with_another_band_count_are_one_line(tiny_sample_root, tmp_path):
    weights = export_pretrained(
        Segmenter("resnet18", in_channels=4, num_classes=6, decoder_channels=32),
        tmp_path / "pretrained.safetensors",
        record={"data": {"in_channels": 4, "band_names": ["R", "G", "B", "IR"], "bands": "RGBIR"}},
    )
    res = run_script(
        "finetune.py",
        *tiny_args(tiny_sample_root),
        "data.bands=RGB",
        f"pretrained={weights}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr[-3000:]
    line = error_line(res)
    assert line.startswith(f"error: {weights}: the weights were pretrained on 4 band(s) (R/G/B/IR)")
    assert "fine-tuning data has 3" in line
