"""From a fine-tuning checkpoint to a ready model and the data contract it was trained under.

:func:`load_model_for_prediction` is the only place prediction reads a checkpoint. The weights come
from the Lightning checkpoint (``state_dict`` keys ``model.*``), loaded with
``torch.load(weights_only=True)``; the data contract (bands, classes, palette, tile size, model
arguments) comes from the run folder's ``config.yaml`` next to ``checkpoints/``. Both files are
treated as data: the model is built from known :class:`~glcnet.models.Segmenter` arguments only,
never by instantiating a ``_target_`` read from a file.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from glcnet.data.classes import IGNORE_INDEX, ISPRS_CLASSES, ISPRS_PALETTE
from glcnet.data.errors import MissingDataError
from glcnet.data.isprs import Potsdam, Vaihingen
from glcnet.models.segmenter import Segmenter
from glcnet.prediction.settings import PredictionSettings, default_palette
from glcnet.training.export import CheckpointMismatchError

#: Model targets a run config may name (the only network prediction builds).
_SEGMENTER_TARGETS = ("glcnet.models.Segmenter", "glcnet.models.segmenter.Segmenter")
#: ISPRS data-set classes a run config may name, by their config spelling.
_ISPRS_CLASSES = {
    "glcnet.data.Potsdam": Potsdam,
    "glcnet.data.isprs.Potsdam": Potsdam,
    "glcnet.data.Vaihingen": Vaihingen,
    "glcnet.data.isprs.Vaihingen": Vaihingen,
}


def load_model_for_prediction(
    checkpoint: str | Path,
) -> tuple[Segmenter, PredictionSettings]:
    """Build the trained network of a fine-tuning checkpoint and read what data it expects.

    Contract (what the rest of prediction relies on): the model is a
    :class:`~glcnet.models.Segmenter` on the CPU in eval mode, with the checkpoint's weights; the
    settings give its classes (names and colours), input bands, pixel scaling and training tile size.

    Args:
        checkpoint: A fine-tuning checkpoint, e.g. ``<run>/checkpoints/best.ckpt``.

    Returns:
        ``(model, settings)``.

    Raises:
        MissingDataError: The checkpoint file does not exist.
        CheckpointMismatchError: It cannot be read weights-only, holds no model weights, has no
            run config next to it, or its weights do not fit the configured model.
    """
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise MissingDataError(f"checkpoint not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise CheckpointMismatchError(
            f"{path}: cannot be read as a weights-only torch checkpoint ({err})"
        ) from err
    state = blob.get("state_dict") if isinstance(blob, dict) else None
    weights = {k[len("model.") :]: v for k, v in (state or {}).items() if k.startswith("model.")}
    if not weights:
        raise CheckpointMismatchError(
            f"{path}: not a fine-tuning checkpoint (no 'state_dict' with 'model.*' weights)"
        )
    # TODO(lead): read the checkpoint's run record (bands, band indexes, class names, palette,
    # ignore index, tile size, input scaling, model config) from `blob` instead of the run
    # folder's config.yaml; keep this function's signature and return values.
    run_config = _read_run_config(path)
    model = _build_model(run_config.get("model"), path)
    _load_weights(model, weights, path)
    settings = _settings_from_run_config(run_config, model, path)
    return model.eval(), settings


def _read_run_config(checkpoint: Path) -> dict:
    """The resolved config of the run that wrote ``checkpoint`` (``<run>/config.yaml``)."""
    config = checkpoint.resolve().parent.parent / "config.yaml"
    if not config.is_file():
        raise CheckpointMismatchError(
            f"{checkpoint}: no run config next to it (expected {config}, written by "
            f"scripts/finetune.py); prediction needs it for the bands, classes and model"
        )
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(config), resolve=False)
    except Exception as err:  # YAML and OmegaConf parse errors
        raise CheckpointMismatchError(f"{config}: not a readable YAML run config ({err})") from err
    if not isinstance(cfg, dict) or not isinstance(cfg.get("data"), dict):
        raise CheckpointMismatchError(f"{config}: not a run config (no 'data' section)")
    return cfg


def _build_model(model_cfg: Any, checkpoint: Path) -> Segmenter:
    """A fresh Segmenter from the run's model config (known arguments only, no download)."""
    if not isinstance(model_cfg, Mapping) or model_cfg.get("_target_") not in _SEGMENTER_TARGETS:
        target = model_cfg.get("_target_") if isinstance(model_cfg, Mapping) else model_cfg
        raise CheckpointMismatchError(
            f"{checkpoint}: the run's model is {target!r}; prediction builds "
            f"{_SEGMENTER_TARGETS[0]} only"
        )
    known = set(inspect.signature(Segmenter).parameters)
    unknown = sorted(set(model_cfg) - known - {"_target_"})
    if unknown:
        raise CheckpointMismatchError(
            f"{checkpoint}: the run's model config has arguments Segmenter does not take: {unknown}"
        )
    kwargs = {k: v for k, v in model_cfg.items() if k in known}
    kwargs["encoder_weights"] = None  # the checkpoint holds every weight: nothing to download
    try:
        return Segmenter(**kwargs)
    except (TypeError, ValueError) as err:
        raise CheckpointMismatchError(f"{checkpoint}: cannot build the run's model: {err}") from err


