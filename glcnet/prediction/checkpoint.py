"""From a fine-tuning checkpoint to a ready model and the data contract it was trained under.

:func:`load_model_for_prediction` is the only place prediction reads a checkpoint, and the checkpoint
is all it reads: the weights (``state_dict`` keys ``model.*``) and the run record every glcnet
checkpoint carries (:mod:`glcnet.training.run_record`: bands, classes, palette, tile size, input
scaling, mask specification and model arguments). A checkpoint copied away from its run folder
predicts the same. Both are read as data (``weights_only=True``); the network is built by
:func:`~glcnet.training.run_record.segmenter_from_record` from plain arguments, never from a class
named by the file.

A checkpoint without a run record (written by glcnet before records existed) is refused in one line
rather than completed from the run folder's ``config.yaml``: that file may belong to another run
(a folder reused or resumed with other overrides), it does not say the pixel type the model was
trained on (so the scaling check could not work), and a second reader of the data contract would
be a second place to keep in step. Evaluation, which takes data settings on its command line,
falls back to those instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from glcnet.data.classes import IGNORE_INDEX
from glcnet.models.segmenter import Segmenter
from glcnet.prediction.settings import PredictionSettings, default_palette
from glcnet.training.evaluate import load_finetuned
from glcnet.training.export import CheckpointMismatchError
from glcnet.training.run_record import (
    MissingRunRecordError,
    read_run_record,
    segmenter_from_record,
)


def load_model_for_prediction(
    checkpoint: str | Path,
) -> tuple[Segmenter, PredictionSettings]:
    """Build the trained network of a fine-tuning checkpoint and read what data it expects.

    Contract (what the rest of prediction relies on): the model is a
    :class:`~glcnet.models.Segmenter` on the CPU in eval mode, with the checkpoint's weights; the
    settings give its classes (names and colours), input bands, pixel scaling and training tile size.

    Args:
        checkpoint: A fine-tuning checkpoint, e.g. ``<run>/checkpoints/best.ckpt``, anywhere.

    Returns:
        ``(model, settings)``.

    Raises:
        CheckpointReadError: The file is missing, unreadable or unsafe (nothing of it runs).
        CheckpointMismatchError: It carries no run record, is not a fine-tuning checkpoint, or its
            weights do not fit the model its record describes.
    """
    path = Path(checkpoint).expanduser()
    try:
        record = read_run_record(path)
    except MissingRunRecordError:
        raise CheckpointMismatchError(
            f"{path} carries no run record (written by an older glcnet or another program), so "
            "nothing says which bands, scaling and classes its model expects; predict with a "
            "checkpoint fine-tuned by this version of glcnet"
        ) from None
    if record.get("stage") != "finetune":
        raise CheckpointMismatchError(
            f"{path} is a {record.get('stage')} checkpoint; predict.py takes a fine-tuning "
            "checkpoint (<finetune run>/checkpoints/best.ckpt)"
        )
    try:
        model = segmenter_from_record(record)
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointMismatchError(
            f"{path}: cannot build the model its run record describes ({record.get('model')}): "
            f"{err}"
        ) from None
    model = load_finetuned(model, path)
    return model, settings_from_record(record, model, path)


def _names(value: Any, count: int) -> tuple[str, ...] | None:
    """``value`` as ``count`` strings, or None when it is not a list of that length."""
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == count:
        return tuple(str(v) for v in value)
    return None


def _palette(value: Any, count: int) -> tuple[tuple[int, int, int], ...] | None:
    """``value`` as ``count`` RGB triples, or None when it is not that."""
    if not isinstance(value, Sequence) or len(value) != count:
        return None
    if not all(isinstance(rgb, Sequence) and len(rgb) == 3 for rgb in value):
        return None
    return tuple(tuple(int(v) for v in rgb) for rgb in value)


def settings_from_record(
    record: Mapping[str, Any], model: Segmenter, checkpoint: str | Path
) -> PredictionSettings:
    """The data contract of a run record's ``data`` section, checked against its model.

    Args:
        record: A fine-tuning run record (:mod:`glcnet.training.run_record`).
        model: The network built from it.
        checkpoint: The file it came from (for messages and the outputs' tags).

    Returns:
        The settings; class names default to ``class_<i>`` and colours to :func:`default_palette`
        where the record has none of the right length.

    Raises:
        CheckpointMismatchError: The record's bands do not fit the model, or it has no usable
            tile size.
    """
    data = record.get("data") or {}
    channels, k = model.in_channels, model.num_classes
    band_indexes = data.get("band_indexes")
    if band_indexes is not None:
        band_indexes = tuple(int(b) for b in band_indexes)
        if len(band_indexes) != channels:
            raise CheckpointMismatchError(
                f"{checkpoint}: its run read bands {list(band_indexes)} but its model takes "
                f"{channels} input bands"
            )
    tile_size = data.get("tile_size")
    if not isinstance(tile_size, int) or tile_size < 1:
        raise CheckpointMismatchError(
            f"{checkpoint}: its run record has no usable data.tile_size ({tile_size!r})"
        )
    scaling = data.get("input_scaling") or {}
    divisor = scaling.get("divisor")
    return PredictionSettings(
        num_classes=k,
        class_names=_names(data.get("class_names"), k) or tuple(f"class_{i}" for i in range(k)),
        palette=_palette(data.get("palette"), k) or default_palette(k),
        tile_size=tile_size,
        in_channels=channels,
        band_indexes=band_indexes,
        band_names=_names(data.get("band_names"), channels),
        input_dtype=scaling.get("image_dtype"),
        input_scale=float(divisor) if divisor is not None else None,
        ignore_index=int(data.get("ignore_index", IGNORE_INDEX)),
        mask_spec=data.get("mask_spec"),
        image_nodata=data.get("image_nodata"),
        source=str(checkpoint),
    )
