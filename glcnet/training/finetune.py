"""The fine-tuning run behind scripts/finetune.py."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from torch.utils.data import Subset

from glcnet.data.seg_augment import AugmentedTiles, build_augment
from glcnet.data.tile_data import load_subset, save_subset
from glcnet.training.export import load_pretrained
from glcnet.training.finetune_module import FinetuneModule
from glcnet.training.output_folder import output_dir_of
from glcnet.training.probes import frozen_parts, linear_probe_setup
from glcnet.training.provenance import INIT_RECORD, write_init_record
from glcnet.training.resume import (
    LAST_NAME,
    RunRecordInCheckpoints,
    check_resume_fits,
    checkpoint_dir,
    resolve_ckpt_path,
)
from glcnet.training.run_record import base_dataset, build_run_record, read_run_record
from glcnet.training.runtime import build_trainer, fit, save_run_config, seed_everything
from glcnet.training.train_loader import training_loader
from glcnet.utils.config import instantiate, to_plain
from glcnet.utils.validation import validate_config

log = logging.getLogger(__name__)


def class_histogram(dataset, num_classes: int) -> np.ndarray:
    """Pixel count per class over a (small) labeled data set.

    Args:
        dataset: Items with ``mask`` (H, W).
        num_classes: Number of classes K.

    Returns:
        (K,) int64 counts (ignored pixels not counted).
    """
    counts = np.zeros(num_classes, dtype=np.int64)
    for i in range(len(dataset)):
        m = dataset[i]["mask"].flatten()
        m = m[(m >= 0) & (m < num_classes)]
        counts += np.bincount(m.numpy(), minlength=num_classes)[:num_classes]
    return counts


def run_finetune(cfg: DictConfig) -> dict:
    """Fine-tune a segmentation network on a labeled fraction of the training tiles.

    The config is checked and the run folder probe-written before any data is read;
    ``ckpt_path=last`` continues the run in ``hydra.run.dir`` from its ``checkpoints/last.ckpt``.

    Args:
        cfg: The composed ``finetune`` config.

    Returns:
        ``output_dir``, ``best_checkpoint``, ``last_checkpoint``, ``subset_file``, the final
        ``metrics``, ``skipped_tiles`` and ``is_global_zero`` (False in the other processes of a
        distributed run).

    Raises:
        RunStoppedError: SIGTERM/SIGUSR1 stopped the run after writing ``last.ckpt``.
    """
    validate_config(cfg, "finetune")
    out = output_dir_of(cfg)
    save_run_config(cfg, out)
    seed_everything(cfg.seed)
    data = instantiate(cfg.data)
    train_full = data.dataset("train", labeled=True)
    subset_file = out / "label_subset.json"
    label_seed = cfg.label_seed if cfg.label_seed is not None else cfg.seed
    if cfg.subset_file:
        train = load_subset(cfg.subset_file, train_full)
        log.info("reusing labeled subset %s (%d tiles)", cfg.subset_file, len(train))
        save_subset(subset_file, train_full, train.indices, source=str(cfg.subset_file))
    else:
        idx = data.labeled_indices(len(train_full), seed=label_seed)
        train = Subset(train_full, idx)
        save_subset(
            subset_file,
            train_full,
            idx,
            seed=label_seed,
            label_fraction=data.label_fraction,
            label_count=data.label_count,
            total_tiles=len(train_full),
        )
    names = data.class_names or [str(i) for i in range(data.num_classes)]
    hist = class_histogram(train, data.num_classes)
    absent = [names[k] for k in range(data.num_classes) if hist[k] == 0]
    if absent:
        warnings.warn(
            f"classes absent from the {len(train)} labeled training tiles: {', '.join(absent)}; "
            "the model cannot learn them (continuing)",
            stacklevel=1,
        )
    log.info("fine-tuning on %d of %d training tiles", len(train), len(train_full))

    model = instantiate(cfg.model)
    pretrained = None
    parts: list[str] = []
    if cfg.pretrained:
        parts = load_pretrained(model, cfg.pretrained, transfer=cfg.transfer)
        warn_if_bands_differ(cfg.pretrained, train_full)
        log.info("initialised %s from %s", "+".join(parts), cfg.pretrained)
        pretrained = {
            "path": str(cfg.pretrained),
            "transfer": cfg.transfer,
            "freeze_encoder": bool(cfg.freeze_encoder),
            "probe": cfg.probe,
        }
    write_init_record(out / INIT_RECORD, model, cfg.pretrained, cfg.transfer, parts)
    module = FinetuneModule(
        model,
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        scheduler=cfg.scheduler,
        warmup_steps=cfg.warmup_steps,
        ignore_index=data.ignore_index,
        class_names=names,
        exclude_from_mean=list(cfg.exclude_from_mean),
        frozen=frozen_parts(cfg.probe, cfg.transfer, cfg.freeze_encoder),
        bn_mode=cfg.bn_mode,
    )
    train_set = AugmentedTiles(train, build_augment(cfg.train_augment))
    per_epoch = cfg.samples_per_epoch
    # few labels: draw with replacement so that an epoch has a useful number of steps
    few = bool(per_epoch) and len(train_set) < per_epoch
    loader, data_callbacks, skipped = training_loader(
        train_set,
        data,
        cfg.seed,
        out,
        num_samples=int(per_epoch) if few else None,
        replacement=few,
    )
    val_loader = data.loader(data.dataset("val", labeled=True), train=False)
    if cfg.probe == "linear":  # the same settings, on cached features of the frozen network
        module, loader, val_loader = linear_probe_setup(module, cfg, data, train)
    record = build_run_record(
        "finetune",
        to_plain(cfg),
        data,
        train_full,
        model,
        split={
            "train_split": "train",
            "val_split": "val",
            "label_seed": label_seed,
            "labeled_tiles": len(train),
            "subset_file": str(cfg.subset_file or subset_file),
        },
        pretrained=pretrained,
    )
    resume = resolve_ckpt_path(cfg.ckpt_path, out)
    check_resume_fits(resume, record)
    trainer = build_trainer(
        cfg, out, monitor="val/mIoU", callbacks=[*data_callbacks, RunRecordInCheckpoints(record)]
    )
    fit(trainer, module, out, resume, train_dataloaders=loader, val_dataloaders=val_loader)
    last = checkpoint_dir(out) / LAST_NAME
    best = Path(trainer.checkpoint_callback.best_model_path or last)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return {
        "output_dir": out,
        "best_checkpoint": best,
        "last_checkpoint": last,
        "subset_file": subset_file,
        "metrics": metrics,
        "skipped_tiles": skipped.total(trainer) if skipped is not None else 0,
        "is_global_zero": trainer.is_global_zero,
    }


def warn_if_bands_differ(weights: str, dataset) -> None:
    """Warn when pretrained weights saw other bands (same count) than the fine-tuning data."""
    record = read_run_record(weights, required=False) or {}
    theirs = (record.get("data") or {}).get("band_names")
    ours = list(getattr(base_dataset(dataset), "band_names", []) or [])
    if theirs and ours and list(theirs) != ours:
        warnings.warn(
            f"{weights} was pretrained on bands {'/'.join(theirs)}, the fine-tuning data has "
            f"{'/'.join(ours)} (same count, so the weights load; check this is intended)",
            stacklevel=2,
        )