def _load_weights(model: Segmenter, weights: dict[str, torch.Tensor], checkpoint: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shape = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or unexpected or shape:
        raise CheckpointMismatchError(
            f"{checkpoint}: weights do not fit the run's model (encoder={model.encoder_name}, "
            f"in_channels={model.in_channels}, classes={model.num_classes}); missing: "
            f"{missing[:5]}, unexpected: {unexpected[:5]}, shape mismatch: {shape[:5]}"
        )
    model.load_state_dict(weights)


def _settings_from_run_config(cfg: dict, model: Segmenter, checkpoint: Path) -> PredictionSettings:
    """The data contract from the run config's ``data`` section (see the module docstring)."""
    data = cfg["data"]
    kwargs = data.get("dataset_kwargs") or {}
    isprs = _ISPRS_CLASSES.get(str(data.get("dataset_class")))
    bands = data.get("bands")
    band_indexes = band_names = None
    if isinstance(bands, str):
        if isprs is not None and bands.upper() in isprs.MODES:
            band_names = isprs.MODES[bands.upper()].band_names
    elif isinstance(bands, list) and bands:
        band_indexes = tuple(int(b) for b in bands)
        band_names = tuple(f"B{b}" for b in band_indexes)
    if band_indexes is not None and len(band_indexes) != model.in_channels:
        raise CheckpointMismatchError(
            f"{checkpoint}: the run read bands {list(band_indexes)} but its model takes "
            f"{model.in_channels} input bands"
        )
    if band_names is not None and len(band_names) != model.in_channels:
        band_names = None
    k = model.num_classes
    if isprs is not None:
        names, palette = ISPRS_CLASSES, ISPRS_PALETTE
    else:  # the folder data set: its own names, a palette only for colour-coded masks
        names = kwargs.get("class_names") or ISPRS_CLASSES
        palette = kwargs.get("palette")
    names = data.get("class_names") or names
    names = (
        tuple(str(n) for n in names) if len(names) == k else tuple(f"class_{i}" for i in range(k))
    )
    if palette is None or len(palette) != k:
        palette = default_palette(k)
    tile_size = data.get("tile_size")
    if not isinstance(tile_size, int) or tile_size < 1:
        raise CheckpointMismatchError(
            f"{checkpoint}: the run config has no usable data.tile_size ({tile_size!r})"
        )
    return PredictionSettings(
        num_classes=k,
        class_names=names,
        palette=tuple(tuple(int(v) for v in rgb) for rgb in palette),
        tile_size=tile_size,
        in_channels=model.in_channels,
        band_indexes=band_indexes,
        band_names=band_names,
        input_dtype=None,  # not in the run config: unknown until the run record says it
        input_scale=None,
        ignore_index=int(data.get("ignore_index", IGNORE_INDEX)),
        source=str(checkpoint),
    )
