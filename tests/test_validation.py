"""Settings that cannot work are refused before any work: one line on stderr, exit status 2."""

from __future__ import annotations

import pytest
from cli import run_many, run_script, tiny_args
from conftest import compose_config

from glcnet.utils.validation import ConfigError, validate_config

NO_DATA = "data.root=/nonexistent/data"  # reading data would fail differently: proves "before"

PRETRAIN = [
    (["model.in_channels=3"], "model.in_channels=3 but data.bands=RGBIR reads 4 band(s)"),
    (["augment.size=60"], "augment.size=60 must be divisible by the model's output stride 16"),
    (["augment.small_crops=2", "augment.small_size=40"], "augment.small_size=40 must be divisible"),
    (["trainer.max_epochs=-1"], "the run has no end"),
    (
        ["export_name=weights.pt"],
        "export_name=weights.pt must be a file name ending in .safetensors",
    ),
    (["data.bands=XYZ"], "data.bands=XYZ is not a band mode of glcnet.data.Potsdam"),
    (["data.batch_size=0"], "data.batch_size=0 must be an integer >= 1"),
    (["ckpt_path=/nonexistent/last.ckpt"], "ckpt_path=/nonexistent/last.ckpt: no such file"),
    (["checkpoint_every_n_steps=-5"], "checkpoint_every_n_steps=-5 must be an integer >= 0"),
    (
        ["data.num_classes=5", "data.class_names=[a,b,c,d,e,f]"],
        "data.class_names has 6 names for data.num_classes=5",
    ),
]
FINETUNE = [
    (["loss=bce"], "loss BinaryCrossEntropyLoss handles at most 2 classes but data.num_classes=6"),
    (["loss.class_weights=[1,2]"], "loss.class_weights has 2 entries for 6 classes"),
    (["data.tile_size=72"], "data.tile_size=72 must be divisible by the model's output stride 16"),
    (["model.output_stride=8", "data.tile_size=36"], "output stride 8"),
    (["data.label_fraction=2"], "data.label_fraction=2 must be in (0, 1]"),
    (
        ["data.label_fraction=0.1", "data.label_count=5"],
        "data.label_fraction=0.1 and data.label_count=5 are both set",
    ),
    (["exclude_from_mean=[9]"], "exclude_from_mean=[9]: [9] are not class indices 0..5"),
    (["samples_per_epoch=3"], "samples_per_epoch=3 must be an integer >= data.batch_size=16"),
    (["transfer=decoder"], "transfer=decoder must be encoder or encoder+decoder"),
    (["pretrained=/nonexistent/w.safetensors"], "pretrained=/nonexistent/w.safetensors: no such"),
]


def _check(results, cases):
    for (args, expected), res in zip(cases, results):
        assert res["code"] == 2, (args, res["stderr"][-2000:])
        assert "Traceback" not in res["stderr"], (args, res["stderr"][-2000:])
        line = res["stderr"].strip().splitlines()[-1]
        assert line.startswith("error: ") and expected in line, (args, line)


def test_cli_refuses_pretraining_settings_that_cannot_work(tmp_path):
    runs = [
        [*args, NO_DATA, f"hydra.run.dir={tmp_path / str(i)}"]
        for i, (args, _) in enumerate(PRETRAIN)
    ]
    _check(run_many("pretrain.py", runs, cwd=tmp_path), PRETRAIN)


def test_cli_refuses_finetuning_settings_that_cannot_work(tmp_path):
    runs = [
        [*args, NO_DATA, f"hydra.run.dir={tmp_path / str(i)}"]
        for i, (args, _) in enumerate(FINETUNE)
    ]
    _check(run_many("finetune.py", runs, cwd=tmp_path), FINETUNE)


def test_cli_evaluate_needs_an_existing_checkpoint(tmp_path):
    cases = [
        ([], "checkpoint=<fine-tuning checkpoint, e.g. <run>/checkpoints/best.ckpt> is required"),
        (["checkpoint=/nonexistent/best.ckpt"], "checkpoint=/nonexistent/best.ckpt: no such file"),
    ]
    runs = [[*a, f"hydra.run.dir={tmp_path / str(i)}"] for i, (a, _) in enumerate(cases)]
    _check(run_many("evaluate.py", runs, cwd=tmp_path), cases)


def test_constructor_errors_inside_instantiate_are_one_line(tiny_sample_root, tmp_path):
    """A ValueError raised by a constructor reaches the user without Hydra's wrapper."""
    cases = [
        (["method.temperature=-1"], "method: temperature must be a positive finite number"),
        # a ValueError of the data layer (outside instantiate): Hydra reads 2_13 as 213
        (["+data.dataset_kwargs.val_scenes=[2_13]"], "213 is not a Potsdam scene id"),
    ]
    runs = [
        [*tiny_args(tiny_sample_root), "augment.size=64", *a, f"hydra.run.dir={tmp_path / str(i)}"]
        for i, (a, _) in enumerate(cases)
    ]
    _check(run_many("pretrain.py", runs, cwd=tmp_path), cases)


def test_full_traceback_on_request_and_hydra_errors_stay_hydras(tmp_path):
    run_dir = f"hydra.run.dir={tmp_path / 'run'}"
    res = run_script(
        "finetune.py", "loss=bce", NO_DATA, run_dir, cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"}
    )
    assert res.returncode == 1 and "Traceback" in res.stderr and "ConfigError" in res.stderr
    res = run_script("finetune.py", "no_such_key=1", run_dir, cwd=tmp_path)
    assert res.returncode == 1
    assert "Could not override 'no_such_key'" in res.stderr and "error: " not in res.stderr


def test_default_configs_pass_validation(tmp_path):
    for stage in ("pretrain", "finetune"):
        validate_config(compose_config(stage, [f"paths.output_dir={tmp_path}"]), stage)
    with pytest.raises(ConfigError, match=r"data.tile_size=72 .*; loss BinaryCrossEntropyLoss"):
        validate_config(
            compose_config("finetune", ["loss=bce", "data.tile_size=72"]), "finetune"
        )  # every problem, in one line


def test_error_messages_are_unwrapped_to_one_line():
    from hydra.errors import InstantiationException

    from glcnet.data.errors import CorruptRasterError
    from glcnet.utils.reporting import input_error_message

    worker = (
        "Caught {0} in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
        '  File "/site/glcnet/data/{1}", line 9, in read\n    raise {0}(msg)\n'
        "glcnet.data.errors.{0}: {2}"
    )
    text = worker.format("CorruptRasterError", "raster.py", "cannot read window of a.tif")
    assert input_error_message(CorruptRasterError(text)) == "cannot read window of a.tif"
    text = worker.format("ValueError", "folder.py", "bands must be 1-based band indexes")
    assert input_error_message(ValueError(text)) == "bands must be 1-based band indexes"
    assert input_error_message(ValueError("a bug elsewhere")) is None  # keeps its traceback
    try:
        try:
            raise ValueError("temperature must be positive")
        except ValueError as cause:
            raise InstantiationException(
                "Error in call to target 'glcnet.methods.GLCNet':\nValueError(...)\n"
                "full_key: method"
            ) from cause
    except InstantiationException as err:
        assert input_error_message(err) == "method: temperature must be positive"
