"""ISPRS Potsdam and Vaihingen tile data sets, read from the official archives or their folders.

A root holds the official zip archives, their extracted copies, or any mix of them. Two ways of
extracting are understood, freely mixed with each other and with zips:

- a folder per archive: ``unzip X.zip -d X`` (the folder is named like the archive; files are
  found by name at any depth inside it, so an extra top folder level is fine);
- in place: ``unzip '*.zip'`` run in the root (torchgeo's layout). The Potsdam image archives hold
  a folder named like themselves (``4_Ortho_RGBIR/``), which is the first way again; the label
  archives put their files directly into the root (``top_potsdam_2_10_label.tif``). Vaihingen's
  image archive puts ``top/`` into the root and its ground-truth archives put their files directly
  into the root. Only the files directly in the root (or directly in ``top/``) count there.

Extracted files win over the members of a zip (reads are faster), and the zip fills in what the
extracted copies lack. Two extracted copies of one scene file (the archive's folder *and* the
root) are refused with both paths named: delete one.

Potsdam (38 scenes of 6000x6000 px, ids ``"{row}_{col}"`` such as ``"2_10"`` or ``"6_7"``):

    2_Ortho_RGB(.zip)              top_potsdam_{id}_RGB.tif     R, G, B
    3_Ortho_IRRG(.zip)             top_potsdam_{id}_IRRG.tif    IR, R, G
    4_Ortho_RGBIR(.zip)            top_potsdam_{id}_RGBIR.tif   R, G, B, IR
    5_Labels_all(.zip)             top_potsdam_{id}_label.tif
    5_Labels_all_noBoundary(.zip)  top_potsdam_{id}_label_noBoundary.tif

Each band mode reads its own product when the root has it. When it does not, ``RGB`` and ``IRRG``
are derived from the 4-band RGBIR product: RGB = bands (1, 2, 3), IRRG = bands (4, 1, 2). The
embedded sample data set ships RGBIR only. Scene ids are matched by their numbers, so a file
named ``top_potsdam_6_07_RGBIR.tif`` serves scene ``"6_7"``.

Vaihingen (33 IRRG scenes of about 2000x2500 px, ids ``"area{N}"``):

    ISPRS_semantic_labeling_Vaihingen(.zip)                       top/top_mosaic_09cm_area{N}.tif
    ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE(.zip)  top_mosaic_09cm_area{N}.tif
    ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE(.zip)
                                                            top_mosaic_09cm_area{N}_noBoundary.tif

Splits: ``test`` is the official test list, ``val`` is carved from the official training scenes
by scene (:data:`POTSDAM_VAL_SCENES`, :data:`VAIHINGEN_VAL_SCENES`, or ``val_scenes``), ``train``
is the official training list minus ``val``, ``all`` is train + test. Every scene of the
selection must be present (a missing file is an error naming it; drop scenes with
``exclude_scenes``).

Labels are colour-coded RGB rasters decoded by a :class:`~glcnet.data.masks.MaskSpec` of the six
ISPRS colours; in the eroded labels black boundary pixels become ``ignore_index``. Off-palette
colours raise (``unknown_colors="error"``) or become ``ignore_index`` (``"ignore"``). The images
have no nodata (``image_nodata`` is ``"none"``): the IR band some RGBIR files tag as alpha is data.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from glcnet.data.classes import IGNORE_INDEX, ISPRS_CLASSES, ISPRS_PALETTE
from glcnet.data.errors import ClassMismatchError, MissingDataError
from glcnet.data.masks import MaskSpec
from glcnet.data.raster import FileSource, find_sources, index_sources
from glcnet.data.tiling import SceneTileDataset

#: Official Potsdam training scenes (24), as in torchgeo and mmsegmentation.
POTSDAM_TRAIN_SCENES: tuple[str, ...] = (
    "2_10", "2_11", "2_12", "3_10", "3_11", "3_12", "4_10", "4_11", "4_12", "5_10", "5_11", "5_12",
    "6_7", "6_8", "6_9", "6_10", "6_11", "6_12", "7_7", "7_8", "7_9", "7_10", "7_11", "7_12",
)  # fmt: skip
#: Official Potsdam test scenes (14).
POTSDAM_TEST_SCENES: tuple[str, ...] = (
    "2_13", "2_14", "3_13", "3_14", "4_13", "4_14", "4_15", "5_13", "5_14", "5_15", "6_13", "6_14",
    "6_15", "7_13",
)  # fmt: skip
#: Default validation scenes, carved from the Potsdam training scenes (one per scene row band).
POTSDAM_VAL_SCENES: tuple[str, ...] = ("2_12", "4_11", "6_9")

#: Official Vaihingen training scenes (16).
VAIHINGEN_TRAIN_SCENES: tuple[str, ...] = tuple(
    f"area{n}" for n in (1, 3, 5, 7, 11, 13, 15, 17, 21, 23, 26, 28, 30, 32, 34, 37)
)
#: Official Vaihingen test scenes (17).
VAIHINGEN_TEST_SCENES: tuple[str, ...] = tuple(
    f"area{n}" for n in (2, 4, 6, 8, 10, 12, 14, 16, 20, 22, 24, 27, 29, 31, 33, 35, 38)
)
#: Default validation scenes, carved from the Vaihingen training scenes.
VAIHINGEN_VAL_SCENES: tuple[str, ...] = ("area11", "area23", "area34")

SPLITS: tuple[str, ...] = ("train", "val", "test", "all")


@dataclass(frozen=True)
class Product:
    """One official archive and the file names of its scenes.

    Attributes:
        archive: Archive name without ``.zip`` (also the extracted folder's name).
        template: File name of a scene, ``{id}`` standing for the scene id (for messages).
        pattern: Regular expression of the file name; its integer groups identify the scene.
        parent: When set, only files directly inside a folder of this name count.
        in_place: Where ``unzip`` run in the root puts the files, relative to the root (``""``:
            the root itself); None: in a folder named like the archive (found as such).

    """

    archive: str
    template: str
    pattern: str
    parent: str | None = None
    in_place: str | None = None

    def file_name(self, scene: str) -> str:
        """File name of ``scene`` in this product."""
        return self.template.format(id=scene)


@dataclass(frozen=True)
class BandMode:
    """How a band mode is read: from which product, which bands, what they are."""

    product: Product
    band_indexes: tuple[int, ...]
    band_names: tuple[str, ...]


def resolve_scenes(
    split: str,
    train: Sequence[str],
    test: Sequence[str],
    val: Sequence[str],
    exclude: Sequence[str] = (),
    scenes: Sequence[str] | None = None,
) -> list[str]:
    """Scene ids of a split (pure function of the official lists).

    Args:
        split: ``train`` (official train minus ``val``), ``val``, ``test`` or ``all``
            (train + test).
        train: Official training scenes.
        test: Official test scenes.
        val: Validation scenes; all must be official training scenes.
        exclude: Scenes dropped from the result.
        scenes: Explicit scene list; overrides ``split`` entirely.

    Returns:
        Scene ids in the official order (or the order of ``scenes``), without duplicates.

    """
    if scenes is not None:
        chosen = list(dict.fromkeys(scenes))
    else:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        not_train = [s for s in val if s not in train]
        if not_train:
            raise ValueError(
                f"validation scenes {not_train} are not official training scenes; val is carved "
                f"from the training scenes so that the test scenes stay unseen"
            )
        chosen = {
            "train": [s for s in train if s not in val],
            "val": [s for s in train if s in val],
            "test": list(test),
            "all": list(train) + list(test),
        }[split]
    return [s for s in chosen if s not in set(exclude)]


class _IsprsDataset(SceneTileDataset):
    """Shared logic of Potsdam and Vaihingen; subclasses fill in the class attributes."""

    NAME: str = ""
    TRAIN: tuple[str, ...] = ()
    TEST: tuple[str, ...] = ()
    VAL: tuple[str, ...] = ()
    MODES: dict[str, BandMode] = {}
    DERIVED: dict[str, BandMode] = {}  # mode -> how to derive it when its own product is absent
    LABELS: Product
    ERODED_LABELS: Product
    ID_PATTERN: str = ""  # regex of a scene id; integer groups form its key
    ID_FORMAT: str = ""  # scene id from the key's integers

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        bands: str = "RGBIR",
        tile_size: int = 256,
        stride: int | None = None,
        eroded: bool = False,
        labeled: bool = True,
        unknown_colors: str = "error",
        ignore_index: int = IGNORE_INDEX,
        val_scenes: Sequence[str] | None = None,
        exclude_scenes: Sequence[str] = (),
        scenes: Sequence[str] | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        ignore_values: Sequence[Sequence[int]] = (),
    ) -> None:
        super().__init__(
            tile_size=tile_size,
            stride=stride,
            labeled=labeled,
            unknown_colors=unknown_colors,
            ignore_index=ignore_index,
            image_nodata="none",
        )
        self._check_classes(num_classes, class_names)
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise MissingDataError(f"{self.NAME} root folder not found: {self.root}")
        if not isinstance(bands, str) or bands.upper() not in self.MODES:
            raise ValueError(f"{self.NAME} bands must be one of {tuple(self.MODES)}, got {bands!r}")
        self.bands = bands.upper()
        self.split = split
        self.eroded = bool(eroded)
        self.class_names = ISPRS_CLASSES
        self.palette = ISPRS_PALETTE
        self.mask_spec = MaskSpec.from_config(
            len(ISPRS_CLASSES),
            ISPRS_PALETTE,
            ignore_values=ignore_values,
            ignore_index=self.ignore_index,
            unknown_colors=unknown_colors,
        )
        val = self.VAL if val_scenes is None else [self.canonical_id(s) for s in val_scenes]
        chosen = resolve_scenes(
            split,
            self.TRAIN,
            self.TEST,
            val,
            exclude=[self.canonical_id(s) for s in exclude_scenes],
            scenes=None if scenes is None else [self.canonical_id(s) for s in scenes],
        )
        mode = self._image_mode()
        self.band_indexes = mode.band_indexes
        self.band_names = mode.band_names
        self.image_product = mode.product.archive
        self._images = self._locate(mode.product, chosen)
        self._labels: dict[bool, dict[str, str]] = {}
        if self.labeled:
            self._labels[self.eroded] = self._locate(self._label_product(self.eroded), chosen)
        where = f"{self.NAME} split {split!r}" if scenes is None else f"{self.NAME} scenes {scenes}"
        self._index_scenes(chosen, where)

    def _check_classes(self, num_classes: int | None, class_names: Sequence[str] | None) -> None:
        """The ISPRS classes are fixed: ``num_classes`` and ``class_names`` may only agree."""
        names = ", ".join(ISPRS_CLASSES)
        if num_classes is not None and num_classes != len(ISPRS_CLASSES):
            raise ClassMismatchError(
                f"{self.NAME} has {len(ISPRS_CLASSES)} classes ({names}) but "
                f"data.num_classes={num_classes}; set data.num_classes={len(ISPRS_CLASSES)}"
            )
        if class_names is not None and tuple(class_names) != ISPRS_CLASSES:
            raise ClassMismatchError(
                f"{self.NAME}'s classes are ({names}) but data.class_names={list(class_names)}; "
                f"set data.class_names=null"
            )

    # --- scene ids and files -----------------------------------------------------------------

    @classmethod
    def canonical_id(cls, scene: str | int) -> str:
        """Write a scene id the way the official lists do (no leading zeros).

        Raises:
            ValueError: ``scene`` is not an id of this data set.

        """
        match = re.fullmatch(cls.ID_PATTERN, str(scene).strip(), flags=re.IGNORECASE)
        if not match:
            raise ValueError(f"{scene!r} is not a {cls.NAME} scene id (e.g. {cls.TRAIN[0]!r})")
        return cls.ID_FORMAT.format(*(int(g) for g in match.groups()))

    def _scene_key(self, scene: str) -> tuple[int, ...]:
        match = re.fullmatch(self.ID_PATTERN, scene, flags=re.IGNORECASE)
        return tuple(int(g) for g in match.groups())

    def _sources(self, product: Product) -> list[FileSource]:
        return find_sources(self.root, product.archive, product.in_place)

    def _has(self, product: Product) -> bool:
        """The root holds some file of ``product`` (in any layout)."""
        sources = self._sources(product)
        if any(s.recursive for s in sources):
            return True
        pattern = re.compile(product.pattern, flags=re.IGNORECASE)
        return any(s.index(pattern, product.parent) for s in sources)

    @staticmethod
    def _looked_for(product: Product) -> str:
        places = [f"{product.archive}.zip", f"{product.archive}/"]
        if product.in_place is not None:
            where = "the root" if product.in_place == "" else f"{product.in_place}/"
            places.append(f"{product.file_name('*')} files in {where}")
        return " or ".join(places)

    def _image_mode(self) -> BandMode:
        own = self.MODES[self.bands]
        if self._has(own.product):
            return own
        derived = self.DERIVED.get(self.bands)
        if derived is not None and self._has(derived.product):
            return derived
        looked = self._looked_for(own.product)
        if derived is not None:
            looked += f", nor {self._looked_for(derived.product)} to derive them from"
        raise MissingDataError(
            f"{self.NAME} root {self.root} has no images for bands={self.bands!r}: looked for "
            f"{looked}"
        )

    def _label_product(self, eroded: bool) -> Product:
        return self.ERODED_LABELS if eroded else self.LABELS

    def _locate(self, product: Product, scenes: Sequence[str]) -> dict[str, str]:
        """Paths of the scenes' files in one product; every scene must be there."""
        sources = self._sources(product)
        found = index_sources(
            sources, re.compile(product.pattern, flags=re.IGNORECASE), product.parent
        )
        if not found:
            raise MissingDataError(
                f"{self.NAME} root {self.root} has no {product.file_name('*')} files: looked for "
                f"{self._looked_for(product)}"
            )
        paths = {}
        for scene in scenes:
            path = found.get(self._scene_key(scene))
            if path is None:
                inside = f" inside a '{product.parent}/' folder" if product.parent else ""
                raise MissingDataError(
                    f"{self.NAME} scene {scene}: {product.file_name(scene)} not found{inside} in "
                    f"{' or '.join(s.describe() for s in sources)}; use exclude_scenes to "
                    f"leave the scene out"
                )
            paths[scene] = path
        return paths

    def image_path(self, scene: str) -> str:
        """Path of the image raster of ``scene`` (``/vsizip/...`` inside a zip archive)."""
        if scene not in self._images:
            raise KeyError(f"scene {scene!r} is not in this data set ({self.scenes})")
        return self._images[scene]

    def label_path(self, scene: str, eroded: bool | None = None) -> str:
        """Path of the colour-coded label raster of ``scene``.

        Args:
            scene: Scene id of this data set.
            eroded: The eroded (no-boundary) labels; None: the data set's ``eroded`` setting.

        """
        eroded = self.eroded if eroded is None else bool(eroded)
        if scene not in self._images:
            raise KeyError(f"scene {scene!r} is not in this data set ({self.scenes})")
        if eroded not in self._labels:
            self._labels[eroded] = self._locate(self._label_product(eroded), self.scenes)
        return self._labels[eroded][scene]


_POTSDAM_RGBIR = Product(
    "4_Ortho_RGBIR", "top_potsdam_{id}_RGBIR.tif", r"top_potsdam_(\d+)_(\d+)_RGBIR\.tif"
)


class Potsdam(_IsprsDataset):
    """ISPRS Potsdam tiles (see the module docstring for layout, band modes and splits).

    Args:
        root: Folder holding the official archives and/or their extracted folders.
        split: ``train``, ``val``, ``test`` or ``all``.
        bands: ``RGBIR`` (4 bands R, G, B, IR), ``RGB`` or ``IRRG`` (IR, R, G).
        tile_size: Tile side in pixels.
        stride: Distance between tiles (None: ``tile_size``).
        eroded: Read masks from the eroded (no-boundary) labels.
        labeled: Read masks; False needs only the image archive.
        unknown_colors: ``error`` or ``ignore`` for off-palette label colours.
        ignore_index: Mask value of ignored pixels.
        val_scenes: Validation scenes (None: :data:`POTSDAM_VAL_SCENES`).
        exclude_scenes: Scenes left out (e.g. ``["7_10"]``, known label errors).
        scenes: Explicit scene ids; override ``split``.
        num_classes: Checked only: must be None or 6 (the classes are fixed).
        class_names: Checked only: must be None or the ISPRS names.
        ignore_values: Label colours ``[R, G, B]`` read as ``ignore_index`` (e.g. the off-palette
            colours a few label files are reported to hold).

    """

    NAME = "Potsdam"
    TRAIN = POTSDAM_TRAIN_SCENES
    TEST = POTSDAM_TEST_SCENES
    VAL = POTSDAM_VAL_SCENES
    MODES = {
        "RGB": BandMode(
            Product("2_Ortho_RGB", "top_potsdam_{id}_RGB.tif", r"top_potsdam_(\d+)_(\d+)_RGB\.tif"),
            (1, 2, 3),
            ("R", "G", "B"),
        ),
        "IRRG": BandMode(
            Product(
                "3_Ortho_IRRG", "top_potsdam_{id}_IRRG.tif", r"top_potsdam_(\d+)_(\d+)_IRRG\.tif"
            ),
            (1, 2, 3),
            ("IR", "R", "G"),
        ),
        "RGBIR": BandMode(_POTSDAM_RGBIR, (1, 2, 3, 4), ("R", "G", "B", "IR")),
    }
    DERIVED = {
        "RGB": BandMode(_POTSDAM_RGBIR, (1, 2, 3), ("R", "G", "B")),
        "IRRG": BandMode(_POTSDAM_RGBIR, (4, 1, 2), ("IR", "R", "G")),
    }
    LABELS = Product(
        "5_Labels_all",
        "top_potsdam_{id}_label.tif",
        r"top_potsdam_(\d+)_(\d+)_label\.tif",
        in_place="",
    )
    ERODED_LABELS = Product(
        "5_Labels_all_noBoundary",
        "top_potsdam_{id}_label_noBoundary.tif",
        r"top_potsdam_(\d+)_(\d+)_label_noBoundary\.tif",
        in_place="",
    )
    ID_PATTERN = r"(\d+)_(\d+)"
    ID_FORMAT = "{}_{}"


class Vaihingen(_IsprsDataset):
    """ISPRS Vaihingen tiles (IRRG only; see the module docstring for layout and splits).

    Args:
        root: Folder holding the official archives and/or their extracted folders.
        split: ``train``, ``val``, ``test`` or ``all``.
        bands: ``IRRG`` (IR, R, G); anything else is a ``ValueError``.
        tile_size: Tile side in pixels.
        stride: Distance between tiles (None: ``tile_size``).
        eroded: Read masks from the eroded (no-boundary) labels.
        labeled: Read masks; False needs only the image archive.
        unknown_colors: ``error`` or ``ignore`` for off-palette label colours.
        ignore_index: Mask value of ignored pixels.
        val_scenes: Validation scenes (None: :data:`VAIHINGEN_VAL_SCENES`); ``"area11"`` or ``11``.
        exclude_scenes: Scenes left out.
        scenes: Explicit scene ids; override ``split``.
        num_classes: Checked only: must be None or 6 (the classes are fixed).
        class_names: Checked only: must be None or the ISPRS names.
        ignore_values: Label colours ``[R, G, B]`` read as ``ignore_index`` (e.g. the off-palette
            colours a few label files are reported to hold).

    """

    NAME = "Vaihingen"
    TRAIN = VAIHINGEN_TRAIN_SCENES
    TEST = VAIHINGEN_TEST_SCENES
    VAL = VAIHINGEN_VAL_SCENES
    MODES = {
        "IRRG": BandMode(
            Product(
                "ISPRS_semantic_labeling_Vaihingen",
                "top_mosaic_09cm_{id}.tif",
                r"top_mosaic_09cm_area(\d+)\.tif",
                parent="top",
                in_place="top",
            ),
            (1, 2, 3),
            ("IR", "R", "G"),
        ),
    }
    LABELS = Product(
        "ISPRS_semantic_labeling_Vaihingen_ground_truth_COMPLETE",
        "top_mosaic_09cm_{id}.tif",
        r"top_mosaic_09cm_area(\d+)\.tif",
        in_place="",
    )
    ERODED_LABELS = Product(
        "ISPRS_semantic_labeling_Vaihingen_ground_truth_eroded_COMPLETE",
        "top_mosaic_09cm_{id}_noBoundary.tif",
        r"top_mosaic_09cm_area(\d+)_noBoundary\.tif",
        in_place="",
    )
    ID_PATTERN = r"(?:area)?(\d+)"
    ID_FORMAT = "area{}"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        bands: str = "IRRG",
        tile_size: int = 256,
        stride: int | None = None,
        eroded: bool = False,
        labeled: bool = True,
        unknown_colors: str = "error",
        ignore_index: int = IGNORE_INDEX,
        val_scenes: Sequence[str | int] | None = None,
        exclude_scenes: Sequence[str | int] = (),
        scenes: Sequence[str | int] | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        ignore_values: Sequence[Sequence[int]] = (),
    ) -> None:
        super().__init__(
            root,
            split=split,
            bands=bands,
            tile_size=tile_size,
            stride=stride,
            eroded=eroded,
            labeled=labeled,
            unknown_colors=unknown_colors,
            ignore_index=ignore_index,
            val_scenes=val_scenes,
            exclude_scenes=exclude_scenes,
            scenes=scenes,
            num_classes=num_classes,
            class_names=class_names,
            ignore_values=ignore_values,
        )
