"""The embedded sample data set: determinism, Potsdam layout, GeoTIFFs, labels, statistics, ensure."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from glcnet.data import sample
from glcnet.data.classes import BOUNDARY_COLOR, IGNORE_INDEX, ISPRS_PALETTE, decode_palette
from glcnet.data.sample import (
    boundary_mask,
    ensure_sample_dataset,
    generate_sample_dataset,
    render_scene,
)

# Written out from the official ISPRS Potsdam split (not imported from the code under test).
TRAIN = "2_10 2_11 2_12 3_10 3_11 3_12 4_10 4_11 4_12 5_10 5_11 5_12 6_7 6_8 6_9 6_10 6_11 6_12 7_7 7_8 7_9 7_10 7_11 7_12".split()  # noqa: E501
TEST = "2_13 2_14 3_13 3_14 4_13 4_14 4_15 5_13 5_14 5_15 6_13 6_14 6_15 7_13".split()
SIZE = 512
IMP, BUILDING, LOW_VEG, TREE, CAR, CLUTTER = range(6)


def paths(root: Path, scene: str) -> tuple[Path, Path, Path]:
    return (
        root / "4_Ortho_RGBIR" / f"top_potsdam_{scene}_RGBIR.tif",
        root / "5_Labels_all" / f"top_potsdam_{scene}_label.tif",
        root / "5_Labels_all_noBoundary" / f"top_potsdam_{scene}_label_noBoundary.tif",
    )


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def reference_boundary(mask: np.ndarray, radius: int = 3) -> np.ndarray:
    """Pixels with a pixel of another class at Euclidean distance <= radius (inside the image)."""
    h, w = mask.shape
    out = np.zeros((h, w), bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx > radius * radius:
                continue
            here = (slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx)))
            there = (slice(max(0, dy), h - max(0, -dy)), slice(max(0, dx), w - max(0, -dx)))
            out[here] |= mask[here] != mask[there]
    return out


@pytest.fixture(scope="module")
def full_root(tmp_path_factory) -> Path:
    """The full default data set (38 scenes of 512 px, seed 0), generated once; timing printed."""
    root = tmp_path_factory.mktemp("sample") / "sample"
    t0 = time.perf_counter()
    generate_sample_dataset(root, seed=0, scene_size=SIZE)
    print(f"\nfull sample data set (38 scenes of {SIZE} px): {time.perf_counter() - t0:.1f} s")
    return root


@pytest.fixture(scope="module")
def scenes(full_root) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per scene: image (4, H, W), decoded labels (H, W), raw eroded label colours (3, H, W)."""
    out = {}
    for scene in TRAIN + TEST:
        image, label, eroded = (read(p) for p in paths(full_root, scene))
        out[scene] = (image, decode_palette(label, unknown="error", source=scene), eroded)
    return out


def test_render_scene_is_deterministic_and_well_formed():
    a_img, a_mask = render_scene(np.random.default_rng(7), 96)
    b_img, b_mask = render_scene(np.random.default_rng(7), 96)
    c_img, c_mask = render_scene(np.random.default_rng(8), 96)
    assert a_img.shape == (4, 96, 96) and a_img.dtype == np.uint8
    assert a_mask.shape == (96, 96) and a_mask.dtype == np.int64
    assert a_mask.min() >= 0 and a_mask.max() <= 5
    assert a_img.tobytes() == b_img.tobytes() and a_mask.tobytes() == b_mask.tobytes()
    assert not np.array_equal(a_img, c_img) and not np.array_equal(a_mask, c_mask)
    assert a_img.std() > 10  # textured, not flat


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="size"):
        render_scene(np.random.default_rng(0), 8)
    with pytest.raises(ValueError, match="seed"):
        generate_sample_dataset(tmp_path / "a", seed=-1)
    with pytest.raises(ValueError, match="scene_size"):
        generate_sample_dataset(tmp_path / "a", scene_size=10)
    with pytest.raises(ValueError, match="1_1"):
        generate_sample_dataset(tmp_path / "a", scenes=["2_10", "1_1"])
    assert not (tmp_path / "a").exists()


def test_layout_and_naming_exactly_potsdam(full_root):
    files = {p.relative_to(full_root).as_posix() for p in full_root.rglob("*") if p.is_file()}
    expected = {"sample_manifest.json", "README.txt"}
    for scene in TRAIN + TEST:
        expected |= {p.relative_to(full_root).as_posix() for p in paths(full_root, scene)}
    assert files == expected
    assert len(expected) == 3 * 38 + 2
    siblings = [p.name for p in full_root.parent.iterdir()]
    assert [n for n in siblings if ".tmp-" in n or ".old-" in n] == []  # nothing left behind


