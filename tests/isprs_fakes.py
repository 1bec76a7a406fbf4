"""Tiny fake ISPRS roots in the official layouts, with pixel values known in closed form.

Image value of band ``b`` (1-based) at row ``r``, column ``c`` of scene number ``s`` in product
``p``: ``(50 b + 3 r + 5 c + 17 s + 101 p) mod 256`` (scaled by 257 for uint16), so band order,
window position, scene and product can all be told apart. Label class at ``(r, c)``:
``(r // 4 + c // 6 + s) mod 6``; the eroded labels paint black every pixel whose class differs from
its right or lower neighbour.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from glcnet.data.classes import ISPRS_PALETTE

SIZE = (40, 56)
#: Product codes ``p`` of the value formula.
PRODUCT_CODE = {"RGBIR": 0, "RGB": 1, "IRRG": 2, "IMAGES": 3}

POTSDAM_FILES = {
    "RGB": ("2_Ortho_RGB", "top_potsdam_{id}_RGB.tif", True),
    "IRRG": ("3_Ortho_IRRG", "top_potsdam_{id}_IRRG.tif", True),
    "RGBIR": ("4_Ortho_RGBIR", "top_potsdam_{id}_RGBIR.tif", True),
    "labels": ("5_Labels_all", "top_potsdam_{id}_label.tif", False),
    "eroded": ("5_Labels_all_noBoundary", "top_potsdam_{id}_label_noBoundary.tif", False),
}  # product -> (archive, file name, whether the official zip holds a folder named like itself)
VAIHINGEN_FILES = {
    "images": ("ISPRS_semantic_labeling_Vaihingen", "top/top_mosaic_09cm_{id}.tif"),
    "labels": (
        "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE",
        "top_mosaic_09cm_{id}.tif",
    ),
    "eroded": (
        "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE",
        "top_mosaic_09cm_{id}_noBoundary.tif",
    ),
}


def scene_number(scene: str) -> int:
    """Number ``s`` of a scene in the value formula ("2_10" -> 42, "area7" -> 7)."""
    if scene.startswith("area"):
        return int(scene[4:])
    r, c = (int(x) for x in scene.split("_"))
    return r * 16 + c


def fake_image(
    scene: str, product: str, count: int, size: tuple[int, int] = SIZE, dtype: str = "uint8"
) -> np.ndarray:
    """Pixel values of a fake image, shape (count, H, W)."""
    b = np.arange(1, count + 1)[:, None, None]
    r = np.arange(size[0])[None, :, None]
    c = np.arange(size[1])[None, None, :]
    v = (50 * b + 3 * r + 5 * c + 17 * scene_number(scene) + 101 * PRODUCT_CODE[product]) % 256
    v = np.broadcast_to(v, (count, *size))
    return (v * 257).astype(np.uint16) if dtype == "uint16" else v.astype(np.uint8)


def fake_classes(scene: str, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Class index of each pixel, shape (H, W) int64."""
    r = np.arange(size[0])[:, None]
    c = np.arange(size[1])[None, :]
    return ((r // 4 + c // 6 + scene_number(scene)) % 6).astype(np.int64)


def fake_boundary(scene: str, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Pixels painted black in the eroded labels, shape (H, W) bool."""
    k = fake_classes(scene, size)
    edge = np.zeros(size, dtype=bool)
    edge[:, :-1] |= k[:, :-1] != k[:, 1:]
    edge[:-1, :] |= k[:-1, :] != k[1:, :]
    return edge


def fake_label_rgb(scene: str, eroded: bool, size: tuple[int, int] = SIZE) -> np.ndarray:
    """Colour-coded labels, shape (3, H, W) uint8."""
    rgb = np.asarray(ISPRS_PALETTE, dtype=np.uint8)[fake_classes(scene, size)]
    if eroded:
        rgb[fake_boundary(scene, size)] = 0
    return np.moveaxis(rgb, -1, 0).copy()


def write_tif(path: Path, data: np.ndarray) -> Path:
    """Write a (C, H, W) array as a GeoTIFF with a UTM CRS and 5 cm pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = data.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=count,
        dtype=data.dtype.name,
        crs="EPSG:32633",
        transform=Affine(0.05, 0.0, 368000.0, 0.0, -0.05, 5806000.0),
    ) as dst:
        dst.write(data)
    return path


def _store(
    root: Path, archive: str, files: dict[str, np.ndarray], zipped: bool, in_place: bool = False
) -> None:
    """Write ``files`` (member path -> array) into ``root/archive(.zip)``, or as ``unzip`` in place
    would (member paths relative to ``root``)."""
    if in_place:
        for member, data in files.items():
            write_tif(root / member, data)
        return
    if not zipped:
        for member, data in files.items():
            write_tif(root / archive / member, data)
        return
    staging = root / f".staging_{archive}"
    with zipfile.ZipFile(root / f"{archive}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in files.items():
            zf.write(write_tif(staging / member, data), member)
    shutil.rmtree(staging)


def make_potsdam_root(
    root: Path,
    scenes: Iterable[str],
    size: tuple[int, int] = SIZE,
    zipped: bool | Sequence[str] = False,
    products: Sequence[str] = ("RGBIR", "labels", "eroded"),
    extra_level: bool = False,
    dtype: str = "uint8",
    file_ids: dict[str, str] | None = None,
    in_place: bool | Sequence[str] = False,
) -> Path:
    """Write a fake Potsdam root.

    Zip archives hold files as the official ones do (image products inside a folder named like the
    archive, labels at the archive root); extracted folders hold the files directly; products
    extracted in place (``unzip '*.zip'`` in the root) put image products into a folder named like
    the archive and label files directly into the root.

    Args:
        root: Folder to write into (created).
        scenes: Scene ids.
        size: (H, W) of every scene.
        zipped: True / False for all products, or the products written as zip archives.
        products: Subset of ``RGB``, ``IRRG``, ``RGBIR``, ``labels``, ``eroded``.
        extra_level: Put every file under one more folder named like the archive.
        dtype: ``uint8`` or ``uint16`` images.
        file_ids: Scene id -> id written in the file names (e.g. "6_7" -> "6_07").
        in_place: True / False for all products, or the products extracted in place (these
            override ``zipped``).
    """
    root.mkdir(parents=True, exist_ok=True)
    scenes = list(scenes)
    for product in products:
        archive, template, inner = POTSDAM_FILES[product]
        here = in_place if isinstance(in_place, bool) else product in in_place
        is_zip = not here and (zipped if isinstance(zipped, bool) else product in zipped)
        files = {}
        for scene in scenes:
            name = template.format(id=(file_ids or {}).get(scene, scene))
            if product in ("labels", "eroded"):
                data = fake_label_rgb(scene, product == "eroded", size)
            else:
                data = fake_image(scene, product, 4 if product == "RGBIR" else 3, size, dtype)
            member = f"{archive}/{name}" if inner and (is_zip or here) else name
            files[f"{archive}/{member}" if extra_level else member] = data
        _store(root, archive, files, is_zip, here)
    return root


def make_vaihingen_root(
    root: Path,
    scenes: Iterable[str],
    size: tuple[int, int] = SIZE,
    zipped: bool = False,
    products: Sequence[str] = ("images", "labels", "eroded"),
    decoy: bool = True,
    in_place: bool | Sequence[str] = False,
) -> Path:
    """Write a fake Vaihingen root.

    Args:
        root: Folder to write into (created).
        scenes: Scene ids ("area1", ...).
        size: (H, W) of every scene.
        zipped: Write zip archives instead of extracted folders.
        products: Subset of ``images``, ``labels``, ``eroded``.
        decoy: Also put ``gts_for_participants/top_mosaic_09cm_area{N}.tif`` (same file name as
            the image, other content) into the image archive, as the official archive does.
        in_place: True / False for all products, or the products extracted in place (``unzip``
            in the root: ``top/`` and ``gts_for_participants/`` in the root, the ground-truth
            files directly in the root).
    """
    root.mkdir(parents=True, exist_ok=True)
    scenes = list(scenes)
    for product in products:
        archive, template = VAIHINGEN_FILES[product]
        files = {}
        for scene in scenes:
            if product == "images":
                files[template.format(id=scene)] = fake_image(scene, "IMAGES", 3, size)
                if decoy:
                    member = f"gts_for_participants/top_mosaic_09cm_{scene}.tif"
                    files[member] = np.zeros((3, *size), dtype=np.uint8)
            else:
                files[template.format(id=scene)] = fake_label_rgb(scene, product == "eroded", size)
        here = in_place if isinstance(in_place, bool) else product in in_place
        _store(root, archive, files, zipped and not here, here)
    return root
