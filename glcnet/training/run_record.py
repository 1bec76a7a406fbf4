"""The run record: what data and model produced a checkpoint, stored inside it as plain data.

Every checkpoint glcnet writes (pretraining and fine-tuning ``.ckpt`` files, the pretrained
``.safetensors`` export) carries a record, so evaluation and prediction need nothing but the file.
The record is JSON-compatible (dicts, lists, strings, numbers, booleans, None): it is stored under
the key ``"glcnet_run_record"`` of a Lightning checkpoint and as JSON in the ``glcnet_run_record``
metadata field of a safetensors file, and loads with ``weights_only=True``.

Schema (``version`` 1)::

    format: "glcnet-run-record"   version: 1
    stage: "pretrain" | "finetune"
    created: ISO time             glcnet_version, torch_version: strings
    data:                         # what the network saw, read from the data set objects
      dataset_class, root, bands (mode name or 1-based indexes), band_indexes, band_names,
      in_channels, num_classes, class_names, palette ([[R, G, B], ...] or null), ignore_index,
      tile_size, stride, eroded, unknown_colors,
      split: {splits used, pretrain_splits, dataset_kwargs, label_fraction, label_count,
              label_seed, subset_file}
      input_scaling: {rule, image_dtype, divisor, mean, std}
      mask_spec: the data set's mask specification (``mask_spec.to_dict()``) or null
      image_nodata: the data set's image nodata setting ("auto", "none" or a number; absent in
                    records written before it was added)
    model: {encoder, in_channels, num_classes, output_stride, decoder_channels, encoder_depth,
            encoder_weights}
    method: pretraining method target (pretrain) or null
    pretrained: {path, transfer, freeze_encoder} (fine-tuning from weights) or null
    config: the whole resolved run configuration

:func:`read_run_record` reads it back from any of the three file kinds; :func:`segmenter_from_record`
rebuilds the network it describes (only :class:`glcnet.models.Segmenter`, never a class named by
the file).
"""

from __future__ import annotations

import datetime
import json
import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from glcnet.models.segmenter import Segmenter
from glcnet.training.checkpoints import CheckpointReadError, load_torch_file

log = logging.getLogger(__name__)

RECORD_KEY = "glcnet_run_record"
RECORD_FORMAT = "glcnet-run-record"
RECORD_VERSION = 1
#: Constructor arguments of :class:`Segmenter` a record may set.
MODEL_KEYS = (
    "encoder",
    "in_channels",
    "num_classes",
    "output_stride",
    "decoder_channels",
    "encoder_depth",
)
INPUT_SCALING_RULE = "integer pixels divided by the maximum of their dtype; float pixels unchanged"


class MissingRunRecordError(CheckpointReadError):
    """A checkpoint carries no run record (written before glcnet stored one)."""


