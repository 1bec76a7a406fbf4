"""Evaluations that separate representation quality from fine-tuning (``finetune.py probe=...``).

- ``probe=frozen``: the transferred part (encoder, or encoder + decoder) is frozen, parameters and
  batch-norm statistics; the rest is trained as in fine-tuning
  (:class:`glcnet.training.finetune_module.FinetuneModule` with ``frozen=...``).
- ``probe=linear``: a :class:`glcnet.models.linear_probe.LinearProbe` (1x1 convolution on the frozen
  features of the transferred part) is trained on features computed once per tile and kept in
  memory, so every step costs a 1x1 convolution instead of a network pass. Model selection uses
  the cached features of the validation tiles; the saved checkpoint holds the whole probe
  (backbone + classifier), so the evaluate stage scores it on whole scenes like any other run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

from glcnet.models.linear_probe import LinearProbe, source_of_transfer
from glcnet.models.segmenter import Segmenter
from glcnet.training.finetune_module import FinetuneModule
from glcnet.training.runtime import runs_on_gpu

log = logging.getLogger(__name__)

#: Values of ``finetune.py probe=``.
PROBES = ("none", "frozen", "linear")


class ProbeCacheError(ValueError):
    """The features to cache for a linear probe would not fit the configured memory limit."""


class CachedFeatures(Dataset):
    """Features of a frozen network, one entry per tile, with the tiles' masks.

    Args:
        features: (N, C, h, w) float32.
        masks: (N, H, W) int64 class indices.
    """

    def __init__(self, features: Tensor, masks: Tensor) -> None:
        if features.shape[0] != masks.shape[0]:
            raise ValueError(f"{features.shape[0]} feature maps for {masks.shape[0]} masks")
        self.features = features
        self.masks = masks

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"features": self.features[index], "mask": self.masks[index]}


@torch.no_grad()
def cache_features(
    probe: LinearProbe,
    tiles: Dataset,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    max_gb: float = 4.0,
    what: str = "tiles",
) -> CachedFeatures:
    """Compute the probed features of every tile once (frozen network, eval mode).

    Args:
        probe: The probe whose :meth:`~LinearProbe.features` are cached.
        tiles: Items with ``image`` (C_in, H, W) and ``mask`` (H, W).
        batch_size: Tiles per network pass.
        device: Where the network runs (the cache is kept on the CPU).
        max_gb: Refuse when the cache would exceed this many GB.
        what: Name of the tiles in messages (e.g. ``val tiles``).

    Returns:
        The cache.

    Raises:
        ProbeCacheError: The cache would exceed ``max_gb``.
    """
    probe.backbone.to(device).eval()
    n = len(tiles)
    feats: list[Tensor] = []
    masks: list[Tensor] = []
    for start in range(0, n, batch_size):
        items = [tiles[i] for i in range(start, min(n, start + batch_size))]
        images = torch.stack([it["image"] for it in items]).to(device)
        f = probe.features(images).float().cpu()
        if start == 0:
            need = n * f[0].numel() * 4 / 1e9
            if need > max_gb:
                raise ProbeCacheError(
                    f"linear probe: the features of {n} {what} ({tuple(f.shape[1:])} each) need "
                    f"{need:.1f} GB, more than probe_cache_max_gb={max_gb}; raise it, or use "
                    "fewer validation tiles"
                )
        feats.append(f)
        masks.append(torch.stack([it["mask"] for it in items]).long())
    probe.backbone.cpu()
    return CachedFeatures(torch.cat(feats), torch.cat(masks))


class LinearProbeModule(FinetuneModule):
    """Trains a :class:`LinearProbe`'s classifier on cached features (batches of ``features``).

    Takes the arguments of :class:`FinetuneModule`; ``model`` is the probe, whose backbone is
    frozen whatever ``frozen`` says.
    """

    def __init__(self, model: LinearProbe, **kwargs) -> None:
        kwargs["frozen"] = ["encoder", "decoder"]
        super().__init__(model, **kwargs)

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits (B, K, H, W) from cached ``features``, upsampled to the ``mask`` size."""
        return self.model.classify(batch["features"], batch["mask"].shape[-2:])


