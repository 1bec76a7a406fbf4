"""scripts/predict.py end to end: grid kept, outputs QGIS reads, inputs, refusals, the README example."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from cli import run_many
from conftest import compose_config
from prediction_fakes import make_run, write_raster

from glcnet.data.classes import ISPRS_CLASSES, ISPRS_PALETTE
from glcnet.data.errors import EmptyFolderError, MissingDataError
from glcnet.prediction.cog_check import cog_layout_errors
from glcnet.prediction.errors import InputMismatchError, PredictOptionError
from glcnet.prediction.run import run_predict
from glcnet.utils.config import PROJECT_ROOT

pyogrio = pytest.importorskip("pyogrio")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# a georeferenced scene that is neither square nor a multiple of the 64 px tile
GRID = Affine(0.05, 0.0, 366000.0, 0.0, -0.07, 5808000.0)


def predict_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run scripts/predict.py (one torch thread: tiny inputs, shared CPUs)."""
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts" / "predict.py"), *args],
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def run_ckpt(tiny_sample_root, tmp_path_factory) -> Path:
    """A sample-data (RGBIR, 6 ISPRS classes, 64 px tiles) fine-tuning checkpoint, untrained."""
    return make_run(tmp_path_factory.mktemp("run"), root=tiny_sample_root)


