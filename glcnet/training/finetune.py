"""The fine-tuning run behind scripts/finetune.py."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import RandomSampler, Subset

from glcnet.data.seg_augment import AugmentedTiles
from glcnet.data.tile_data import load_subset, save_subset
from glcnet.training.export import load_pretrained
from glcnet.training.finetune_module import FinetuneModule
from glcnet.training.pretrain import output_dir_of
from glcnet.training.probes import frozen_parts, linear_probe_setup
from glcnet.training.provenance import INIT_RECORD, write_init_record
from glcnet.training.runtime import build_trainer, save_run_config, seed_everything
from glcnet.utils.config import instantiate

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

    Args:
        cfg: The composed ``finetune`` config.

    Returns:
        ``output_dir``, ``best_checkpoint``, ``subset_file``, the final ``metrics`` and
        ``is_global_zero`` (False in the other processes of a distributed run).
    """
    out = output_dir_of(cfg)
    save_run_config(cfg, out)
    seed_everything(cfg.seed)
    data = instantiate(cfg.data)
    train_full = data.dataset("train", labeled=True)
    subset_file = out / "label_subset.json"
    if cfg.subset_file:
        train = load_subset(cfg.subset_file, train_full)
        log.info("reusing labeled subset %s (%d tiles)", cfg.subset_file, len(train))
        save_subset(subset_file, train_full, train.indices, source=str(cfg.subset_file))
    else:
        label_seed = cfg.label_seed if cfg.label_seed is not None else cfg.seed
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
    parts: list[str] = []
    if cfg.pretrained:
        parts = load_pretrained(model, cfg.pretrained, transfer=cfg.transfer)
        log.info("initialised %s from %s", "+".join(parts), cfg.pretrained)
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
    train_set = AugmentedTiles(train, instantiate(cfg.train_augment))
    loader = data.loader(train_set, train=True)
    per_epoch = cfg.samples_per_epoch
    if per_epoch and len(train_set) < per_epoch:
        # few labels: draw with replacement so an epoch has a useful number of steps
        sampler = RandomSampler(train_set, replacement=True, num_samples=int(per_epoch))
        loader = torch.utils.data.DataLoader(
            train_set,
            batch_size=data.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=data.num_workers,
            persistent_workers=data.num_workers > 0,
        )
    val_loader = data.loader(data.dataset("val", labeled=True), train=False)
    if cfg.probe == "linear":  # the same settings, on cached features of the frozen network
        module, loader, val_loader = linear_probe_setup(module, cfg, data, train)
    trainer = build_trainer(cfg, out, monitor="val/mIoU")
    trainer.fit(
        module, train_dataloaders=loader, val_dataloaders=val_loader, ckpt_path=cfg.ckpt_path
    )
    best = Path(trainer.checkpoint_callback.best_model_path or out / "checkpoints" / "last.ckpt")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return {
        "output_dir": out,
        "best_checkpoint": best,
        "subset_file": subset_file,
        "metrics": metrics,
        "is_global_zero": trainer.is_global_zero,
    }
