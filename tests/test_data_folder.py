"""FolderDataset: users' own GeoTIFF / PNG images with masks of the same stem."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from isprs_fakes import fake_classes, fake_image, fake_label_rgb, write_tif
from own_data_fakes import write_raster
from rasterio.errors import NotGeoreferencedWarning
from torch.utils.data import DataLoader

from glcnet.data.classes import ISPRS_PALETTE, UnknownColorError, display_palette
from glcnet.data.errors import (
    BandCountError,
    ClassMismatchError,
    DataError,
    EmptyFolderError,
    EmptySplitError,
    MaskSpecError,
    MissingDataError,
)
from glcnet.data.folder import FolderDataset, seeded_split
from glcnet.data.masks import MaskSpec

SIZE = (24, 40)


def write_png(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = data.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path, "w", driver="PNG", width=width, height=height, count=count, dtype="uint8"
        ) as dst:
            dst.write(data)
    return path


def image_of(stem: str) -> np.ndarray:
    return fake_image(f"area{len(stem)}", "RGB", 3, SIZE)


def make_folder(
    base: Path,
    stems: list[str],
    colour: bool = False,
    png: tuple[str, ...] = (),
    images: str = "images",
    masks: str | None = "masks",
) -> Path:
    """Images (and masks: class-index or colour) named by stem; stems in ``png`` are PNG files."""
    for i, stem in enumerate(stems):
        scene = f"area{i + 1}"
        image = fake_image(scene, "RGB", 3, SIZE)
        ext = ".png" if stem in png else ".tif"
        (write_png if ext == ".png" else write_tif)(base / images / f"{stem}{ext}", image)
        if masks is not None:
            mask = fake_label_rgb(scene, False, SIZE) if colour else fake_classes(scene, SIZE)
            mask = mask.astype(np.uint8).reshape(-1, *SIZE)
            (write_png if ext == ".png" else write_tif)(base / masks / f"{stem}{ext}", mask)
    return base


def expected_image(i: int) -> np.ndarray:
    return fake_image(f"area{i + 1}", "RGB", 3, SIZE).astype(np.float32) / 255


STEMS = [f"tile_{k:02d}" for k in range(10)]


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    root = tmp_path_factory.mktemp("flat")
    return make_folder(root, STEMS, png=("tile_03", "tile_07"))


def test_seeded_split_is_deterministic_disjoint_and_complete():
    a = seeded_split(STEMS, 0.3, seed=0)
    assert a == seeded_split(list(reversed(STEMS)), 0.3, seed=0)  # input order does not matter
    assert len(a["val"]) == 3 and len(a["train"]) == 7
    assert sorted(a["train"] + a["val"]) == STEMS
    assert seeded_split(STEMS, 0.3, seed=1) != a
    assert seeded_split(STEMS, 0.0, seed=0) == {"train": STEMS, "val": []}
    assert len(seeded_split(STEMS[:2], 0.1, seed=0)["val"]) == 1  # at least one when asked
    assert seeded_split(STEMS[:1], 0.5, seed=0)["val"] == []
    with pytest.raises(ValueError, match="val_fraction"):
        seeded_split(STEMS, 1.0, seed=0)


def test_flat_folder_tiles_pixels_and_masks(flat):
    ds = FolderDataset(flat, split="all", num_classes=6, tile_size=16, stride=12)
    assert ds.scenes == STEMS and ds.num_classes == 6
    assert ds.class_names == tuple(f"class_{k}" for k in range(6))  # neutral, not ISPRS
    assert ds.band_indexes == (1, 2, 3) and ds.band_names == ("B1", "B2", "B3")
    per_scene = [(r, c) for r in (0, 8) for c in (0, 12, 24)]
    assert ds.tiles == [(s, r, c) for s in STEMS for r, c in per_scene]
    for i in range(0, len(ds), 5):
        item = ds[i]
        k = STEMS.index(item["scene"])
        r, c, h, w = item["window"].tolist()
        np.testing.assert_array_equal(
            item["image"].numpy(), expected_image(k)[:, r : r + h, c : c + w]
        )
        classes = fake_classes(f"area{k + 1}", SIZE)[r : r + h, c : c + w]
        np.testing.assert_array_equal(item["mask"].numpy(), classes)
    assert ds.image_path("tile_03").endswith("images/tile_03.png")
    assert ds.label_path("tile_03").endswith("masks/tile_03.png")


def test_flat_folder_seeded_splits(flat):
    def scenes(split, **kw):
        return FolderDataset(flat, split=split, num_classes=6, tile_size=16, **kw).scenes

    expected = seeded_split(STEMS, 0.2, seed=3)
    assert scenes("val", val_fraction=0.2, seed=3) == expected["val"]
    assert scenes("train", val_fraction=0.2, seed=3) == expected["train"]
    assert len(scenes("val")) == 1 and len(scenes("train")) == 9
    with pytest.raises(MissingDataError, match="test"):
        scenes("test")
    with pytest.raises(EmptySplitError, match="val"):
        scenes("val", val_fraction=0.0)


def test_split_file(flat, tmp_path):
    spec = {"train": ["tile_01", "tile_05"], "val": ["tile_02"], "test": ["tile_09", "tile_00"]}
    (flat / "split.json").write_text(json.dumps(spec))
    for split, stems in spec.items():
        ds = FolderDataset(flat, split=split, split_file="split.json", num_classes=6, tile_size=16)
        assert ds.scenes == stems
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": ["tile_01", "nope"]}))
    with pytest.raises(MissingDataError, match="nope"):
        FolderDataset(flat, split="train", split_file=bad, num_classes=6, tile_size=16)
    with pytest.raises(DataError, match="'val'"):
        FolderDataset(flat, split="val", split_file=bad, num_classes=6, tile_size=16)
    with pytest.raises(MissingDataError, match="missing.json"):
        FolderDataset(flat, split="val", split_file="missing.json", num_classes=6, tile_size=16)


def test_split_folders(tmp_path):
    make_folder(tmp_path / "train", ["a", "b"], colour=True)
    make_folder(tmp_path / "val", ["c"], colour=True)
    ds = FolderDataset(tmp_path, split="val", tile_size=16, palette=ISPRS_PALETTE)
    assert ds.scenes == ["c"]
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), fake_classes("area1", SIZE)[:16, :16])
    kw = {"tile_size": 16, "palette": ISPRS_PALETTE}
    assert FolderDataset(tmp_path, split="train", **kw).scenes == ["a", "b"]
    assert FolderDataset(tmp_path, split="all", **kw).scenes == ["a", "b", "c"]
    with pytest.raises(MissingDataError, match="no test/ folder"):
        FolderDataset(tmp_path, split="test", **kw)
    make_folder(tmp_path / "test", ["a"], colour=True)
    with pytest.raises(DataError, match=r"\['a'\].*more than one split folder"):
        FolderDataset(tmp_path, split="all", **kw)


def test_band_selection_and_unlabeled_mode(tmp_path):
    make_folder(tmp_path, ["x", "y"], masks=None)
    ds = FolderDataset(
        tmp_path, split="all", bands=[3, 1], labeled=False, tile_size=16, num_classes=6
    )
    assert ds.in_channels == 2 and ds.band_names == ("B3", "B1") and "mask" not in ds[0]
    np.testing.assert_array_equal(ds[0]["image"].numpy(), expected_image(0)[[2, 0], :16, :16])
    with pytest.raises(MissingDataError, match=r"mask folder not found: .*masks"):
        FolderDataset(tmp_path, split="all", tile_size=16, num_classes=6)
    write_tif(tmp_path / "masks" / "y.tif", fake_classes("area2", SIZE).astype(np.uint8)[None])
    with pytest.raises(MissingDataError, match=r"no mask for image .*x\.tif"):
        FolderDataset(tmp_path, split="all", num_classes=6, tile_size=16)
    ds = FolderDataset(tmp_path, split="all", labeled=False, tile_size=16, num_classes=6)
    assert ds.label_path("y").endswith("masks/y.tif")  # known even when not read
    with pytest.raises(BandCountError, match="has 3 band"):
        FolderDataset(tmp_path, split="all", bands=[4], labeled=False, tile_size=16, num_classes=6)
    with pytest.raises(ValueError, match="1-based"):
        FolderDataset(
            tmp_path, split="all", bands=[0, 1], labeled=False, tile_size=16, num_classes=6
        )


def test_tile_data_style_arguments_and_workers(flat):
    # the keyword arguments glcnet.data.tile_data.TileData passes for data=folder
    ds = FolderDataset(
        root=str(flat),
        split="train",
        bands=[1, 2, 3],
        tile_size=16,
        stride=None,
        eroded=False,
        labeled=True,
        unknown_colors="error",
        ignore_index=255,
        image_dir="images",
        mask_dir="masks",
        palette=None,
        num_classes=6,
        class_names=None,
    )
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 16, 16) and batch["mask"].dtype == torch.int64
    assert torch.equal(batch["image"][1], ds[1]["image"])


def test_index_masks_with_unknown_values(tmp_path):
    make_folder(tmp_path, ["m"])
    mask = fake_classes("area1", SIZE).astype(np.uint8)[None].copy()
    mask[0, 1, 2] = 9
    mask[0, 3, 3] = 255  # ignore_index is a valid mask value
    path = write_tif(tmp_path / "masks" / "m.tif", mask)
    ds = FolderDataset(tmp_path, split="all", num_classes=6, tile_size=16)
    with pytest.raises(UnknownColorError, match=re.escape(str(path)) + r".*\[9\]"):
        ds[0]
    ds = FolderDataset(tmp_path, split="all", num_classes=6, tile_size=16, unknown_colors="ignore")
    expected = mask[0, :16, :16].astype(np.int64)
    expected[1, 2] = 255
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), expected)


def test_colour_masks_eroded_black_is_ignored(tmp_path):
    make_folder(tmp_path, ["m"], colour=True)
    rgb = fake_label_rgb("area1", False, SIZE)
    rgb[:, 0, 0] = 0
    write_tif(tmp_path / "masks" / "m.tif", rgb)
    with pytest.raises(UnknownColorError, match=r"\(0, 0, 0\)"):
        FolderDataset(tmp_path, split="all", tile_size=16, palette=ISPRS_PALETTE)[0]
    ds = FolderDataset(tmp_path, split="all", tile_size=16, eroded=True, palette=ISPRS_PALETTE)
    mask = ds[0]["mask"]
    assert mask[0, 0] == 255 and mask[0, 1] == fake_classes("area1", SIZE)[0, 1]


def test_bad_folders(tmp_path):
    with pytest.raises(MissingDataError, match="nowhere"):
        FolderDataset(tmp_path / "nowhere")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    with pytest.raises(EmptyFolderError, match=re.escape(str(tmp_path / "images"))):
        FolderDataset(tmp_path, num_classes=6)
    with pytest.raises(MissingDataError, match="pictures"):
        FolderDataset(tmp_path, image_dir="pictures", num_classes=6)
    make_folder(tmp_path, ["a"])
    write_png(tmp_path / "images" / "a.png", image_of("a"))
    with pytest.raises(DataError, match="share the stem 'a'"):
        FolderDataset(tmp_path, split="all", num_classes=6)
    with pytest.raises(ValueError, match="split"):
        FolderDataset(tmp_path, split="everything", num_classes=6)


# --- classes from one source, plain-data attributes, mask conventions ---------------------------


def test_class_settings_must_agree(flat):
    def build(**kw):
        return FolderDataset(flat, split="all", tile_size=16, **kw)

    ds = build(class_names=["a", "b", "c", "d", "e", "f"])  # K from the names
    assert ds.num_classes == 6 and ds.class_names == ("a", "b", "c", "d", "e", "f")
    with pytest.raises(
        ClassMismatchError,
        match=r"data\.class_names has 2 names but data\.num_classes=6: give one per class, "
        r"or set data\.num_classes=2",
    ):
        build(num_classes=6, class_names=["a", "b"])
    with pytest.raises(
        ClassMismatchError, match=r"palette has 6 entries but data\.class_names has 2"
    ):
        build(class_names=["a", "b"], palette=ISPRS_PALETTE)
    with pytest.raises(ClassMismatchError, match="needs the number of classes"):
        build()
    with pytest.raises(ClassMismatchError, match="holds a name twice"):
        build(class_names=["a", "a", "c", "d", "e", "f"])


def test_describe_is_plain_data_for_checkpoints(flat):
    ds = FolderDataset(flat, split="all", tile_size=16, num_classes=6, bands=[3, 1])
    record = ds.describe()
    assert record == {
        "dataset": "FolderDataset",
        "band_indexes": [3, 1],
        "band_names": ["B3", "B1"],
        "num_classes": 6,
        "class_names": [f"class_{k}" for k in range(6)],
        "palette": [list(c) for c in display_palette(6)],
        "ignore_index": 255,
        "mask_spec": MaskSpec.from_config(6).to_dict(),
        "image_nodata": "auto",
        "tile_size": 16,
        "stride": 16,
        "eroded": False,
    }
    assert json.loads(json.dumps(record)) == record


def test_paletted_masks_give_classes_and_display_colours(tmp_path):
    make_folder(tmp_path, ["p"], masks=None)
    table = {0: (9, 8, 7, 255), 1: (200, 0, 0, 255), 2: (0, 200, 0, 255)}
    classes = (fake_classes("area1", SIZE) % 3).astype(np.uint8)
    write_raster(tmp_path / "masks" / "p.png", classes[None], colormap=table)
    ds = FolderDataset(tmp_path, split="all", tile_size=16, num_classes=3)
    np.testing.assert_array_equal(ds.read_labels("p"), classes)
    assert ds.palette == ((9, 8, 7), (200, 0, 0), (0, 200, 0))
    with pytest.raises(MaskSpecError, match=r"p\.png is a 1-band mask with a colour table"):
        FolderDataset(
            tmp_path, split="all", tile_size=16, palette=[[9, 8, 7], [1, 1, 1], [2, 2, 2]]
        )


def test_binary_scan_stops_at_the_first_index_value(tmp_path, monkeypatch):
    stems = ["a", "b", "c"]
    make_folder(tmp_path, stems, masks=None)
    for stem, values in zip(stems, ([0, 255], [0, 255], [0, 1]), strict=True):
        mask = np.full(SIZE, values[0], np.uint8)
        mask[5:, 7:] = values[1]
        write_tif(tmp_path / "masks" / f"{stem}.tif", mask[None])
    ds = FolderDataset(tmp_path, split="all", tile_size=16, num_classes=2)  # "c" holds a 1
    assert ds.read_labels("a")[10, 10] == 255  # 255 is ignored, as index masks say
    monkeypatch.setattr("glcnet.data.folder.VALUE_SCAN_PIXELS", 2 * SIZE[0] * SIZE[1])
    with pytest.raises(MaskSpecError, match=r"a\.tif \(and 1 more mask files\): masks hold only"):
        FolderDataset(tmp_path, split="all", tile_size=16, num_classes=2)  # budget ends before c
    ds = FolderDataset(tmp_path, split="all", tile_size=16, num_classes=2, ignore_values=[255])
    assert ds.num_classes == 2
