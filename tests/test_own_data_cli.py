"""Users' own data through the CLI: each mask convention read as meant, ambiguous ones refused.

Every test writes a tiny folder data set (``own_data_fakes``) whose class pixel counts are known
from the arrays the masks were encoded from, then checks the decoded counts, fine-tunes for a few
steps and evaluates with ``evaluate.py checkpoint=<best.ckpt>`` and nothing else (the checkpoint's
run record says which data, masks and model): the evaluation's per-class support must equal the
fixture's test counts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import compose_config
from own_data_fakes import CONVENTIONS, SPLITS, make_convention_root, write_raster

from glcnet.training.evaluate import run_evaluate
from glcnet.training.finetune import run_finetune
from glcnet.utils.config import PROJECT_ROOT, instantiate

#: Shrinks a fine-tuning run to a few seconds on the 64 px fixtures.
TINY_FINETUNE = [
    "data.batch_size=2",
    "data.num_workers=0",
    "model.encoder=resnet18",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "samples_per_epoch=4",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]


def script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``scripts/<name>`` with ``args`` in a fresh process (PYTHONPATH inherited)."""
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts" / name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "GLCNET_TRACEBACK": ""},
    )


def data_overrides(root: Path, name: str) -> list[str]:
    conv = CONVENTIONS[name]
    return [
        "data=folder",
        f"data.root={root}",
        f"data.num_classes={conv.num_classes}",
        *conv.overrides,
        "data.tile_size=64",
    ]


def decoded_counts(data, split: str) -> np.ndarray:
    """Class pixel counts of a split through the data set's label reader (whole scenes)."""
    ds = data.dataset(split)
    total = np.zeros(data.num_classes, dtype=np.int64)
    for scene in ds.scenes:
        labels = ds.read_labels(scene)
        total += np.bincount(labels[labels != ds.ignore_index], minlength=data.num_classes)
    return total


def finetune_and_evaluate(root: Path, name: str, out: Path, *extra: str, cli: bool) -> dict:
    """Fine-tune for a few steps, evaluate the best checkpoint; returns the metrics.

    Args:
        cli: Run ``scripts/finetune.py`` and ``scripts/evaluate.py`` in subprocesses; False: the
            same runs in this process (``run_finetune`` / ``run_evaluate`` on the composed configs).

    """
    data = data_overrides(root, name)
    if not cli:
        cfg = compose_config(
            "finetune", [*data, *TINY_FINETUNE, *extra, f"paths.output_dir={out / 'ft'}"]
        )
        best = run_finetune(cfg)["best_checkpoint"]
        assert best.name == "best.ckpt"
        # the checkpoint alone: its run record says which data, classes, masks and model
        cfg = compose_config("evaluate", [f"checkpoint={best}", f"paths.output_dir={out / 'ev'}"])
        return json.loads(json.dumps(run_evaluate(cfg)["metrics"]))
    ft = script(
        "finetune.py", *data, *TINY_FINETUNE, *extra, f"hydra.run.dir={out / 'ft'}", cwd=out
    )
    assert ft.returncode == 0, ft.stderr[-3000:]
    best = out / "ft" / "checkpoints" / "best.ckpt"
    assert best.is_file(), ft.stdout[-2000:]
    ev = script("evaluate.py", f"checkpoint={best}", f"hydra.run.dir={out / 'ev'}", cwd=out)
    assert ev.returncode == 0, ev.stderr[-3000:]
    return json.loads((out / "ev" / "metrics.json").read_text())


def support(metrics: dict) -> list[int]:
    return [metrics["per_class"][n]["support"] for n in metrics["class_names"]]


#: Each convention runs in this process by default; through the CLI for one of them by default and
#: for all with the slow tests (two script start-ups cost about 20-40 s on 2 shared cores).
CASES = [
    *[pytest.param(name, False, id=f"{name}-inprocess") for name in CONVENTIONS],
    *[
        pytest.param(
            name, True, id=f"{name}-cli", marks=() if name == "binary" else pytest.mark.slow
        )
        for name in CONVENTIONS
    ],
]


