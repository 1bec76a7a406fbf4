"""The pretraining run behind scripts/pretrain.py."""

from __future__ import annotations

import logging

import hydra
import lightning as L
import torch
from omegaconf import DictConfig

from glcnet.data.paired import PairedViewDataset
from glcnet.training.diagnostics import PretrainDiagnostics, build_knn_probe
from glcnet.training.export import export_pretrained
from glcnet.training.output_folder import output_dir_of
from glcnet.training.pretrain_module import PretrainModule
from glcnet.training.resume import (
    LAST_NAME,
    RunRecordInCheckpoints,
    check_resume_fits,
    checkpoint_dir,
    resolve_ckpt_path,
)
from glcnet.training.run_record import build_run_record
from glcnet.training.runtime import build_trainer, fit, save_run_config, seed_everything
from glcnet.training.train_loader import training_loader
from glcnet.training.visuals import draw_pair
from glcnet.utils.config import instantiate, to_plain
from glcnet.utils.validation import validate_config

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


def run_pretrain(cfg: DictConfig) -> dict:
    """Pretrain a network with the configured method and export its weights.

    The config is checked first (:func:`glcnet.utils.validation.validate_config`) and the run
    folder probe-written, before any data is read. ``ckpt_path=last`` continues the run in
    ``hydra.run.dir`` exactly where its ``checkpoints/last.ckpt`` stopped.

    Args:
        cfg: The composed ``pretrain`` config.

    Returns:
        ``output_dir``, ``export`` (the weights file), ``last_checkpoint``, the final ``metrics``,
        ``skipped_tiles`` (unreadable tile reads replaced, with ``data.skip_bad_tiles``) and
        ``is_global_zero`` (False in the other processes of a distributed run).

    Raises:
        RunStoppedError: SIGTERM/SIGUSR1 stopped the run after writing ``last.ckpt``.
    """
    validate_config(cfg, "pretrain")
    out = output_dir_of(cfg)
    save_run_config(cfg, out)
    seed_everything(cfg.seed)
    data = instantiate(cfg.data)
    views = instantiate(cfg.augment)
    method_cls = hydra.utils.get_class(cfg.method._target_)
    labels = getattr(method_cls, "requires_labels", False)
    tiles = data.pretrain_dataset(labeled=labels)
    pairs = PairedViewDataset(tiles, views, keep=("mask",) if labels else ())
    loader, data_callbacks, skipped = training_loader(pairs, data, cfg.seed, out)
    log.info("pretraining on %d tiles (%d batches per epoch) in %s", len(pairs), len(loader), out)
    extra = (
        {"num_samples": len(pairs)} if getattr(method_cls, "requires_num_samples", False) else {}
    )
    method = instantiate(cfg.method, **extra)
    record = build_run_record(
        "pretrain", to_plain(cfg), data, tiles, method.model, method=str(cfg.method._target_)
    )
    resume = resolve_ckpt_path(cfg.ckpt_path, out)
    check_resume_fits(resume, record)
    module = PretrainModule(
        method,
        optimizer=instantiate(cfg.optimizer),
        scheduler=cfg.scheduler,
        warmup_steps=cfg.warmup_steps,
        diagnostics_every=cfg.diagnostics_every,
    )
    # the probe's tiles are read only when diagnostics run at all
    probe_tiles = cfg.diagnostics_probe_tiles if cfg.diagnostics_every else 0
    health = PretrainDiagnostics(cfg.diagnostics_every, build_knn_probe(data, probe_tiles))
    callbacks = [
        ViewPairImages(cfg.diagnostics_every),
        health,
        *data_callbacks,
        RunRecordInCheckpoints(record),
    ]
    trainer = build_trainer(cfg, out, callbacks=callbacks)
    fit(trainer, module, out, resume, train_dataloaders=loader)
    export = out / cfg.export_name
    if trainer.is_global_zero:
        export_pretrained(
            method.model,
            export,
            record=record,
            method=str(cfg.method._target_),
            steps=trainer.global_step,
            epochs=trainer.current_epoch,
        )
        log.info("exported pretrained weights to %s", export)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return {
        "output_dir": out,
        "export": export,
        "last_checkpoint": checkpoint_dir(out) / LAST_NAME,
        "metrics": metrics,
        "skipped_tiles": skipped.total(trainer) if skipped is not None else 0,
        "is_global_zero": trainer.is_global_zero,
    }
