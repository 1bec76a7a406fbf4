"""Shared pieces of every run: seeding, precision, Trainer, logger and checkpoint callbacks."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from glcnet.utils.config import instantiate, to_plain

log = logging.getLogger(__name__)


def runs_on_gpu(accelerator: str) -> bool:
    """Whether a Trainer with this accelerator (``cpu``, ``gpu``, ``cuda``, ``auto``) uses GPUs."""
    return accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()


def resolve_precision(precision: str | int | None, accelerator: str) -> str | int:
    """Turn ``auto`` into a concrete Lightning precision for the machine at hand.

    Args:
        precision: ``auto`` or any Lightning precision value.
        accelerator: The configured accelerator (``cpu``, ``gpu``, ``auto``).

    Returns:
        ``bf16-mixed`` on GPUs with bf16, ``16-mixed`` on other GPUs, ``32`` on CPU; other values
        unchanged.
    """
    if precision not in ("auto", None):
        return precision
    if not runs_on_gpu(accelerator):
        return "32"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def build_trainer(
    cfg: DictConfig, output_dir: Path, monitor: str | None = None, **extra
) -> L.Trainer:
    """A Lightning Trainer from ``cfg.trainer`` writing TensorBoard and checkpoints to ``output_dir``.

    Args:
        cfg: The full run config (uses ``cfg.trainer``).
        output_dir: The run folder.
        monitor: Metric for the best checkpoint (mode max), e.g. ``val/mIoU``; None keeps the newest
            epoch, with ``last.ckpt`` a link to it.
        **extra: Extra Trainer arguments (callbacks are appended).

    Returns:
        The Trainer.
    """
    tcfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    accelerator = str(tcfg.get("accelerator"))
    tcfg["precision"] = resolve_precision(tcfg.get("precision"), accelerator)
    if tcfg.get("sync_batchnorm") and not runs_on_gpu(accelerator):
        log.warning("sync_batchnorm needs GPUs (torch's SyncBatchNorm); off for this CPU run")
        tcfg["sync_batchnorm"] = False
    if tcfg.get("limit_train_batches") is None:
        tcfg.pop("limit_train_batches", None)
    if tcfg.get("limit_val_batches") is None:
        tcfg.pop("limit_val_batches", None)
    ckpt = ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="best" if monitor else "epoch{epoch:03d}",
        monitor=monitor,
        mode="max",
        save_last=True if monitor else "link",  # without a monitor: last.ckpt links the newest
        save_top_k=1,
        auto_insert_metric_name=False,
    )
    callbacks = [ckpt, LearningRateMonitor(logging_interval="step"), *extra.pop("callbacks", [])]
    logger = TensorBoardLogger(save_dir=str(output_dir), name="tensorboard", version="")
    return instantiate(
        tcfg, callbacks=callbacks, logger=logger, default_root_dir=str(output_dir), **extra
    )


def save_run_config(cfg: DictConfig, output_dir: Path) -> None:
    """Write the resolved config of the run as ``config.yaml`` in the run folder."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(to_plain(cfg))))


def seed_everything(seed: int) -> None:
    """Seed python, numpy, torch and (through Lightning) the data-loader workers."""
    L.seed_everything(seed, workers=True, verbose=False)
