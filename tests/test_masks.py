"""MaskSpec: one specification of how mask files encode classes, and its refusals."""

from __future__ import annotations

import re

import numpy as np
import pytest
from omegaconf import OmegaConf

from glcnet.data.classes import ISPRS_PALETTE, display_palette, generated_class_names
from glcnet.data.errors import ClassMismatchError, MaskSpecError, UnknownColorError
from glcnet.data.masks import MaskSpec


def one_band(values) -> np.ndarray:
    return np.asarray(values)[None]


def test_index_masks_pass_classes_and_ignore_index():
    spec = MaskSpec.from_config(3)
    assert spec.kind == "index" and spec.bands == (1,)
    raw = one_band([[0, 1, 2], [255, 2, 0]]).astype(np.uint8)
    np.testing.assert_array_equal(spec.decode(raw, "m.tif"), [[0, 1, 2], [255, 2, 0]])
    assert spec.decode(raw, "m.tif").dtype == np.int64


def test_index_masks_refuse_or_ignore_other_values():
    raw = one_band([[0, 9, 9], [3, 1, 2]]).astype(np.uint8)
    msg = (
        r"m\.tif: mask values \[3, 9\] \(3 pixels\) are neither class indices 0\.\.2 nor "
        r"ignore_index=255; set data\.unknown_colors=ignore .* data\.dataset_kwargs\.ignore_values"
    )
    with pytest.raises(UnknownColorError, match=msg):
        MaskSpec.from_config(3).decode(raw, "m.tif")
    spec = MaskSpec.from_config(3, unknown_colors="ignore")
    np.testing.assert_array_equal(spec.decode(raw, "m.tif"), [[0, 255, 255], [255, 1, 2]])
    spec = MaskSpec.from_config(3, ignore_values=[9, 3])
    np.testing.assert_array_equal(spec.decode(raw, "m.tif"), [[0, 255, 255], [255, 1, 2]])


def test_value_palette_reads_0_255_binary_masks():
    spec = MaskSpec.from_config(2, palette=[0, 255])
    assert spec.kind == "values" and spec.bands == (1,)
    raw = one_band([[0, 255], [255, 255]]).astype(np.uint8)
    np.testing.assert_array_equal(spec.decode(raw, "m.png"), [[0, 1], [1, 1]])  # 255 is a class
    with pytest.raises(UnknownColorError, match=r"values \[1\] \(1 pixels\).*palette"):
        spec.decode(one_band([[0, 1]]).astype(np.uint8), "m.png")


def test_value_palette_with_ignore_values_reads_loveda():
    spec = MaskSpec.from_config(7, palette=[1, 2, 3, 4, 5, 6, 7], ignore_values=[0])
    raw = one_band([[0, 1, 7], [4, 0, 2]]).astype(np.uint8)
    np.testing.assert_array_equal(spec.decode(raw, "m.png"), [[255, 0, 6], [3, 255, 1]])


def test_value_palette_decodes_wide_and_negative_values():
    spec = MaskSpec.from_config(3, palette=[-5, 70000, 12], ignore_values=[-1])
    raw = one_band([[-5, 70000, 12, -1]]).astype(np.int32)
    np.testing.assert_array_equal(spec.decode(raw, "m.tif"), [[0, 1, 2, 255]])
    uint16 = MaskSpec.from_config(2, palette=[0, 65535])
    raw = one_band([[65535, 0]]).astype(np.uint16)
    np.testing.assert_array_equal(uint16.decode(raw, "m.tif"), [[1, 0]])


def test_colour_palette_and_eroded_black():
    spec = MaskSpec.from_config(6, palette=ISPRS_PALETTE, ignore_values=[[9, 9, 9]])
    assert spec.kind == "colors" and spec.bands == (1, 2, 3)
    classes = np.array([[0, 1, 2], [3, 4, 5]])
    rgb = np.moveaxis(np.asarray(ISPRS_PALETTE, dtype=np.uint8)[classes], -1, 0).copy()
    np.testing.assert_array_equal(spec.decode(rgb, "l.tif"), classes)
    rgb[:, 0, 0] = 9
    rgb[:, 1, 1] = 0
    with pytest.raises(UnknownColorError, match=r"l\.tif: mask colours \[\(0, 0, 0\)\]"):
        spec.decode(rgb, "l.tif")
    np.testing.assert_array_equal(
        spec.decode(rgb, "l.tif", eroded=True), [[255, 1, 2], [3, 255, 5]]
    )
    black = MaskSpec.from_config(2, palette=[[0, 0, 0], [255, 255, 255]])
    with pytest.raises(MaskSpecError, match="black is class 0.*data.eroded=false"):
        black.decode(np.zeros((3, 2, 2), np.uint8), "l.tif", eroded=True)


