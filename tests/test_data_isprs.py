"""Potsdam and Vaihingen data sets on tiny fake roots in the official layouts."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import rasterio
import torch
from isprs_fakes import (
    POTSDAM_FILES,
    SIZE,
    fake_boundary,
    fake_classes,
    fake_image,
    fake_label_rgb,
    make_potsdam_root,
    make_vaihingen_root,
    write_tif,
)
from torch.utils.data import DataLoader, default_collate

from glcnet.data.classes import ISPRS_CLASSES, ISPRS_PALETTE, UnknownColorError
from glcnet.data.errors import (
    BandCountError,
    ClassMismatchError,
    CorruptRasterError,
    DuplicateSceneError,
    EmptySplitError,
    MissingDataError,
    SceneTooSmallError,
    SizeMismatchError,
)
from glcnet.data.isprs import (
    POTSDAM_TEST_SCENES,
    POTSDAM_TRAIN_SCENES,
    POTSDAM_VAL_SCENES,
    VAIHINGEN_TEST_SCENES,
    VAIHINGEN_TRAIN_SCENES,
    VAIHINGEN_VAL_SCENES,
    Potsdam,
    Vaihingen,
    resolve_scenes,
)

TWO = ["2_10", "2_11"]


def crop(a: np.ndarray, window) -> np.ndarray:
    """Crop the last two axes of ``a`` to window [row, col, h, w]."""
    r, c, h, w = (int(v) for v in window)
    return a[..., r : r + h, c : c + w]


@pytest.fixture(scope="module", params=["extracted", "zipped"])
def potsdam_root(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"potsdam_{request.param}")
    return make_potsdam_root(root, TWO, zipped=request.param == "zipped")


# --- tiles, windows, pixels ----------------------------------------------------------------------


def test_tile_positions_and_counts(potsdam_root):
    ds = Potsdam(potsdam_root, scenes=TWO, tile_size=16)
    grid = [(r, c) for r in (0, 16, 24) for c in (0, 16, 32, 40)]  # edge tiles shifted back
    assert ds.tiles == [(s, r, c) for s in TWO for r, c in grid]
    assert len(ds) == 24 and ds.scenes == TWO
    assert ds.scene_size("2_10") == SIZE
    overlap = Potsdam(potsdam_root, scenes=TWO, tile_size=16, stride=8)
    assert len(overlap) == 2 * 4 * 6
    assert overlap.tiles[:6] == [("2_10", 0, c) for c in (0, 8, 16, 24, 32, 40)]
    item = overlap[7]
    assert item["scene"] == "2_10" and item["window"].tolist() == [8, 8, 16, 16]


def test_items_equal_crops_of_the_whole_scene(potsdam_root):
    ds = Potsdam(potsdam_root, scenes=TWO, tile_size=16, stride=12)
    full = {}
    for scene in TWO:  # the whole scene read independently, straight through rasterio
        with rasterio.open(ds.image_path(scene)) as src:
            full[scene] = src.read()
        np.testing.assert_array_equal(full[scene], fake_image(scene, "RGBIR", 4))
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (4, 16, 16)
        assert item["mask"].dtype == torch.int64 and item["mask"].shape == (16, 16)
        assert item["window"].dtype == torch.int64
        scene, row, col = ds.tiles[i]
        assert item["scene"] == scene and item["window"].tolist() == [row, col, 16, 16]
        expected = crop(full[scene], item["window"]).astype(np.float32) / 255.0
        np.testing.assert_array_equal(item["image"].numpy(), expected)
        np.testing.assert_array_equal(
            item["mask"].numpy(), crop(fake_classes(scene), [row, col, 16, 16])
        )
    assert ds[-1]["window"].tolist() == ds[len(ds) - 1]["window"].tolist()
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_eroded_labels_map_boundaries_to_ignore(potsdam_root):
    ds = Potsdam(potsdam_root, scenes=["2_11"], tile_size=16, eroded=True, ignore_index=99)
    for i in range(len(ds)):
        item = ds[i]
        win = item["window"]
        expected = np.where(crop(fake_boundary("2_11"), win), 99, crop(fake_classes("2_11"), win))
        np.testing.assert_array_equal(item["mask"].numpy(), expected)
    assert (ds[0]["mask"] == 99).any()
    assert ds.label_path("2_11").endswith("top_potsdam_2_11_label_noBoundary.tif")
    assert ds.label_path("2_11", eroded=False).endswith("top_potsdam_2_11_label.tif")


def test_full_labels_reject_black_boundaries(tmp_path):
    # black is a boundary only in the eroded labels; in the full labels it is off-palette
    make_potsdam_root(tmp_path, TWO, products=("RGBIR", "eroded"))
    (tmp_path / "5_Labels_all_noBoundary").rename(tmp_path / "5_Labels_all")
    for p in (tmp_path / "5_Labels_all").rglob("*.tif"):
        p.rename(p.with_name(p.name.replace("_noBoundary", "")))
    ds = Potsdam(tmp_path, scenes=TWO, tile_size=16)
    with pytest.raises(UnknownColorError, match=r"\(0, 0, 0\)"):
        ds[0]


def test_attributes(potsdam_root):
    ds = Potsdam(potsdam_root, scenes=TWO, tile_size=16)
    assert ds.num_classes == 6 and len(ds.class_names) == 6 and ds.class_names[1] == "building"
    assert ds.palette[1] == (0, 0, 255)
    assert ds.in_channels == 4 and ds.band_names == ("R", "G", "B", "IR")
    assert ds.band_indexes == (1, 2, 3, 4)
    for scene in TWO:  # both paths open with rasterio and carry the georeference
        for path in (ds.image_path(scene), ds.label_path(scene)):
            with rasterio.open(path) as src:
                assert src.crs.to_epsg() == 32633 and src.transform.a == pytest.approx(0.05)
    zipped = "zipped" in potsdam_root.name
    assert ds.image_path("2_10").startswith("/vsizip/") == zipped


# --- band modes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def all_products_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("potsdam_all_products")
    return make_potsdam_root(root, TWO, products=("RGB", "IRRG", "RGBIR"), zipped=["IRRG"])


@pytest.mark.parametrize(
    ("bands", "product", "indexes", "names"),
    [
        ("RGBIR", "RGBIR", (1, 2, 3, 4), ("R", "G", "B", "IR")),
        ("RGB", "RGB", (1, 2, 3), ("R", "G", "B")),
        ("irrg", "IRRG", (1, 2, 3), ("IR", "R", "G")),
    ],
)
def test_band_modes_read_their_own_product(all_products_root, bands, product, indexes, names):
    ds = Potsdam(all_products_root, scenes=TWO, bands=bands, tile_size=16, labeled=False)
    assert ds.band_indexes == indexes and ds.band_names == names and ds.in_channels == len(names)
    assert ds.image_product.endswith(product)
    item = ds[5]
    source = fake_image(item["scene"], product, 4 if product == "RGBIR" else 3)
    expected = crop(source, item["window"]).astype(np.float32) / 255
    np.testing.assert_array_equal(item["image"].numpy(), expected)


@pytest.mark.parametrize(
    ("bands", "order", "names"),
    [("RGB", [0, 1, 2], ("R", "G", "B")), ("IRRG", [3, 0, 1], ("IR", "R", "G"))],
)
def test_band_modes_derived_from_rgbir(potsdam_root, bands, order, names):
    ds = Potsdam(potsdam_root, scenes=TWO, bands=bands, tile_size=16, labeled=False)
    assert ds.band_names == names and ds.band_indexes == tuple(i + 1 for i in order)
    assert ds.image_product == "4_Ortho_RGBIR"
    for i in (0, 11, 23):
        item = ds[i]
        rgbir = fake_image(item["scene"], "RGBIR", 4)
        expected = crop(rgbir[order], item["window"]).astype(np.float32) / 255
        np.testing.assert_array_equal(item["image"].numpy(), expected)


def test_uint16_images_are_scaled_by_65535(tmp_path):
    make_potsdam_root(tmp_path, TWO, products=("RGBIR",), dtype="uint16")
    ds = Potsdam(tmp_path, scenes=TWO, tile_size=16, labeled=False)
    item = ds[3]
    raw = crop(fake_image(item["scene"], "RGBIR", 4, dtype="uint16"), item["window"])
    np.testing.assert_allclose(item["image"].numpy(), raw / 65535.0, rtol=1e-6)
    assert float(item["image"].max()) <= 1.0


# --- layouts -------------------------------------------------------------------------------------


def test_unlabeled_mode_needs_only_the_image_archive(tmp_path):
    make_potsdam_root(tmp_path, TWO, zipped=True, products=("RGBIR",))
    ds = Potsdam(tmp_path, scenes=TWO, tile_size=16, labeled=False)
    assert len(ds) == 24 and "mask" not in ds[0]
    with pytest.raises(MissingDataError, match="5_Labels_all"):
        Potsdam(tmp_path, scenes=TWO, tile_size=16, labeled=True)


def test_extra_folder_level_mixed_zip_and_folder_and_leading_zeros(tmp_path):
    make_potsdam_root(
        tmp_path, ["6_7", "2_10"], zipped=["RGBIR"], extra_level=True, file_ids={"6_7": "6_07"}
    )
    ds = Potsdam(tmp_path, scenes=["6_07", "2_10"], tile_size=16)
    assert ds.scenes == ["6_7", "2_10"]
    assert ds.image_path("6_7").endswith("4_Ortho_RGBIR/4_Ortho_RGBIR/top_potsdam_6_07_RGBIR.tif")
    assert ds.image_path("6_7").startswith("/vsizip/")
    assert not ds.label_path("6_7").startswith("/vsizip/")
    item = ds[0]
    np.testing.assert_array_equal(item["mask"].numpy(), crop(fake_classes("6_7"), item["window"]))


def test_extracted_folder_wins_over_zip_and_zip_fills_gaps(tmp_path):
    make_potsdam_root(tmp_path, TWO, zipped=True, products=("RGBIR",))
    make_potsdam_root(tmp_path, ["2_10"], zipped=False, products=("RGBIR",))
    ds = Potsdam(tmp_path, scenes=TWO, tile_size=16, labeled=False)
    assert not ds.image_path("2_10").startswith("/vsizip/")
    assert ds.image_path("2_11").startswith("/vsizip/")


# --- archives extracted in place (unzip '*.zip' in the root), mixed with the other layouts ---------


def assert_reads_fakes(ds, scenes, eroded=False, product="RGBIR"):
    """Every tile's image and mask equal the fake files' closed-form values."""
    assert ds.scenes == scenes
    for i in range(0, len(ds), 5):
        item = ds[i]
        s, w = item["scene"], item["window"]
        count = len(ds.band_indexes)
        image = crop(fake_image(s, product, 4 if product == "RGBIR" else count), w)
        image = image[[b - 1 for b in ds.band_indexes]].astype(np.float32) / 255
        np.testing.assert_array_equal(item["image"].numpy(), image)
        expected = crop(fake_classes(s), w)
        if eroded:
            expected = np.where(crop(fake_boundary(s), w), 255, expected)
        np.testing.assert_array_equal(item["mask"].numpy(), expected)


def test_potsdam_extracted_in_place(tmp_path):
    make_potsdam_root(tmp_path, TWO, in_place=True)
    assert (tmp_path / "top_potsdam_2_10_label.tif").is_file()  # torchgeo's layout
    assert (tmp_path / "4_Ortho_RGBIR" / "top_potsdam_2_10_RGBIR.tif").is_file()
    for eroded in (False, True):
        ds = Potsdam(tmp_path, scenes=TWO, tile_size=16, eroded=eroded)
        assert ds.label_path("2_10") == str(
            (tmp_path / f"top_potsdam_2_10_label{'_noBoundary' if eroded else ''}.tif").resolve()
        )
        assert_reads_fakes(ds, TWO, eroded=eroded)


@pytest.mark.parametrize(
    "layout",
    [
        {"in_place": ["labels"], "zipped": ["RGBIR", "eroded"]},
        {"in_place": ["RGBIR", "eroded"], "zipped": ["labels"]},
        {"in_place": ["labels"], "zipped": False},  # images and eroded labels: folder per archive
    ],
)
def test_potsdam_layouts_mixed_freely(tmp_path, layout):
    make_potsdam_root(tmp_path, TWO, **layout)
    assert_reads_fakes(Potsdam(tmp_path, scenes=TWO, tile_size=16), TWO)
    assert_reads_fakes(Potsdam(tmp_path, scenes=TWO, tile_size=16, eroded=True), TWO, eroded=True)


def test_potsdam_in_place_labels_fill_gaps_of_a_zip_and_only_the_root_counts(tmp_path):
    make_potsdam_root(tmp_path, TWO, zipped=True, products=("RGBIR", "labels"))
    make_potsdam_root(tmp_path, ["2_10"], in_place=True, products=("labels",))
    ds = Potsdam(tmp_path, scenes=TWO, tile_size=16)
    assert not ds.label_path("2_10").startswith("/vsizip/")  # extracted wins over the zip
    assert ds.label_path("2_11").startswith("/vsizip/")  # the zip fills the gap
    assert_reads_fakes(ds, TWO)
    # a label file deeper than the root (e.g. in an unrelated folder) is not an in-place copy
    make_potsdam_root(tmp_path, ["2_12"], products=("RGBIR",))
    make_potsdam_root(tmp_path / "elsewhere", ["2_12"], in_place=True, products=("labels",))
    with pytest.raises(MissingDataError, match=r"top_potsdam_2_12_label\.tif not found"):
        Potsdam(tmp_path, scenes=["2_12"], tile_size=16)


def test_two_extracted_copies_of_one_scene_file_are_refused(tmp_path):
    make_potsdam_root(tmp_path, TWO, products=("RGBIR", "labels"))  # folder per archive
    make_potsdam_root(tmp_path, ["2_11"], in_place=True, products=("labels",))
    in_root = (tmp_path / "top_potsdam_2_11_label.tif").resolve()
    in_folder = (tmp_path / "5_Labels_all" / "top_potsdam_2_11_label.tif").resolve()
    with pytest.raises(
        DuplicateSceneError,
        match=rf"{re.escape(str(in_folder))} and {re.escape(str(in_root))} are two copies",
    ):
        Potsdam(tmp_path, scenes=TWO, tile_size=16)
    in_root.unlink()
    in_root.symlink_to(in_folder)  # the same file twice is no ambiguity
    assert_reads_fakes(Potsdam(tmp_path, scenes=TWO, tile_size=16), TWO)


@pytest.mark.parametrize(
    "layout",
    [
        {"in_place": True},
        {"in_place": ["images"], "zipped": True},
        {"in_place": ["labels", "eroded"], "zipped": True},
        {"in_place": ["images", "eroded"], "zipped": False},
    ],
)
def test_vaihingen_extracted_in_place_and_mixed(tmp_path, layout):
    make_vaihingen_root(tmp_path, ["area1", "area3"], **layout)
    if layout.get("in_place") is True:
        assert (tmp_path / "top" / "top_mosaic_09cm_area1.tif").is_file()
        assert (tmp_path / "top_mosaic_09cm_area1.tif").is_file()  # ground truth in the root
        assert (tmp_path / "gts_for_participants" / "top_mosaic_09cm_area1.tif").is_file()
    for eroded in (False, True):
        ds = Vaihingen(tmp_path, scenes=["area1", "area3"], tile_size=16, eroded=eroded)
        assert "/top/top_mosaic_09cm_area3.tif" in ds.image_path("area3")
        assert_reads_fakes(ds, ["area1", "area3"], eroded=eroded, product="IMAGES")


def test_missing_in_place_files_name_every_place_looked(tmp_path):
    make_potsdam_root(tmp_path, TWO, products=("RGBIR",))
    with pytest.raises(
        MissingDataError,
        match=r"5_Labels_all\.zip or 5_Labels_all/ or top_potsdam_\*_label\.tif files in the root",
    ):
        Potsdam(tmp_path, scenes=TWO, tile_size=16)


@pytest.mark.parametrize("zipped", [False, True])
def test_vaihingen_layout_skips_the_decoy_ground_truth(tmp_path, zipped):
    make_vaihingen_root(tmp_path, ["area1", "area3"], zipped=zipped)
    ds = Vaihingen(tmp_path, scenes=["area1", 3], tile_size=16, eroded=True)
    assert ds.scenes == ["area1", "area3"] and ds.band_names == ("IR", "R", "G")
    assert "/top/top_mosaic_09cm_area3.tif" in ds.image_path("area3")
    for i in (0, 5, 13):
        item = ds[i]
        s = item["scene"]
        image = crop(fake_image(s, "IMAGES", 3), item["window"]).astype(np.float32) / 255
        np.testing.assert_array_equal(item["image"].numpy(), image)
        expected = np.where(
            crop(fake_boundary(s), item["window"]), 255, crop(fake_classes(s), item["window"])
        )
        np.testing.assert_array_equal(item["mask"].numpy(), expected)


def test_vaihingen_accepts_only_irrg(tmp_path):
    make_vaihingen_root(tmp_path, ["area1"], products=("images",))
    assert Vaihingen(tmp_path, scenes=["area1"], tile_size=16, labeled=False).in_channels == 3
    for bands in ("RGB", "RGBIR", [1, 2, 3]):
        with pytest.raises(ValueError, match="IRRG"):
            Vaihingen(tmp_path, bands=bands, scenes=["area1"], tile_size=16, labeled=False)


# --- splits --------------------------------------------------------------------------------------


def test_resolve_scenes_pure():
    train, test, val = ["a", "b", "c", "d"], ["t1", "t2"], ["c", "a"]
    assert resolve_scenes("train", train, test, val) == ["b", "d"]
    assert resolve_scenes("val", train, test, val) == ["a", "c"]
    assert resolve_scenes("test", train, test, val) == ["t1", "t2"]
    assert resolve_scenes("all", train, test, val, exclude=["b", "t2"]) == ["a", "c", "d", "t1"]
    assert resolve_scenes("test", train, test, val, scenes=["d", "t1", "d"]) == ["d", "t1"]
    with pytest.raises(ValueError, match="t1"):
        resolve_scenes("train", train, test, ["t1"])
    with pytest.raises(ValueError, match="split"):
        resolve_scenes("training", train, test, val)


@pytest.fixture(scope="module")
def full_potsdam(tmp_path_factory):
    root = tmp_path_factory.mktemp("potsdam_full")
    scenes = POTSDAM_TRAIN_SCENES + POTSDAM_TEST_SCENES
    return make_potsdam_root(root, scenes, size=(16, 20), zipped=True, products=("RGBIR", "labels"))


def test_potsdam_split_contents(full_potsdam):
    def scenes(**kw):
        return Potsdam(full_potsdam, tile_size=16, labeled=False, **kw).scenes

    assert len(POTSDAM_TRAIN_SCENES) == 24 and len(POTSDAM_TEST_SCENES) == 14
    train, val = scenes(split="train"), scenes(split="val")
    assert val == ["2_12", "4_11", "6_9"] == list(POTSDAM_VAL_SCENES)
    assert len(train) == 21 and not set(train) & set(val)
    assert set(train) | set(val) == set(POTSDAM_TRAIN_SCENES)
    assert scenes(split="test") == list(POTSDAM_TEST_SCENES)
    assert scenes(split="all") == list(POTSDAM_TRAIN_SCENES + POTSDAM_TEST_SCENES)
    assert "7_10" not in scenes(split="train", exclude_scenes=["7_10"])
    assert scenes(split="val", val_scenes=["7_7", "2_10"]) == ["2_10", "7_7"]
    assert "2_12" in scenes(split="train", val_scenes=["7_7"])
    assert scenes(split="test", scenes=["5_15", "2_10"]) == ["5_15", "2_10"]
    ds = Potsdam(full_potsdam, split="test", tile_size=16)
    assert len(ds) == 14 * 2 and ds[27]["scene"] == "7_13"
    with pytest.raises(ValueError, match="2_13"):
        Potsdam(full_potsdam, split="val", val_scenes=["2_13"], tile_size=16, labeled=False)
    with pytest.raises(EmptySplitError, match="val"):
        Potsdam(full_potsdam, split="val", exclude_scenes=val, tile_size=16, labeled=False)
    with pytest.raises(ValueError, match="not a Potsdam scene id"):
        Potsdam(full_potsdam, scenes=["area1"], tile_size=16, labeled=False)
    with pytest.raises(ValueError, match="split"):
        Potsdam(full_potsdam, split="validation", tile_size=16, labeled=False)


def test_vaihingen_split_contents(tmp_path):
    make_vaihingen_root(
        tmp_path,
        VAIHINGEN_TRAIN_SCENES + VAIHINGEN_TEST_SCENES,
        size=(16, 16),
        products=("images",),
    )

    def scenes(split):
        return Vaihingen(tmp_path, split=split, tile_size=16, labeled=False).scenes

    assert len(VAIHINGEN_TRAIN_SCENES) == 16 and len(VAIHINGEN_TEST_SCENES) == 17
    assert scenes("val") == list(VAIHINGEN_VAL_SCENES) == ["area11", "area23", "area34"]
    assert len(scenes("train")) == 13 and "area11" not in scenes("train")
    assert scenes("test") == list(VAIHINGEN_TEST_SCENES) and len(scenes("all")) == 33
    numbers = sorted(int(s[4:]) for s in scenes("all"))
    assert numbers == [n for n in range(1, 39) if n not in (9, 18, 19, 25, 36)]


# --- batching and workers ------------------------------------------------------------------------


def test_default_collate_and_workers(potsdam_root):
    ds = Potsdam(potsdam_root, scenes=TWO, tile_size=16, eroded=True)
    batch = default_collate([ds[i] for i in range(5)])
    assert batch["image"].shape == (5, 4, 16, 16) and batch["mask"].shape == (5, 16, 16)
    assert batch["window"].shape == (5, 4) and batch["scene"] == ["2_10"] * 5
    direct = [ds[i] for i in range(len(ds))]  # leaves open handles in this process before forking
    loader = DataLoader(ds, batch_size=5, num_workers=2, shuffle=False)
    got = list(loader)
    assert sum(len(b["scene"]) for b in got) == len(ds)
    images = torch.cat([b["image"] for b in got])
    masks = torch.cat([b["mask"] for b in got])
    assert torch.equal(images, torch.stack([d["image"] for d in direct]))
    assert torch.equal(masks, torch.stack([d["mask"] for d in direct]))


def test_pickled_data_set_reads_the_same(potsdam_root):
    ds = Potsdam(potsdam_root, scenes=TWO, tile_size=16)
    first = ds[4]
    clone = pickle.loads(pickle.dumps(ds))
    again = clone[4]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["mask"], again["mask"])


# --- bad input -----------------------------------------------------------------------------------


def test_missing_root(tmp_path):
    with pytest.raises(MissingDataError, match=re.escape(str(tmp_path / "nowhere"))):
        Potsdam(tmp_path / "nowhere", scenes=TWO)
    with pytest.raises(MissingDataError, match="Vaihingen root"):
        Vaihingen(tmp_path / "nowhere")


def test_missing_archive_names_what_was_looked_for(tmp_path):
    make_potsdam_root(tmp_path, TWO, products=("labels",))
    with pytest.raises(MissingDataError, match=r"4_Ortho_RGBIR\.zip or 4_Ortho_RGBIR/"):
        Potsdam(tmp_path, scenes=TWO, tile_size=16)
    with pytest.raises(MissingDataError, match=r"2_Ortho_RGB\.zip.*4_Ortho_RGBIR\.zip"):
        Potsdam(tmp_path, scenes=TWO, bands="RGB", tile_size=16)
    make_potsdam_root(tmp_path, TWO, products=("RGBIR",))
    with pytest.raises(MissingDataError, match="5_Labels_all_noBoundary"):
        Potsdam(tmp_path, scenes=TWO, tile_size=16, eroded=True)
    with pytest.raises(MissingDataError, match="ISPRS_semantic_labeling_Vaihingen"):
        Vaihingen(tmp_path, scenes=["area1"], tile_size=16)


@pytest.mark.parametrize("zipped", [False, True])
def test_missing_scene_file_is_named(tmp_path, zipped):
    make_potsdam_root(tmp_path, ["2_10"], zipped=zipped)
    with pytest.raises(MissingDataError, match=r"top_potsdam_2_11_RGBIR\.tif not found"):
        Potsdam(tmp_path, scenes=TWO, tile_size=16)
    make_potsdam_root(tmp_path / "b", TWO, zipped=zipped, products=("RGBIR",))
    make_potsdam_root(tmp_path / "b", ["2_10"], zipped=zipped, products=("labels",))
    with pytest.raises(MissingDataError, match=r"top_potsdam_2_11_label\.tif"):
        Potsdam(tmp_path / "b", scenes=TWO, tile_size=16)


def test_corrupt_and_truncated_tiffs_are_named(tmp_path):
    make_potsdam_root(tmp_path, TWO)
    folder = tmp_path / POTSDAM_FILES["RGBIR"][0]
    corrupt = folder / "top_potsdam_2_10_RGBIR.tif"
    corrupt.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CorruptRasterError, match=re.escape(str(corrupt))):
        Potsdam(tmp_path, scenes=TWO, tile_size=16)
    truncated = folder / "top_potsdam_2_11_RGBIR.tif"
    truncated.write_bytes(truncated.read_bytes()[:5000])  # header intact, pixel data cut
    ds = Potsdam(tmp_path, scenes=["2_11"], tile_size=16)
    with pytest.raises(CorruptRasterError, match=re.escape(str(truncated))):
        [ds[i] for i in range(len(ds))]


def test_image_label_size_mismatch(tmp_path):
    make_potsdam_root(tmp_path, TWO)
    write_tif(
        tmp_path / "5_Labels_all" / "top_potsdam_2_11_label.tif",
        fake_label_rgb("2_11", False, (40, 50)),
    )
    with pytest.raises(SizeMismatchError, match=r"scene 2_11.*40x56.*40x50"):
        Potsdam(tmp_path, scenes=TWO, tile_size=16)
    assert len(Potsdam(tmp_path, scenes=TWO, tile_size=16, labeled=False)) == 24


def test_off_palette_colours_error_or_ignore(tmp_path):
    make_potsdam_root(tmp_path, TWO)
    labels = fake_label_rgb("2_10", False)
    labels[:, 2, 3] = (252, 255, 0)
    path = write_tif(tmp_path / "5_Labels_all" / "top_potsdam_2_10_label.tif", labels)
    ds = Potsdam(tmp_path, scenes=TWO, tile_size=16)
    with pytest.raises(UnknownColorError, match=re.escape(str(path)) + r".*\(252, 255, 0\)"):
        ds[0]
    assert ds[1]["mask"].max() < 6  # other tiles are fine
    ds = Potsdam(tmp_path, scenes=TWO, tile_size=16, unknown_colors="ignore", ignore_index=77)
    expected = fake_classes("2_10")[:16, :16].copy()
    expected[2, 3] = 77
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), expected)
    ds = Potsdam(tmp_path, scenes=TWO, tile_size=16, ignore_values=[[252, 255, 0]])
    expected[2, 3] = 255
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), expected)
    np.testing.assert_array_equal(ds.read_labels("2_10")[:16, :16], expected)


def test_band_count_that_does_not_fit_the_mode(tmp_path):
    make_potsdam_root(tmp_path, TWO, products=("RGBIR",))
    path = tmp_path / "4_Ortho_RGBIR" / "top_potsdam_2_11_RGBIR.tif"
    write_tif(path, fake_image("2_11", "RGB", 3))
    with pytest.raises(BandCountError, match=re.escape(str(path)) + r" has 3 band"):
        Potsdam(tmp_path, scenes=TWO, tile_size=16, labeled=False)
    with pytest.raises(BandCountError, match="IR/R/G"):
        Potsdam(tmp_path, scenes=TWO, bands="IRRG", tile_size=16, labeled=False)
    assert Potsdam(tmp_path, scenes=TWO, bands="RGB", tile_size=16, labeled=False).in_channels == 3


def test_scene_smaller_than_tile(tmp_path):
    make_potsdam_root(tmp_path, TWO, products=("RGBIR",))
    with pytest.raises(SceneTooSmallError, match=r"scene 2_10 .*40x56 px.*tile_size=48"):
        Potsdam(tmp_path, scenes=TWO, tile_size=48, labeled=False)
    assert len(Potsdam(tmp_path, scenes=TWO, tile_size=40, labeled=False)) == 2 * 2


@pytest.mark.parametrize(
    "kwargs",
    [{"bands": "RGBN"}, {"tile_size": 0}, {"stride": -1}, {"unknown_colors": "drop"}],
)
def test_bad_arguments(potsdam_root, kwargs):
    with pytest.raises(ValueError):
        Potsdam(potsdam_root, scenes=TWO, **{"tile_size": 16, **kwargs})


def test_isprs_classes_are_fixed(potsdam_root):
    ds = Potsdam(potsdam_root, scenes=TWO, tile_size=16, num_classes=6, class_names=None)
    assert ds.describe()["class_names"] == list(ISPRS_CLASSES)
    assert ds.describe()["mask_spec"]["palette"] == [list(c) for c in ISPRS_PALETTE]
    with pytest.raises(ClassMismatchError, match="set data.num_classes=6"):
        Potsdam(potsdam_root, scenes=TWO, tile_size=16, num_classes=4)
    with pytest.raises(ClassMismatchError, match="set data.class_names=null"):
        Potsdam(potsdam_root, scenes=TWO, tile_size=16, class_names=list("abcdef"))
