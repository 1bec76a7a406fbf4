"""Export pretrained encoder/decoder weights and load them into a segmentation model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from glcnet.models.segmenter import Segmenter

EXPORT_FORMAT = "glcnet-pretrained-v1"


def export_pretrained(model: Segmenter, path: str | Path, **meta: Any) -> Path:
    """Save the encoder and decoder weights of a pretrained network.

    Args:
        model: The pretrained network.
        path: Output file (``.pt``).
        **meta: Extra information stored with the weights (method, encoder, epochs, ...).

    Returns:
        The written path.
    """
    path = Path(path)
    torch.save(
        {
            "format": EXPORT_FORMAT,
            "encoder": {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()},
            "decoder": {k: v.detach().cpu() for k, v in model.decoder.state_dict().items()},
            "meta": {
                "encoder_name": model.encoder_name,
                "in_channels": model.in_channels,
                "decoder_channels": model.decoder_channels,
                "output_stride": model.output_stride,
                **meta,
            },
        },
        path,
    )
    return path


class CheckpointMismatchError(ValueError):
    """A checkpoint's weights do not fit the model."""


def _extract(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Read encoder/decoder state dicts from an export file or a Lightning pretraining checkpoint."""
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights not found: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointMismatchError(
            f"{path}: cannot be read as a torch checkpoint ({err})"
        ) from err
    if isinstance(blob, dict) and blob.get("format") == EXPORT_FORMAT:
        return {"encoder": blob["encoder"], "decoder": blob["decoder"]}
    state = blob.get("state_dict") if isinstance(blob, dict) else None
    if state is None:
        raise CheckpointMismatchError(
            f"{path}: neither a glcnet export ({EXPORT_FORMAT}) nor a Lightning checkpoint"
        )
    parts: dict[str, dict[str, torch.Tensor]] = {"encoder": {}, "decoder": {}}
    for key, value in state.items():
        for part in parts:
            marker = f"net.{part}."
            if marker in key:
                parts[part][key.split(marker, 1)[1]] = value
    if not parts["encoder"]:
        raise CheckpointMismatchError(
            f"{path}: holds no encoder weights (keys like '*.net.encoder.*')"
        )
    return parts


def load_pretrained(model: Segmenter, path: str | Path, transfer: str = "encoder") -> list[str]:
    """Copy pretrained weights into ``model``.

    Args:
        model: The segmentation network to initialise.
        path: An export file from :func:`export_pretrained` or a pretraining Lightning checkpoint.
        transfer: ``encoder`` (default, as the paper) or ``encoder+decoder``.

    Returns:
        Names of the parts loaded.

    Raises:
        CheckpointMismatchError: Keys missing, unexpected, or of another shape (named in the message).
    """
    if transfer not in ("encoder", "encoder+decoder"):
        raise ValueError(f"transfer must be 'encoder' or 'encoder+decoder', got {transfer!r}")
    parts = _extract(Path(path))
    names = ["encoder"] if transfer == "encoder" else ["encoder", "decoder"]
    for name in names:
        module: nn.Module = getattr(model, name)
        own = module.state_dict()
        theirs = parts[name]
        missing = sorted(set(own) - set(theirs))
        unexpected = sorted(set(theirs) - set(own))
        shape = sorted(
            f"{k}: checkpoint {tuple(theirs[k].shape)} vs model {tuple(own[k].shape)}"
            for k in set(own) & set(theirs)
            if own[k].shape != theirs[k].shape
        )
        if missing or unexpected or shape:
            raise CheckpointMismatchError(
                f"{path}: {name} weights do not fit the model "
                f"(encoder={model.encoder_name}, in_channels={model.in_channels}). "
                f"missing: {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
                f"unexpected: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}; "
                f"shape mismatch: {shape[:5]}{' ...' if len(shape) > 5 else ''}"
            )
        module.load_state_dict(theirs)
    return names
