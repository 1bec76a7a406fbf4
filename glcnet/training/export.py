"""Export pretrained encoder/decoder weights (safetensors) and load them into a segmentation model.

The export is a safetensors file: tensors ``encoder.<key>`` and ``decoder.<key>`` plus string
metadata ``format`` (:data:`EXPORT_FORMAT`), ``glcnet_run_record`` (the run record as JSON, see
:mod:`glcnet.training.run_record`) and ``meta`` (JSON: method, steps, epochs, ...). Reading it runs
no code. Exports of earlier versions (``pretrained.pt``, a torch file) and pretraining Lightning
checkpoints are read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glcnet.models.segmenter import Segmenter
from glcnet.training.checkpoints import CheckpointReadError, atomic_write, load_torch_file
from glcnet.training.run_record import (
    RECORD_KEY,
    is_safetensors_file,
    read_safetensors_metadata,
    record_from_blob,
)

log = logging.getLogger(__name__)

EXPORT_FORMAT = "glcnet-pretrained-v2"
LEGACY_EXPORT_FORMAT = "glcnet-pretrained-v1"  # torch.save dict of the first versions (.pt)
#: State-dict prefixes of the network inside Lightning checkpoints (pretraining, fine-tuning).
_NETWORK_PREFIXES = ("method.model.net.", "model.net.")


class CheckpointMismatchError(ValueError):
    """A checkpoint's weights or recorded data do not fit the model or data asked for."""


def export_pretrained(
    model: Segmenter, path: str | Path, record: Mapping[str, Any] | None = None, **meta: Any
) -> Path:
    """Save the encoder and decoder weights of a pretrained network as a safetensors file.

    Args:
        model: The pretrained network.
        path: Output file (``.safetensors``); written atomically.
        record: The run record (stored as JSON metadata).
        **meta: Extra JSON-compatible information (method, steps, epochs, ...).

    Returns:
        The written path.
    """
    from safetensors.torch import save

    tensors = {}
    for part in ("encoder", "decoder"):
        module: nn.Module = getattr(model, part)
        for key, value in module.state_dict().items():
            tensors[f"{part}.{key}"] = value.detach().cpu().contiguous().clone()
    metadata = {
        "format": EXPORT_FORMAT,
        "meta": json.dumps(
            {
                "encoder_name": model.encoder_name,
                "in_channels": model.in_channels,
                "decoder_channels": model.decoder_channels,
                "output_stride": model.output_stride,
                **meta,
            }
        ),
    }
    if record is not None:
        metadata[RECORD_KEY] = json.dumps(record)
    payload = save(tensors, metadata=metadata)
    return atomic_write(path, lambda fh: fh.write(payload))