def test_float_masks_must_hold_integers():
    spec = MaskSpec.from_config(3)
    np.testing.assert_array_equal(spec.decode(one_band([[0.0, 2.0]]), "f.tif"), [[0, 2]])
    with pytest.raises(
        MaskSpecError, match=r"f\.tif: float mask holds non-integer values \[0\.5\]"
    ):
        spec.decode(one_band([[0.5, 2.0]]), "f.tif")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"num_classes": 6, "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]},
            ClassMismatchError,
            "palette has 4 entries but data.num_classes=6: .*set data.num_classes=4",
        ),
        ({"num_classes": 2, "palette": [0, [1, 1, 1]]}, MaskSpecError, "mixes single values"),
        ({"num_classes": 2, "palette": [0, 0]}, MaskSpecError, r"lists \[0\] more than once"),
        ({"num_classes": 2, "palette": [[0, 0, 300], [1, 1, 1]]}, MaskSpecError, "0..255"),
        ({"num_classes": 2, "palette": ["a", "b"]}, MaskSpecError, "neither a mask value"),
        ({"num_classes": 2, "palette": []}, MaskSpecError, "empty"),
        (
            {"num_classes": 2, "palette": [0, 255], "ignore_values": [255]},
            MaskSpecError,
            r"\[255\] is both a class",
        ),
        (
            {"num_classes": 2, "palette": [[0, 0, 0], [1, 1, 1]], "ignore_values": [0]},
            MaskSpecError,
            "must be RGB colours",
        ),
        (
            {"num_classes": 7, "ignore_values": [0]},
            MaskSpecError,
            r"holds class indices \[0\].*palette=\[1, 2, 3, 4, 5, 6, 7\]",
        ),
        ({"num_classes": 3, "ignore_index": 1}, MaskSpecError, "ignore_index=1 is one of"),
        ({"num_classes": 0}, ClassMismatchError, "num_classes must be an integer >= 1"),
        ({"num_classes": 2, "unknown_colors": "drop"}, MaskSpecError, "unknown_colors"),
    ],
)
def test_settings_that_do_not_fit_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        MaskSpec.from_config(**kwargs)


def test_config_lists_and_round_trip_through_plain_data():
    cfg = OmegaConf.create({"palette": [[0, 0, 0], [255, 0, 0]], "ignore": [[9, 9, 9]]})
    spec = MaskSpec.from_config(2, cfg.palette, cfg.ignore, 255, "ignore")
    record = spec.to_dict()
    assert record == {
        "kind": "colors",
        "num_classes": 2,
        "palette": [[0, 0, 0], [255, 0, 0]],
        "ignore_values": [[9, 9, 9]],
        "ignore_index": 255,
        "unknown_colors": "ignore",
    }
    assert MaskSpec.from_dict(record) == spec
    assert "colour masks: [0, 0, 0] -> 0, [255, 0, 0] -> 1; ignored: [[9, 9, 9]]" == spec.describe()


def test_file_checks_name_the_file_and_the_fixing_setting():
    index = MaskSpec.from_config(6)
    colours = np.moveaxis(np.asarray(ISPRS_PALETTE, np.uint8)[np.array([[0, 1], [3, 3]])], -1, 0)
    with pytest.raises(
        MaskSpecError,
        match=re.escape("a.tif is a 3-band mask (colours found: (0, 0, 255), (0, 255, 0), ")
        + r".*palette is null.*data\.dataset_kwargs\.palette=\[\[R, G, B\], \.\.\.\]",
    ):
        index.check_file("a.tif", 3, False, lambda: colours)
    with pytest.raises(MaskSpecError, match="a.tif is a 2-band mask"):
        index.check_file("a.tif", 2, False)
    index.check_file("a.tif", 1, True)  # paletted: the stored index is the class
    rgb = MaskSpec.from_config(6, palette=ISPRS_PALETTE)
    with pytest.raises(MaskSpecError, match="a.png is a 1-band mask with a colour table.*=null"):
        rgb.check_file("a.png", 1, True)
    with pytest.raises(MaskSpecError, match="a.png has 1 band.*palette=null"):
        rgb.check_file("a.png", 1, False)
    values = MaskSpec.from_config(2, palette=[0, 255])
    with pytest.raises(MaskSpecError, match="lists single values"):
        values.check_file("a.png", 3, False)


def test_binary_255_problem():
    spec = MaskSpec.from_config(2)
    msg = spec.binary_255_problem({0, 255}, ["a.png", "b.png"])
    assert msg.startswith("a.png (and 1 more mask files): masks hold only the values 0 and 255")
    assert "ignore_index=255" in msg and "data.dataset_kwargs.palette=[0,255]" in msg
    assert spec.binary_255_problem({0, 1, 255}, ["a.png"]) is None  # index masks with ignore
    assert spec.binary_255_problem({0}, ["a.png"]) is None
    assert MaskSpec.from_config(2, ignore_values=[255]).binary_255_problem({0, 255}, ["a"]) is None
    assert MaskSpec.from_config(2, palette=[0, 255]).binary_255_problem({0, 255}, ["a"]) is None


def test_generated_names_and_display_colours():
    assert generated_class_names(3) == ("class_0", "class_1", "class_2")
    assert display_palette(2) == ((0, 0, 0), (255, 255, 255))
    five = display_palette(5)
    assert len(set(five)) == 5 and all(0 <= v <= 255 for c in five for v in c)
    assert display_palette(8)[:5] == five  # stable as K grows
