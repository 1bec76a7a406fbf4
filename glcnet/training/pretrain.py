"""The pretraining run behind scripts/pretrain.py."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig

from glcnet.data.paired import PairedViewDataset
from glcnet.training.diagnostics import PretrainDiagnostics, build_knn_probe
from glcnet.training.export import export_pretrained
from glcnet.training.pretrain_module import PretrainModule
from glcnet.training.runtime import build_trainer, save_run_config, seed_everything
from glcnet.training.visuals import draw_pair
from glcnet.utils.config import instantiate

log = logging.getLogger(__name__)


class ViewPairImages(L.Callback):
    """Logs view pairs with their matched regions to TensorBoard every ``every`` steps."""

    def __init__(self, every: int, count: int = 4) -> None:
        self.every = every
        self.count = count

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D102
        if not self.every or trainer.global_step % self.every or not trainer.is_global_zero:
            return
        if "regions" not in batch or trainer.logger is None:
            return
        n = min(self.count, batch["view_a"].shape[0])
        pics = [
            draw_pair(
                batch["view_a"][i],
                batch["view_b"][i],
                batch["index_a"][i],
                batch["index_b"][i],
                batch["regions"][i],
                batch["region_valid"][i],
            )
            for i in range(n)
        ]
        grid = torch.cat(pics, dim=1)
        trainer.logger.experiment.add_image("train/view_pairs", grid, trainer.global_step)


def output_dir_of(cfg: DictConfig) -> Path:
    """The run folder, ``cfg.paths.output_dir`` (Hydra's output dir unless overridden), created."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_pretrain(cfg: DictConfig) -> dict:
    """Pretrain a network with the configured method and export its weights.

    Args:
        cfg: The composed ``pretrain`` config.

    Returns:
        ``output_dir``, ``export`` (the weights file), ``last_checkpoint``, the final ``metrics``
        and ``is_global_zero`` (False in the other processes of a distributed run).
    """
    out = output_dir_of(cfg)
    save_run_config(cfg, out)
    seed_everything(cfg.seed)
    data = instantiate(cfg.data)
    views = instantiate(cfg.augment)
    method_cls = hydra.utils.get_class(cfg.method._target_)
    labels = getattr(method_cls, "requires_labels", False)
    tiles = data.pretrain_dataset(labeled=labels)
    pairs = PairedViewDataset(tiles, views, keep=("mask",) if labels else ())
    loader = data.loader(pairs, train=True)
    log.info("pretraining on %d tiles (%d batches per epoch) in %s", len(pairs), len(loader), out)
    extra = (
        {"num_samples": len(pairs)} if getattr(method_cls, "requires_num_samples", False) else {}
    )
    method = instantiate(cfg.method, **extra)
    module = PretrainModule(
        method,
        optimizer=instantiate(cfg.optimizer),
        scheduler=cfg.scheduler,
        warmup_steps=cfg.warmup_steps,
        diagnostics_every=cfg.diagnostics_every,
    )
    health = PretrainDiagnostics(
        cfg.diagnostics_every, build_knn_probe(data, cfg.diagnostics_probe_tiles)
    )
    trainer = build_trainer(cfg, out, callbacks=[ViewPairImages(cfg.diagnostics_every), health])
    trainer.fit(module, train_dataloaders=loader, ckpt_path=cfg.ckpt_path)
    export = out / cfg.export_name
    if trainer.is_global_zero:
        export_pretrained(
            method.model,
            export,
            method=str(cfg.method._target_),
            steps=trainer.global_step,
            epochs=trainer.current_epoch,
        )
        log.info("exported pretrained weights to %s", export)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    last = out / "checkpoints" / "last.ckpt"
    return {
        "output_dir": out,
        "export": export,
        "last_checkpoint": last,
        "metrics": metrics,
        "is_global_zero": trainer.is_global_zero,
    }