@pytest.mark.parametrize(("name", "cli"), CASES)
def test_mask_convention_decodes_trains_and_evaluates_exactly(name, cli, tmp_path):
    root = tmp_path / "data"
    conv = make_convention_root(root, name)
    cfg = compose_config("finetune", [*data_overrides(root, name), f"paths.output_dir={tmp_path}"])
    data = instantiate(cfg.data)
    for split in SPLITS:
        np.testing.assert_array_equal(decoded_counts(data, split), conv.counts(split))
    tiles = data.dataset("test")
    masks = np.concatenate([tiles[i]["mask"].numpy().ravel() for i in range(len(tiles))])
    np.testing.assert_array_equal(
        np.bincount(masks[masks != 255], minlength=conv.num_classes), conv.counts("test")
    )
    metrics = finetune_and_evaluate(root, name, tmp_path, cli=cli)
    assert metrics["class_names"] == [f"class_{k}" for k in range(conv.num_classes)]
    assert support(metrics) == conv.counts("test").tolist()
    assert metrics["num_pixels"] == int(conv.counts("test").sum())


def test_unknown_values_ignored_alike_in_training_tiles_and_evaluation(tmp_path):
    """Finding 6: with unknown_colors=ignore a mask value 9 is ignored by evaluation too."""
    root = tmp_path / "data"
    conv = make_convention_root(root, "index")
    mask_file = root / "test" / "masks" / "test_0.tif"
    with rasterio.open(mask_file) as src:
        mask = src.read()
    nine = (np.arange(64)[:, None] < 5) & (np.arange(64)[None, :] < 7)  # 35 pixels become 9
    lost = np.bincount(mask[0][nine & (mask[0] != 255)], minlength=conv.num_classes)
    mask[0][nine] = 9
    write_raster(mask_file, mask)
    metrics = finetune_and_evaluate(
        root, "index", tmp_path, "data.unknown_colors=ignore", cli=False
    )
    assert support(metrics) == (conv.counts("test") - lost).tolist()
    ds = instantiate(
        compose_config(
            "finetune",
            [*data_overrides(root, "index"), "data.unknown_colors=ignore"],
        ).data
    ).dataset("test")
    tile = ds[ds.scenes.index("test_0")]["mask"].numpy()
    np.testing.assert_array_equal(tile, ds.read_labels("test_0"))
    assert (tile[nine] == 255).all()


