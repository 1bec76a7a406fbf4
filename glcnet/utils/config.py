"""Hydra/OmegaConf helpers shared by the entry scripts."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

#: The repository root (holds configs/ and data/) when glcnet is used from a source checkout.
PROJECT_ROOT: Path = Path(__file__).resolve().parents[2]
#: Absolute path of the config directory shipped with the source checkout.
CONFIG_DIR: Path = PROJECT_ROOT / "configs"

_BAND_COUNTS = {"RGB": 3, "IRRG": 3, "RGBIR": 4}


def band_count(bands: Any) -> int:
    """Number of input channels for a band mode name or an explicit list of band indexes.

    Args:
        bands: ``"RGB"``, ``"IRRG"``, ``"RGBIR"``, or a list of 1-based band indexes.

    Returns:
        The number of channels the model must accept.
    """
    if isinstance(bands, str):
        try:
            return _BAND_COUNTS[bands.upper()]
        except KeyError:
            raise ValueError(f"unknown band mode {bands!r}; use RGB, IRRG or RGBIR") from None
    if isinstance(bands, Sequence) or OmegaConf.is_list(bands):
        return len(bands)
    raise ValueError(f"cannot count bands in {bands!r}")


def register_resolvers() -> None:
    """Register the resolvers the configs use (idempotent).

    - ``${band_count:${data.bands}}``: channels of a band mode.
    - ``${project_root:}``: the source checkout (or ``$GLCNET_PROJECT_ROOT``).
    """
    OmegaConf.register_new_resolver("band_count", band_count, replace=True)
    OmegaConf.register_new_resolver(
        "project_root",
        lambda: os.environ.get("GLCNET_PROJECT_ROOT", str(PROJECT_ROOT)),
        replace=True,
    )


def instantiate(cfg: Any, **kwargs: Any) -> Any:
    """Instantiate a config node (the single place the scripts call Hydra's instantiate).

    Args:
        cfg: A config node with ``_target_``.
        **kwargs: Extra or overriding constructor arguments.

    Returns:
        The built object.
    """
    if cfg is None:
        return None
    return hydra.utils.instantiate(cfg, **kwargs)


def to_plain(cfg: DictConfig) -> dict:
    """Resolved plain-container copy of a config (for checkpoints and files)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]