def plain(value: Any) -> Any:
    """A JSON-compatible copy of ``value`` (tuples become lists, numpy scalars numbers)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None:
        return None
    for kind in (bool, int, float, str):  # exact built-in types (torch.__version__ is a subclass)
        if isinstance(value, kind):
            return kind(value)
    if hasattr(value, "to_dict"):
        return plain(value.to_dict())
    return str(value)


def base_dataset(dataset: Dataset) -> Dataset:
    """The tile data set inside subsets, concatenations and item wrappers."""
    seen = 0
    while seen < 16:
        seen += 1
        if isinstance(getattr(dataset, "dataset", None), Dataset):
            dataset = dataset.dataset  # Subset and glcnet's item wrappers
        elif isinstance(dataset, ConcatDataset):
            dataset = dataset.datasets[0]
        elif hasattr(dataset, "tiles") and isinstance(dataset.tiles, Dataset):
            dataset = dataset.tiles  # PairedViewDataset, AugmentedTiles
        else:
            break
    return dataset


def _input_scaling(dataset: Dataset) -> dict:
    """How pixel values were scaled, from the dtype of the first image of the data set."""
    from glcnet.data.raster import raster_info

    dtype = None
    scenes = getattr(dataset, "scenes", None)
    if scenes and hasattr(dataset, "image_path"):
        try:
            dtype = raster_info(dataset.image_path(scenes[0])).dtype
        except Exception as err:  # noqa: BLE001 - the record stays useful without it
            log.warning("run record: image dtype unknown (%s)", err)
    divisor = None
    if dtype is not None and np.issubdtype(np.dtype(dtype), np.integer):
        divisor = float(np.iinfo(np.dtype(dtype)).max)
    return {
        "rule": INPUT_SCALING_RULE,
        "image_dtype": dtype,
        "divisor": divisor,
        "mean": None,
        "std": None,
    }


def data_record(data: Any, dataset: Dataset, split: Mapping[str, Any] | None = None) -> dict:
    """The data part of a record, read from the run's :class:`TileData` and one built data set.

    Args:
        data: The run's :class:`glcnet.data.tile_data.TileData`.
        dataset: A data set it built (any wrapper around the tile data set).
        split: Extra split settings of the run (e.g. ``label_seed``, ``subset_file``).

    Returns:
        The ``data`` section (see the module docstring).
    """
    ds = base_dataset(dataset)
    band_indexes = getattr(ds, "band_indexes", None)
    palette = getattr(ds, "palette", None)
    mask_spec = getattr(ds, "mask_spec", None)
    class_names = getattr(data, "class_names", None) or getattr(ds, "class_names", None)
    cls = getattr(data, "dataset_cls", type(ds))
    return plain(
        {
            "dataset_class": f"{cls.__module__}.{cls.__qualname__}",
            "root": str(getattr(data, "root", getattr(ds, "root", ""))),
            "bands": getattr(data, "bands", None),
            "band_indexes": band_indexes,
            "band_names": getattr(ds, "band_names", None),
            "in_channels": len(band_indexes) if band_indexes else None,
            "num_classes": getattr(data, "num_classes", getattr(ds, "num_classes", None)),
            "class_names": class_names,
            "palette": palette,
            "ignore_index": getattr(data, "ignore_index", getattr(ds, "ignore_index", None)),
            "tile_size": getattr(data, "tile_size", getattr(ds, "tile_size", None)),
            "stride": getattr(ds, "stride", getattr(data, "stride", None)),
            "eroded": getattr(data, "eroded", None),
            "unknown_colors": getattr(data, "unknown_colors", None),
            "split": {
                "pretrain_splits": getattr(data, "pretrain_splits", None),
                "dataset_kwargs": getattr(data, "dataset_kwargs", None),
                "label_fraction": getattr(data, "label_fraction", None),
                "label_count": getattr(data, "label_count", None),
                **(split or {}),
            },
            "input_scaling": _input_scaling(ds),
            "mask_spec": mask_spec.to_dict() if hasattr(mask_spec, "to_dict") else mask_spec,
            "image_nodata": getattr(ds, "image_nodata", None),
        }
    )


def model_record(model: Segmenter, model_cfg: Mapping[str, Any]) -> dict:
    """The model part of a record (constructor arguments of :class:`Segmenter`)."""
    rec = {key: model_cfg.get(key) for key in MODEL_KEYS}
    rec.update(
        encoder=model.encoder_name,
        in_channels=model.in_channels,
        num_classes=model.num_classes,
        output_stride=model.output_stride,
        decoder_channels=model.decoder_channels,
        encoder_weights=model_cfg.get("encoder_weights"),
    )
    return plain(rec)


def build_run_record(
    stage: str,
    config: Mapping[str, Any],
    data: Any,
    dataset: Dataset,
    model: Segmenter,
    split: Mapping[str, Any] | None = None,
    method: str | None = None,
    pretrained: Mapping[str, Any] | None = None,
) -> dict:
    """Assemble the record of a run.

    Args:
        stage: ``pretrain`` or ``finetune``.
        config: The resolved run configuration (plain container).
        data: The run's :class:`TileData`.
        dataset: A data set of the run (for bands, classes, palette, dtype).
        model: The network.
        split: Extra split settings (see :func:`data_record`).
        method: The pretraining method's target.
        pretrained: Where fine-tuning weights came from.

    Returns:
        The record (JSON-compatible).
    """
    import glcnet

    return plain(
        {
            "format": RECORD_FORMAT,
            "version": RECORD_VERSION,
            "stage": stage,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "glcnet_version": getattr(glcnet, "__version__", None),
            "torch_version": torch.__version__,
            "data": data_record(data, dataset, split),
            "model": model_record(model, config.get("model", {})),
            "method": method,
            "pretrained": pretrained,
            "config": config,
        }
    )


def is_safetensors_file(path: Path) -> bool:
    """Whether ``path`` looks like a safetensors file (8-byte header length, then JSON)."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file.

    Raises:
        CheckpointReadError: Not a readable safetensors file.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointReadError(f"{path}: not a readable safetensors file ({err})") from None