def build_linear_probe(
    model: Segmenter,
    transfer: str,
    train_tiles: Dataset,
    val_tiles: Dataset,
    batch_size: int,
    eval_batch_size: int,
    samples_per_epoch: int | None,
    device: str | torch.device = "cpu",
    max_gb: float = 4.0,
) -> tuple[LinearProbe, DataLoader, DataLoader]:
    """Wrap ``model`` in a linear probe, cache its features and build the probe's loaders.

    Args:
        model: The (initialised) segmentation network.
        transfer: ``encoder`` probes the deepest encoder features, ``encoder+decoder`` the decoder
            output.
        train_tiles: The labeled training tiles (un-augmented: features are computed once).
        val_tiles: The validation tiles (model selection).
        batch_size: Training batch size (cached feature maps per step).
        eval_batch_size: Batch size of the validation pass and of the caching passes.
        samples_per_epoch: With fewer training tiles than this, an epoch draws this many with
            replacement (as fine-tuning does); None or 0: one pass over the tiles.
        device: Where the features are computed.
        max_gb: Memory limit of each cache.

    Returns:
        The probe (standardisation set from the training features), the training loader and the
        validation loader, both over cached features.
    """
    probe = LinearProbe(model, source_of_transfer(transfer))
    train = cache_features(probe, train_tiles, eval_batch_size, device, max_gb, "training tiles")
    val = cache_features(probe, val_tiles, eval_batch_size, device, max_gb, "val tiles")
    probe.set_statistics(train.features)
    log.info(
        "linear probe on %s features %s: cached %d training and %d val tiles",
        probe.source,
        tuple(train.features.shape[1:]),
        len(train),
        len(val),
    )
    bs = min(batch_size, len(train)) if not samples_per_epoch else batch_size
    sampler = (
        RandomSampler(train, replacement=True, num_samples=int(samples_per_epoch))
        if samples_per_epoch and len(train) < samples_per_epoch
        else RandomSampler(train)
    )
    train_loader = DataLoader(train, batch_size=bs, sampler=sampler, drop_last=len(train) > bs)
    val_loader = DataLoader(val, batch_size=eval_batch_size, shuffle=False)
    return probe, train_loader, val_loader


def linear_probe_setup(
    module: FinetuneModule, cfg: DictConfig, data, train_tiles: Dataset
) -> tuple[LinearProbeModule, DataLoader, DataLoader]:
    """Turn a fine-tuning set-up into a linear probe with the same loss, optimizer and schedule.

    Args:
        module: The fine-tuning module built from the run's config (its network is probed).
        cfg: The composed ``finetune`` config (``transfer``, ``samples_per_epoch``,
            ``probe_cache_max_gb``, ``trainer.accelerator``).
        data: The run's :class:`glcnet.data.tile_data.TileData`.
        train_tiles: The labeled training tiles.

    Returns:
        The probe's module, training loader and validation loader (over cached features).
    """
    device = "cuda" if runs_on_gpu(str(cfg.trainer.accelerator)) else "cpu"
    probe, train_loader, val_loader = build_linear_probe(
        module.model,
        cfg.transfer,
        train_tiles,
        data.dataset("val", labeled=True),
        batch_size=data.batch_size,
        eval_batch_size=data.eval_batch_size,
        samples_per_epoch=cfg.samples_per_epoch,
        device=device,
        max_gb=float(cfg.probe_cache_max_gb),
    )
    probe_module = LinearProbeModule(
        probe,
        loss=module.loss,
        optimizer=module.optimizer_factory,
        scheduler=module.scheduler_name,
        warmup_steps=module.warmup_steps,
        ignore_index=module.ignore_index,
        class_names=module.class_names,
        exclude_from_mean=module.exclude_from_mean,
    )
    return probe_module, train_loader, val_loader


def frozen_parts(probe: str, transfer: str, freeze_encoder: bool = False) -> list[str]:
    """The network parts kept fixed for a ``probe`` setting.

    Args:
        probe: ``none``, ``frozen`` or ``linear``.
        transfer: ``encoder`` or ``encoder+decoder`` (the transferred part).
        freeze_encoder: The older switch: also freeze the encoder.

    Returns:
        Part names among ``encoder`` and ``decoder``.
    """
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    parts: Sequence[str] = []
    if probe in ("frozen", "linear"):
        parts = ["encoder"] if transfer == "encoder" else ["encoder", "decoder"]
    if freeze_encoder and "encoder" not in parts:
        parts = ["encoder", *parts]
    return list(parts)
