"""A tile that becomes unreadable mid-run: an error naming the file, or skipped and counted."""

from __future__ import annotations

import shutil

import pytest
import torch
from cli import error_line, run_script, tiny_args
from conftest import compose_config, tiny_overrides

from glcnet.data.bad_tiles import SKIPPED_KEY, SkipBadTiles
from glcnet.data.errors import CorruptRasterError
from glcnet.utils.config import instantiate

SCENES = "+data.dataset_kwargs.scenes=['2_10','2_11']"  # 2 scenes of 4 tiles each


@pytest.fixture()
def root(tiny_sample_root, tmp_path):
    """A private copy of the tiny sample set (the tests damage it)."""
    copy = tmp_path / "data"
    shutil.copytree(tiny_sample_root, copy)
    return copy


def damage(path) -> None:
    """Overwrite the pixel data of a GeoTIFF, leaving its header (read when indexing) intact."""
    with open(path, "r+b") as fh:
        fh.seek(64)
        fh.write(b"\xff" * 8000)


def image_of(root, scene: str):
    return root / "4_Ortho_RGBIR" / f"top_potsdam_{scene}_RGBIR.tif"


def test_tile_damaged_after_indexing_is_named_or_skipped_and_counted(root, tmp_path):
    cfg = compose_config("pretrain", [*tiny_overrides(root, tmp_path), SCENES])
    tiles = instantiate(cfg.data).pretrain_dataset()  # indexed: headers read, pixels not yet
    assert len(tiles) == 8 and tiles.tiles[0][0] == "2_10"
    bad = image_of(root, "2_10")
    damage(bad)
    with pytest.raises(CorruptRasterError, match=str(bad)):
        tiles[0]
    log = tmp_path / "skipped.txt"
    skipping = SkipBadTiles(tiles, log)
    items = [skipping[i] for i in range(len(skipping))]
    assert [int(it[SKIPPED_KEY]) for it in items] == [1, 1, 1, 1, 0, 0, 0, 0]
    for it in items[:4]:  # replaced by the first readable tile, in order
        assert it["scene"] == "2_11" and torch.equal(it["image"], items[4]["image"])
    assert str(bad) in log.read_text()


def test_cli_stops_on_a_damaged_tile_or_skips_it_when_asked(root, tmp_path):
    damage(image_of(root, "2_10"))
    args = [
        *tiny_args(root),
        SCENES,
        "augment.size=32",
        "augment.region_size=16",
        "augment.n_regions=2",
        "diagnostics_every=0",
        "trainer.max_steps=2",  # one epoch: every tile is read once
    ]
    res = run_script("pretrain.py", *args, f"hydra.run.dir={tmp_path / 'a'}", cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]
    line = error_line(res)
    assert line.startswith("error: cannot read window") and str(image_of(root, "2_10")) in line

    run = tmp_path / "b"
    res = run_script(
        "pretrain.py", *args, "data.skip_bad_tiles=true", f"hydra.run.dir={run}", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "skipped tiles: 4 " in res.stdout
    assert str(image_of(root, "2_10")) in (run / "skipped_tiles.txt").read_text()
    assert (run / "pretrained.safetensors").exists()