def record_from_blob(blob: Any) -> dict | None:
    """The run record inside a loaded torch checkpoint, or None."""
    if isinstance(blob, dict) and isinstance(blob.get(RECORD_KEY), dict):
        return blob[RECORD_KEY]
    return None


def read_run_record(path: str | Path, required: bool = True) -> dict | None:
    """Read the run record of a checkpoint or weights file, safely.

    Args:
        path: A Lightning ``.ckpt`` (pretraining or fine-tuning), a pretrained ``.safetensors``
            export, or an older ``.pt`` export.
        required: Raise when the file has no record (else return None).

    Returns:
        The record (see the module docstring).

    Raises:
        CheckpointReadError: Missing, unreadable or unsafe file.
        MissingRunRecordError: ``required`` and the file has no record.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointReadError(f"checkpoint not found: {path}")
    record = None
    if not zipfile.is_zipfile(path) and is_safetensors_file(path):
        meta = read_safetensors_metadata(path)
        if RECORD_KEY in meta:
            try:
                record = json.loads(meta[RECORD_KEY])
            except json.JSONDecodeError as err:
                raise CheckpointReadError(f"{path}: run record is not valid JSON ({err})") from None
    else:
        record = record_from_blob(load_torch_file(path, mmap=True))
    if record is None and required:
        raise MissingRunRecordError(
            f"{path} carries no run record (written by an older glcnet or another program); "
            "give the data and model settings on the command line"
        )
    return record


def segmenter_from_record(record: Mapping[str, Any]) -> Segmenter:
    """Build the (randomly initialised) network a record describes; load the weights separately.

    Only :class:`Segmenter` is built, from the record's plain arguments; a class name in the file
    is never imported. Encoder weights are not downloaded (the checkpoint holds them).
    """
    model = record.get("model") or {}
    args = {k: model[k] for k in MODEL_KEYS if model.get(k) is not None}
    return Segmenter(**args, encoder_weights=None)


def record_mismatches(record: Mapping[str, Any], data: Any, dataset: Dataset) -> list[str]:
    """What keeps a checkpoint from fitting the data asked for (empty when it fits).

    Compares the record's classes (count and names) and bands (count and names) with the
    :class:`TileData` and the data set built from it.

    Args:
        record: The checkpoint's run record.
        data: The :class:`TileData` of the run about to use the checkpoint.
        dataset: A data set it built.

    Returns:
        One message per mismatch.
    """
    rec = record.get("data") or {}
    ds = base_dataset(dataset)
    problems = []
    classes = getattr(data, "num_classes", None)
    if rec.get("num_classes") is not None and classes is not None and rec["num_classes"] != classes:
        problems.append(f"it predicts {rec['num_classes']} classes, data.num_classes={classes}")
    names = list(getattr(data, "class_names", None) or getattr(ds, "class_names", None) or [])
    if rec.get("class_names") and names and list(rec["class_names"]) != names:
        problems.append(f"its classes are {rec['class_names']}, the data's are {names}")
    bands = list(getattr(ds, "band_names", None) or [])
    channels = len(getattr(ds, "band_indexes", None) or []) or None
    if (
        rec.get("in_channels") is not None
        and channels is not None
        and rec["in_channels"] != channels
    ):
        problems.append(
            f"it takes {rec['in_channels']} band(s) ({'/'.join(rec.get('band_names') or [])}), "
            f"data.bands={getattr(data, 'bands', None)} gives {channels}"
        )
    elif rec.get("band_names") and bands and list(rec["band_names"]) != bands:
        problems.append(
            f"it was trained on bands {'/'.join(rec['band_names'])}, the data gives "
            f"{'/'.join(bands)} (data.bands={getattr(data, 'bands', None)})"
        )
    return problems