def test_geotiffs_bands_dtype_crs_transform(full_root):
    origins = set()
    for scene in TRAIN + TEST:
        for path, count in zip(paths(full_root, scene), (4, 3, 3)):
            with rasterio.open(path) as ds:
                assert (ds.count, ds.width, ds.height) == (count, SIZE, SIZE)
                assert set(ds.dtypes) == {"uint8"}
                assert ds.crs.to_epsg() == 32633
                t = ds.transform
                assert (t.a, t.b, t.d, t.e) == pytest.approx((0.05, 0.0, 0.0, -0.05))
                assert ds.profile["tiled"] and ds.block_shapes[0][0] <= 256
                assert ds.compression is not None
                if count == 4:
                    origins.add((t.c, t.f))
                    assert ds.descriptions == ("R", "G", "B", "IR")
    assert len(origins) == 38  # every scene at its own place


def colours(rgb: np.ndarray) -> set[tuple[int, int, int]]:
    codes = np.unique((rgb[0].astype(np.int64) << 16) | (rgb[1].astype(np.int64) << 8) | rgb[2])
    return {(int(c) >> 16, (int(c) >> 8) & 255, int(c) & 255) for c in codes}


def test_labels_use_only_palette_colours(full_root):
    seen = set()
    for scene in TRAIN + TEST:
        _, label, eroded = (read(p) for p in paths(full_root, scene))
        assert colours(label) <= set(ISPRS_PALETTE)
        assert colours(eroded) <= set(ISPRS_PALETTE) | {BOUNDARY_COLOR}
        decode_palette(eroded, ignore_colors=[BOUNDARY_COLOR], unknown="error")
        seen |= colours(label)
    assert seen == set(ISPRS_PALETTE)  # every class appears in the set


def test_eroded_labels_black_exactly_at_class_boundaries(scenes):
    for scene, (_, mask, eroded) in scenes.items():
        black = np.all(eroded == 0, axis=0)
        expected = reference_boundary(mask)
        assert np.array_equal(black, expected), scene
        decoded = decode_palette(eroded, ignore_colors=[BOUNDARY_COLOR])
        assert np.array_equal(decoded[~expected], mask[~expected])
        assert np.all(decoded[expected] == IGNORE_INDEX)
        assert 0.05 < expected.mean() < 0.6  # a real boundary band, not nothing and not all


def test_boundary_mask_hand_computed_cases():
    dot = np.zeros((21, 21), np.int64)
    dot[10, 10] = 1
    b = boundary_mask(dot, 3)
    assert b.sum() == 29  # integer points of a disc of radius 3: 7 + 2*5 + 2*5 + 2*1
    assert b[10, 13] and b[12, 12] and not b[11, 13] and not b[10, 14]
    halves = np.zeros((4, 10), np.int64)
    halves[:, 5:] = 1
    assert np.array_equal(np.nonzero(boundary_mask(halves, 3)[0])[0], np.arange(2, 8))
    assert not boundary_mask(np.full((6, 6), 4), 3).any()  # the image border is no boundary


def test_scenes_deterministic_per_scene_and_seed(full_root, tmp_path):
    subset = generate_sample_dataset(
        tmp_path / "subset", seed=0, scene_size=SIZE, scenes=["7_13", "2_10"]
    )
    other = generate_sample_dataset(tmp_path / "other", seed=1, scene_size=SIZE, scenes=["2_10"])
    for scene in ("7_13", "2_10"):
        for a, b in zip(paths(full_root, scene), paths(subset, scene)):
            assert read(a).tobytes() == read(b).tobytes()  # a subset gives the very same scenes
    assert not np.array_equal(read(paths(full_root, "2_10")[0]), read(paths(other, "2_10")[0]))
    assert not (subset / "4_Ortho_RGBIR" / "top_potsdam_3_10_RGBIR.tif").exists()
    manifest = json.loads((subset / "sample_manifest.json").read_text())
    assert list(manifest["scenes"]) == ["7_13", "2_10"] and manifest["seed"] == 0


def test_scenes_all_differ(scenes):
    digests = {img.tobytes()[::97] for img, _, _ in scenes.values()}
    assert len(digests) == 38


