"""What a fine-tuning run started from: fingerprints of its initial weights, written as init.json.

The protocol checks with it that a pretrained row was initialised from its pretraining's export and
a random row from no file at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

INIT_RECORD = "init.json"


def state_fingerprint(state: Mapping[str, Tensor]) -> str:
    """SHA-256 of a state dict: every key, dtype, shape and value, keys in sorted order.

    Args:
        state: Tensors by name (e.g. ``model.encoder.state_dict()`` or an export's ``encoder``).

    Returns:
        Hex digest; equal states give equal digests.
    """
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_init_record(
    path: str | Path, model: nn.Module, pretrained: str | None, transfer: str, loaded: list[str]
) -> dict:
    """Write ``init.json``: the weight file, the parts loaded from it and their fingerprints.

    Args:
        path: The file to write.
        model: The network right after initialisation (``encoder`` and ``decoder`` attributes).
        pretrained: The pretrained file, or None for random initialisation.
        transfer: The transfer setting of the run.
        loaded: Parts loaded from ``pretrained`` (empty for random init).

    Returns:
        The record.
    """
    record = {
        "pretrained": str(pretrained) if pretrained else None,
        "transfer": transfer,
        "loaded": list(loaded),
        "encoder_sha256": state_fingerprint(model.encoder.state_dict()),
        "decoder_sha256": state_fingerprint(model.decoder.state_dict()),
    }
    Path(path).write_text(json.dumps(record, indent=1))
    return record