def _split_parts(tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    parts: dict[str, dict[str, torch.Tensor]] = {"encoder": {}, "decoder": {}}
    for key, value in tensors.items():
        part, _, rest = key.partition(".")
        if part in parts and rest:
            parts[part][rest] = value
    return parts


def read_pretrained(path: str | Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict | None]:
    """Read encoder/decoder state dicts and the run record from any pretrained-weights file.

    Args:
        path: A safetensors export, an older ``.pt`` export, or a pretraining (or fine-tuning)
            Lightning checkpoint.

    Returns:
        ``({"encoder": {...}, "decoder": {...}}, record or None)``.

    Raises:
        CheckpointReadError: Missing, unreadable or unsafe file.
        CheckpointMismatchError: A readable file that holds no network weights.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointReadError(f"pretrained weights not found: {path}")
    if not zipfile.is_zipfile(path) and is_safetensors_file(path):
        from safetensors.torch import load_file

        meta = read_safetensors_metadata(path)
        try:
            tensors = load_file(str(path), device="cpu")
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointReadError(f"{path}: cannot read its tensors ({err})") from None
        record = json.loads(meta[RECORD_KEY]) if RECORD_KEY in meta else None
        parts = _split_parts(tensors)
    else:
        blob = load_torch_file(path, "pretrained weights")
        record = record_from_blob(blob)
        if isinstance(blob, dict) and blob.get("format") == LEGACY_EXPORT_FORMAT:
            parts = {"encoder": blob["encoder"], "decoder": blob["decoder"]}
        elif isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict):
            parts = _network_parts(blob["state_dict"])
        else:
            raise CheckpointMismatchError(
                f"{path}: neither a glcnet export ({EXPORT_FORMAT}) nor a Lightning checkpoint"
            )
    if not parts["encoder"]:
        raise CheckpointMismatchError(f"{path}: holds no encoder weights")
    return parts, record


def _network_parts(state: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Encoder/decoder weights of the trained network in a Lightning state dict.

    Only the network itself counts (``method.model.net.*`` in pretraining, ``model.net.*`` in
    fine-tuning checkpoints), never copies such as MoCo's momentum encoder.
    """
    for prefix in _NETWORK_PREFIXES:
        inner = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if inner:
            return _split_parts(inner)
    return {"encoder": {}, "decoder": {}}


def check_record_fits_model(record: Mapping[str, Any] | None, model: Segmenter, path: Any) -> None:
    """Refuse weights whose recorded band count differs from the model's input channels.

    Args:
        record: The weights' run record (None: nothing to check).
        model: The network the weights go into.
        path: The file, for messages.

    Raises:
        CheckpointMismatchError: The band counts differ.
    """
    data = (record or {}).get("data") or {}
    channels = data.get("in_channels") or (record or {}).get("model", {}).get("in_channels")
    if channels is not None and int(channels) != model.in_channels:
        names = data.get("band_names") or []
        raise CheckpointMismatchError(
            f"{path}: the weights were pretrained on {channels} band(s) "
            f"({'/'.join(names) or data.get('bands')}) but the fine-tuning data has "
            f"{model.in_channels} (model.in_channels={model.in_channels}); choose data.bands with "
            f"{channels} bands or other weights (conv1.weight would not fit)"
        )


def load_pretrained(model: Segmenter, path: str | Path, transfer: str = "encoder") -> list[str]:
    """Copy pretrained weights into ``model``.

    Args:
        model: The segmentation network to initialise.
        path: A safetensors export from :func:`export_pretrained`, an older ``.pt`` export or a
            pretraining Lightning checkpoint.
        transfer: ``encoder`` (default, as the paper) or ``encoder+decoder``.

    Returns:
        Names of the parts loaded.

    Raises:
        CheckpointReadError: Missing, unreadable or unsafe file.
        CheckpointMismatchError: Band count, keys or shapes do not fit (named in the message).
    """
    if transfer not in ("encoder", "encoder+decoder"):
        raise ValueError(f"transfer must be 'encoder' or 'encoder+decoder', got {transfer!r}")
    parts, record = read_pretrained(path)
    check_record_fits_model(record, model, path)
    names = ["encoder"] if transfer == "encoder" else ["encoder", "decoder"]
    for name in names:
        module: nn.Module = getattr(model, name)
        check_state_fits(module.state_dict(), parts[name], path, f"{name} weights", model)
        module.load_state_dict(parts[name])
    return names


def check_state_fits(
    own: Mapping[str, torch.Tensor],
    theirs: Mapping[str, torch.Tensor],
    path: Any,
    what: str,
    model: Segmenter,
) -> None:
    """Raise :class:`CheckpointMismatchError` naming missing, unexpected and mis-shaped keys."""
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    shape = sorted(
        f"{k}: checkpoint {tuple(theirs[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(theirs)
        if own[k].shape != theirs[k].shape
    )
    if missing or unexpected or shape:

        def few(keys: list[str]) -> str:
            return f"{keys[:5]}{' ...' if len(keys) > 5 else ''}"

        raise CheckpointMismatchError(
            f"{path}: {what} do not fit the model (encoder={model.encoder_name}, "
            f"in_channels={model.in_channels}, classes={model.num_classes}). "
            f"missing: {few(missing)}; unexpected: {few(unexpected)}; shape mismatch: {few(shape)}"
        )