def test_class_fractions_plausible(scenes, full_root):
    counts = np.array([np.bincount(m.ravel(), minlength=6) for _, m, _ in scenes.values()])
    per_scene = counts / counts.sum(1, keepdims=True)
    total = counts.sum(0) / counts.sum()
    # Potsdam-like imbalance: roughly 28 / 26 / 23 / 15 / 1.7 / 4 %.
    lo = np.array([0.18, 0.16, 0.14, 0.08, 0.008, 0.015])
    hi = np.array([0.40, 0.36, 0.34, 0.22, 0.035, 0.07])
    assert np.all(total >= lo) and np.all(total <= hi), total
    assert np.all(counts.sum(0) > 0)
    assert total[CAR] < total[CLUTTER] < min(total[:4])  # rare classes stay rare
    assert (per_scene[:, CAR] > 0).mean() > 0.9 and per_scene[:, CAR].max() < 0.06
    assert per_scene.std(0).min() > 0.003  # scenes differ in their make-up
    manifest = json.loads((full_root / "sample_manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["scene_size"] == SIZE
    assert manifest["version"] == sample.SAMPLE_VERSION
    assert list(manifest["class_fractions"].values()) == pytest.approx(total, abs=1e-4)
    split = {s: v["split"] for s, v in manifest["scenes"].items()}
    assert split == {**dict.fromkeys(TRAIN, "train"), **dict.fromkeys(TEST, "test")}


def test_infrared_and_ndvi_separate_vegetation_with_small_tree_grass_contrast(scenes):
    """As in real Potsdam tiles: vegetation has the higher NDVI, but trees are barely brighter in
    IR than low vegetation (real: about 113 against 88-110)."""
    ir_sum, n = np.zeros(6), np.zeros(6)
    ndvi_sum = np.zeros(6)
    for img, mask, _ in scenes.values():
        ir, red = img[3].astype(float), img[0].astype(float)
        ndvi = (ir - red) / (ir + red + 1e-6)
        for c in range(6):
            sel = mask == c
            ir_sum[c] += ir[sel].sum()
            ndvi_sum[c] += ndvi[sel].sum()
            n[c] += sel.sum()
    ir_mean, ndvi_mean = ir_sum / n, ndvi_sum / n
    assert ir_mean[TREE] > ir_mean[LOW_VEG] > max(ir_mean[IMP], ir_mean[BUILDING])
    assert ir_mean[TREE] < 1.1 * ir_mean[LOW_VEG]  # small IR contrast (version 1: 1.15)
    assert min(ndvi_mean[[LOW_VEG, TREE]]) > 0.1
    assert max(ndvi_mean[[IMP, BUILDING, CAR, CLUTTER]]) < 0.0


def test_scenes_differ_in_light_and_trees_look_like_grass(scenes):
    """Each scene has its own exposure and gains, so impervious surfaces are dark in some scenes
    and bright in others (real tiles: mean 96 in one, 192 in another; version 1: ratio 1.42). Trees
    are about as bright as low vegetation in the visible bands (real: slightly brighter; version 1:
    0.57 times)."""
    brightness, sums, counts = [], np.zeros(6), np.zeros(6)
    for img, mask, _ in scenes.values():
        visible, labels = img[:3].reshape(3, -1).astype(float).mean(0), mask.ravel()
        brightness.append(visible[labels == IMP].mean())
        sums += np.bincount(labels, weights=visible, minlength=6)
        counts += np.bincount(labels, minlength=6)
    assert max(brightness) > 1.8 * min(brightness)
    mean = sums / counts
    assert mean[TREE] > 0.8 * mean[LOW_VEG]


def test_colour_alone_is_not_enough(scenes):
    """A per-pixel Gaussian classifier: far from perfect on RGB, IR helps vegetation."""
    x = np.concatenate([img.reshape(4, -1)[:, ::7].T for img, _, _ in scenes.values()]).astype(
        float
    )
    y = np.concatenate([m.ravel()[::7] for _, m, _ in scenes.values()])

    def gaussian_accuracy(z: np.ndarray) -> tuple[float, float]:
        scores = []
        for c in range(6):
            zc = z[y == c]
            mu, cov = zc.mean(0), np.cov(zc.T) + 1e-3 * np.eye(z.shape[1])
            d = z - mu
            maha = np.einsum("ij,jk,ik->i", d, np.linalg.inv(cov), d)
            scores.append(-0.5 * maha - 0.5 * np.linalg.slogdet(cov)[1])
        pred = np.argmax(scores, 0)
        veg = (y == LOW_VEG) | (y == TREE)
        return float((pred == y).mean()), float((pred[veg] == y[veg]).mean())

    acc_rgb, veg_rgb = gaussian_accuracy(x[:, :3])
    acc_all, veg_all = gaussian_accuracy(x)
    assert acc_rgb < 0.85 and acc_all < 0.9  # texture and context are needed
    assert veg_all > veg_rgb + 0.05  # the IR band carries information


def test_potsdam_loader_reads_the_sample(full_root):
    from glcnet.data import Potsdam

    ds = Potsdam(root=full_root, split="test", bands="RGBIR", tile_size=256, eroded=True)
    item = ds[0]
    assert tuple(item["image"].shape) == (4, 256, 256)
    values = set(np.unique(np.asarray(item["mask"])).tolist())
    assert values <= {0, 1, 2, 3, 4, 5, IGNORE_INDEX} and IGNORE_INDEX in values


def test_ensure_is_noop_when_current_and_regenerates_on_change(tmp_path, monkeypatch):
    root = tmp_path / "ensure"
    calls = []
    write = sample._write_dataset
    monkeypatch.setattr(sample, "_write_dataset", lambda *a: calls.append(a[1:3]) or write(*a))

    def stamps():
        return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*")}

    threads = [
        threading.Thread(target=ensure_sample_dataset, args=(root,), kwargs={"scene_size": 32})
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [(0, 32)]  # three concurrent callers, one generation
    before = stamps()
    assert len(before) == 3 * 38 + 2 + 3
    assert ensure_sample_dataset(root, scene_size=32) == root
    assert stamps() == before and calls == [(0, 32)]

    ensure_sample_dataset(root, seed=1, scene_size=32)
    assert calls[-1] == (1, 32)
    assert json.loads((root / "sample_manifest.json").read_text())["seed"] == 1
    img1 = read(paths(root, "6_7")[0])
    ensure_sample_dataset(root, seed=0, scene_size=32)
    assert not np.array_equal(read(paths(root, "6_7")[0]), img1)

    paths(root, "5_14")[2].unlink()  # a missing file
    ensure_sample_dataset(root, seed=0, scene_size=32)
    assert paths(root, "5_14")[2].is_file() and len(calls) == 4

    monkeypatch.setattr(sample, "SAMPLE_VERSION", sample.SAMPLE_VERSION + 1)  # a new generator
    ensure_sample_dataset(root, seed=0, scene_size=32)
    assert len(calls) == 5
    assert (
        json.loads((root / "sample_manifest.json").read_text())["version"] == sample.SAMPLE_VERSION
    )
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []


def test_never_replaces_foreign_folders(tmp_path):
    foreign = tmp_path / "potsdam"
    (foreign / "4_Ortho_RGBIR").mkdir(parents=True)
    (foreign / "4_Ortho_RGBIR" / "top_potsdam_2_10_RGBIR.tif").write_bytes(b"real data")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError):
            generate_sample_dataset(foreign, scene_size=32, scenes=["2_10"], overwrite=overwrite)
    with pytest.raises(FileExistsError):
        ensure_sample_dataset(foreign, scene_size=32)
    assert (foreign / "4_Ortho_RGBIR" / "top_potsdam_2_10_RGBIR.tif").read_bytes() == b"real data"
    ours = generate_sample_dataset(tmp_path / "ours", scene_size=32, scenes=["2_10"])
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_sample_dataset(ours, scene_size=32, scenes=["2_10"])
    generate_sample_dataset(ours, seed=3, scene_size=32, scenes=["3_10"], overwrite=True)
    assert not paths(ours, "2_10")[0].exists() and paths(ours, "3_10")[0].exists()


def test_command_line(tmp_path, capsys):
    sample.main(["--root", str(tmp_path / "cli"), "--size", "32", "--seed", "2"])
    out = capsys.readouterr().out
    assert "wrote 38 scenes" in out and "4_Ortho_RGBIR/top_potsdam_{r}_{c}_RGBIR.tif" in out
    assert sample.is_current(tmp_path / "cli", seed=2, scene_size=32)
    sample.main(["--root", str(tmp_path / "cli"), "--size", "32", "--seed", "2"])
    assert "is current" in capsys.readouterr().out