@pytest.mark.parametrize(
    ("name", "overrides", "expected"),
    [
        (
            "rgb",  # colour masks with palette: null
            ["data.num_classes=4"],
            [
                r"train/masks/train_0\.tif is a 3-band mask \(colours found: \(0, 0, 0\), ",
                r"palette is null",
                r"data\.dataset_kwargs\.palette=\[\[R, G, B\], \.\.\.\]",
            ],
        ),
        (
            "binary",  # 0/255 masks read as class indices
            ["data.num_classes=2"],
            [
                r"train/masks/train_0\.png \(and 1 more mask files\): masks hold only the values 0 "
                r"and 255",
                r"ignore_index=255",
                r"data\.dataset_kwargs\.palette=\[0,255\]",
            ],
        ),
        (
            "rgb",  # the palette does not fit the number of classes
            ["data.num_classes=6", "data.dataset_kwargs.palette=[[0,0,0],[255,0,0]]"],
            [r"data\.dataset_kwargs\.palette has 2 entries but data\.num_classes=6"],
        ),
    ],
)
def test_ambiguous_masks_are_refused_in_one_line(name, overrides, expected, tmp_path):
    root = tmp_path / "data"
    make_convention_root(root, name)
    res = script(
        "finetune.py",
        "data=folder",
        f"data.root={root}",
        *overrides,
        "data.tile_size=64",
        *TINY_FINETUNE,
        f"hydra.run.dir={tmp_path / 'ft'}",
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ")
    for pattern in expected:
        assert re.search(pattern, line), line


def test_inspect_data_prints_the_fixture_histogram_and_warns(tmp_path):
    root = tmp_path / "data"
    conv = make_convention_root(root, "index")
    for split in SPLITS:  # 12-bit values stored as uint16: 1/16 of the range
        for path in (root / split / "images").iterdir():
            with rasterio.open(path) as src:
                image = src.read().astype(np.uint16) * 16
            write_raster(path, image)
    res = script(
        "inspect_data.py",
        "data=folder",
        f"data.root={root}",
        "data.num_classes=4",  # one class more than the masks hold
        "data.tile_size=64",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    sections = re.split(r"^== split ", out, flags=re.M)[1:]
    assert [s.split(":")[0] for s in sections] == list(SPLITS)
    for split, text in zip(SPLITS, sections, strict=True):
        assert text.startswith(f"{split}: 2 scenes, 2 tiles of 64 px")
        rows = re.findall(r"^  (\d) class_\d +([\d,]+) +([\d.]+)$", text, flags=re.M)
        expected = [*conv.counts(split).tolist(), 0]
        assert [int(n.replace(",", "")) for _, n, _ in rows] == expected
        labeled = sum(expected)
        assert [float(p) for _, _, p in rows] == [round(100 * n / labeled, 2) for n in expected]
        ignored = re.search(r"^  ignored +([\d,]+) +([\d.]+)", text, flags=re.M)
        assert int(ignored.group(1).replace(",", "")) == 2 * 64 * 64 - labeled
        assert f"WARNING: split '{split}': class 3 (class_3) never occurs in its masks" in text
        assert re.search(
            rf"WARNING: split '{split}': band B1 \(uint16\) uses only \d+\.\.\d+ of 0\.\.65535",
            text,
        )
    report = json.loads((tmp_path / "run" / "inspection.json").read_text())
    assert report["splits"]["test"]["class_counts"] == [*conv.counts("test").tolist(), 0]


def test_all_nodata_tiles_are_left_out_of_pretraining(tmp_path):
    root = tmp_path / "data"
    r, c = np.mgrid[0:64, 0:128]
    for i in range(2):
        image = (20 + (r * 3 + c * 5 + 40 * np.arange(3)[:, None, None] + i) % 200).astype(np.uint8)
        if i == 0:
            image[:, :, 64:] = 0  # the right tile of the first image holds no data
        write_raster(root / "train" / "images" / f"t{i}.tif", image, nodata=0)
    res = script(
        "pretrain.py",
        "data=folder",
        f"data.root={root}",
        "data.num_classes=2",
        "data.tile_size=64",
        "data.batch_size=2",
        "data.num_workers=0",
        "model.encoder=resnet18",
        "augment.size=64",
        "augment.region_size=16",
        "trainer=cpu",
        "trainer.max_steps=1",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout + res.stderr
    assert "split 'train': left out 1 of 4 tiles that are entirely nodata" in log
    assert "image nodata from nodata value 0 in bands 1, 2, 3" in log


def test_a_model_that_always_predicts_one_class_scores_oa_equal_to_its_share(tmp_path):
    """Run-level number: evaluate.py checkpoint=X alone, X forced to one class by its head.

    The head's weights are zeroed and its bias is one-hot, so every pixel's logits are the bias
    and the argmax is class c everywhere. OA must then be class c's share of the labelled test
    pixels, computed from the class arrays the fixture's masks were encoded from.
    """
    import torch
    from cli import run_many
    from prediction_fakes import make_run

    root = tmp_path / "data"
    conv = make_convention_root(root, "index")  # 3 classes and some ignored pixels
    # untrained weights and the run record fine-tuning writes (the tile size: tiny_overrides)
    ckpt = make_run(tmp_path / "run", *data_overrides(root, "index")[:-1], root=root)
    blob = torch.load(ckpt, weights_only=True)
    forced = {}
    for c in (0, 2):
        state = dict(blob["state_dict"])
        state["model.net.segmentation_head.0.weight"] = torch.zeros_like(
            state["model.net.segmentation_head.0.weight"]
        )
        state["model.net.segmentation_head.0.bias"] = 10.0 * torch.eye(3)[c]
        forced[c] = tmp_path / f"class{c}.ckpt"
        torch.save({**blob, "state_dict": state}, forced[c])
    runs = [[f"checkpoint={forced[c]}", f"hydra.run.dir={tmp_path / f'ev{c}'}"] for c in forced]
    for res in run_many("evaluate.py", runs, cwd=tmp_path):
        assert res["code"] == 0, res["stderr"][-3000:]
    counts = conv.counts("test")
    for c in forced:
        metrics = json.loads((tmp_path / f"ev{c}" / "metrics.json").read_text())
        assert metrics["num_pixels"] == counts.sum()
        assert metrics["OA"] == pytest.approx(counts[c] / counts.sum(), rel=1e-12)
        predicted = [metrics["per_class"][n]["predicted"] for n in metrics["class_names"]]
        assert predicted == [int(counts.sum()) if k == c else 0 for k in range(3)]