def rgbir_scene(path: Path, h: int = 150, w: int = 215, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    return write_raster(path, rng.integers(0, 256, (4, h, w), np.uint8), "EPSG:32633", GRID)


def predict_cfg(ckpt, inp, out, *extra):
    return compose_config(
        "predict",
        [f"checkpoint={ckpt}", f"input={inp}", f"output_dir={out}", "progress=false", *extra],
    )


def test_cli_keeps_the_grid_and_writes_what_qgis_reads(run_ckpt, tmp_path):
    scene = rgbir_scene(tmp_path / "scene.tif")
    out = tmp_path / "out"
    res = predict_cli(
        f"checkpoint={run_ckpt}", f"input={scene}", f"output_dir={out}", "vector=gpkg",
        "probabilities=true", "quicklook=true", cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "24 of 24 windows run" in res.stdout  # rows 0 32 64 86 x cols 0 32 64 96 128 151
    with rasterio.open(out / "scene.tif") as dst, rasterio.open(scene) as src:
        assert (dst.crs, dst.transform, dst.width, dst.height) == (
            src.crs, src.transform, src.width, src.height,
        )  # fmt: skip
        cmap, tags, labels = dst.colormap(1), dst.tags(), dst.read(1)
        assert dst.nodata == 255 and dst.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert [cmap[i][:3] for i in range(6)] == list(ISPRS_PALETTE)
    assert json.loads(tags["CLASS_NAMES"]) == list(ISPRS_CLASSES)
    assert tags["CHECKPOINT"] == str(run_ckpt)
    assert labels.max() < 6 and cog_layout_errors(out / "scene.tif", full=True) == []
    with rasterio.open(out / "scene_prob.tif") as p:
        assert p.count == 6 and p.transform == GRID
        total = p.read().astype(int).sum(axis=0)
    assert (abs(total - 255) <= 3).all()  # six rounded probabilities summing to 1
    info = pyogrio.read_info(out / "scene.gpkg")
    assert info["crs"] == "EPSG:32633" and info["features"] > 0
    _, _, _, (cls, names, area) = pyogrio.raw.read(out / "scene.gpkg")
    assert set(names) <= set(ISPRS_CLASSES)
    for c in range(6):  # per class, the polygons cover exactly its pixels
        assert area[cls == c].sum() == pytest.approx((labels == c).sum() * 0.05 * 0.07)
    assert (out / "scene_quicklook.png").stat().st_size > 0


def test_cli_refuses_what_does_not_fit_in_one_line(run_ckpt, tmp_path):
    """Bands, pixel type, a checkpoint without run record, a nodata setting: one line, status 2."""
    import torch

    from glcnet.training.run_record import RECORD_KEY

    rgb = write_raster(tmp_path / "rgb.tif", np.zeros((3, 40, 50), np.uint8))
    u16 = write_raster(tmp_path / "u16.tif", np.zeros((4, 40, 50), np.uint16))
    scene = rgbir_scene(tmp_path / "scene.tif", 40, 50)
    blob = torch.load(run_ckpt, weights_only=True)
    del blob[RECORD_KEY]
    old = tmp_path / "old.ckpt"
    torch.save(blob, old)
    runs = {
        f"{rgb} has 3 bands but the model reads bands [1, 2, 3, 4] (4 bands (R, G, B, IR)); set "
        "bands=[...]": [f"checkpoint={run_ckpt}", f"input={rgb}"],
        f"{u16} holds uint16 pixels (divided by 65535) but the model was trained on uint8 imagery "
        "(divided by 255)": [f"checkpoint={run_ckpt}", f"input={u16}"],
        f"{old} carries no run record": [f"checkpoint={old}", f"input={scene}"],
        "image_nodata must be auto, none or a number, got 'white'": [
            f"checkpoint={run_ckpt}", f"input={scene}", "image_nodata=white",
        ],
    }  # fmt: skip
    args = [[*a, f"output_dir={tmp_path / 'out'}", "progress=false"] for a in runs.values()]
    lines = []
    for expected, res in zip(runs, run_many("predict.py", args, cwd=tmp_path), strict=True):
        assert res["code"] == 2, res["stderr"][-3000:]
        assert "Traceback" not in res["stderr"]
        lines.append(res["stderr"].strip().splitlines()[-1])
        assert lines[-1].startswith(f"error: {expected}"), lines[-1]
    assert "set scale=<divisor> (e.g. scale=255)" in lines[1]


def test_folder_and_glob_inputs(run_ckpt, tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    for i, name in enumerate(["a.tif", "b.TIFF"]):
        rgbir_scene(folder / name, 70, 90, seed=i)
    (folder / "notes.txt").write_text("not an image")
    result = run_predict(predict_cfg(run_ckpt, folder, tmp_path / "o1"))
    assert [s.image.name for s in result["scenes"]] == ["a.tif", "b.TIFF"]
    assert (tmp_path / "o1" / "a.tif").exists() and (tmp_path / "o1" / "b.tif").exists()
    result = run_predict(predict_cfg(run_ckpt, f"{folder}/a*", tmp_path / "o2"))
    assert [s.image.name for s in result["scenes"]] == ["a.tif"]


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_png_input_without_georeference(run_ckpt, tmp_path):
    png = write_raster(
        tmp_path / "photo.png", np.zeros((4, 40, 70), np.uint8), crs=None, transform=None,
        driver="PNG",
    )  # fmt: skip
    run_predict(predict_cfg(run_ckpt, png, tmp_path / "o"))
    with rasterio.open(tmp_path / "o" / "photo.tif") as dst:
        assert dst.crs is None and dst.shape == (40, 70)


@pytest.mark.parametrize(
    ("setup", "extra", "error", "message"),
    [
        ("missing", [], MissingDataError, "input not found"),
        ("empty_glob", [], MissingDataError, "matches no .tif/.tiff/.png file"),
        ("empty_folder", [], EmptyFolderError, "holds no .tif/.tiff/.png file"),
        ("scene", ["bands=[1,2,3,9]"], InputMismatchError, "has 4 bands but the model reads bands"),
        ("scene", ["bands=[1,2]"], PredictOptionError, "the model takes 4 bands"),
        ("scene", ["output_nodata=3"], PredictOptionError, "is not a class index"),
        ("scene", ["vector=shp"], PredictOptionError, "vector must be null or one of"),
        ("scene", ["tile_size=100"], PredictOptionError, "multiple of the model's output stride"),
        ("exists", [], PredictOptionError, "exists; set overwrite=true"),
        ("same", [], PredictOptionError, "would replace the input image"),
    ],
)
def test_refusals(run_ckpt, tmp_path, setup, extra, error, message):
    out = tmp_path / "out"
    inp = {
        "missing": tmp_path / "nope.tif",
        "empty_glob": tmp_path / "*.tif",
        "empty_folder": tmp_path,
    }.get(setup)
    if inp is None:
        inp = rgbir_scene(tmp_path / "scene.tif", 40, 40)
    if setup == "exists":
        out.mkdir()
        (out / "scene.tif").write_bytes(b"")
    if setup == "same":
        out = tmp_path
    with pytest.raises(error, match=re.escape(message)):
        run_predict(predict_cfg(run_ckpt, inp, out, *extra))


def test_nodata_override_skips_windows_and_writes_nodata(run_ckpt, tmp_path):
    data = np.full((4, 128, 96), 7, np.uint8)
    data[:, 64:] = 0
    scene = write_raster(tmp_path / "half.tif", data, "EPSG:32633", GRID)
    result = run_predict(
        predict_cfg(run_ckpt, scene, tmp_path / "o", "image_nodata=0", "overlap=0")
    )
    stats = result["scenes"][0].stats
    assert (stats.windows, stats.run, stats.skipped) == (4, 2, 2)
    with rasterio.open(tmp_path / "o" / "half.tif") as dst:
        labels = dst.read(1)
    assert (labels[64:] == 255).all() and (labels[:64] < 6).all()


def readme_example() -> str:
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split("## Use a trained model", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return block.replace("\\\n", " ").strip().splitlines()[0]


def test_readme_example_runs_as_written(tiny_sample_root, tmp_path):
    """The README's command on a real (one-step) fine-tuning run and a sample scene."""
    from conftest import tiny_overrides

    from glcnet.training.finetune import run_finetune

    ckpt = run_finetune(
        compose_config(
            "finetune",
            [
                *tiny_overrides(tiny_sample_root, tmp_path / "ft"),
                "trainer.max_steps=1",
                "samples_per_epoch=4",
                "data.label_count=4",
            ],
        )  # fmt: skip
    )["best_checkpoint"]
    shared = tmp_path / "shared" / "model.ckpt"  # copied away from its run: the file suffices
    shared.parent.mkdir()
    shared.write_bytes(ckpt.read_bytes())
    ckpt = shared
    scene = next((tiny_sample_root / "4_Ortho_RGBIR").glob("*.tif"))
    command = readme_example()
    ckpt_text = re.search(r"checkpoint=(\S+)", command).group(1)
    input_text = re.search(r"input=(\S+)", command).group(1)
    out_text = re.search(r"output_dir=(\S+)", command).group(1)
    command = command.replace(ckpt_text, str(ckpt)).replace(input_text, str(scene))
    command = command.replace(out_text, str(tmp_path / "pred"))
    args = shlex.split(command)
    assert args[:2] == ["python", "scripts/predict.py"]
    res = predict_cli(*args[2:], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    expected = {".tif": True, ".gpkg": "vector=gpkg" in command,
                "_quicklook.png": "quicklook=true" in command,
                "_prob.tif": "probabilities=true" in command}  # fmt: skip
    for suffix, written in expected.items():
        assert (tmp_path / "pred" / f"{scene.stem}{suffix}").exists() == written, suffix


def test_every_predict_key_is_documented_and_is_an_option():
    from dataclasses import fields

    from glcnet.prediction.run import PredictOptions

    lines = (PROJECT_ROOT / "configs" / "predict.yaml").read_text().splitlines()
    top = [
        ln
        for ln in lines
        if re.match(r"^[a-z_]+:", ln) and not ln.startswith(("defaults", "hydra"))
    ]
    undocumented = [
        ln.split(":")[0] for ln in top if "#" not in ln and not ln.startswith("task_name")
    ]
    assert undocumented == []
    keys = {ln.split(":")[0] for ln in top}
    run_keys = {
        "task_name",
        "checkpoint",
        "input",
        "output_dir",
        "overwrite",
        "device",
        "bands",
        "tile_size",
    }
    assert keys == {f.name for f in fields(PredictOptions)} | run_keys
