"""Shared pieces of every run: seeding, precision, Trainer, logger, checkpoints, resumption."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from glcnet.training.checkpoints import SafeCheckpointIO
from glcnet.training.preemption import StopOnSignal, cluster_plugins
from glcnet.training.resume import LastCheckpoint, StepSeed, checkpoint_dir, resolve_ckpt_path
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
    cfg: DictConfig,
    output_dir: Path,
    monitor: str | None = None,
    callbacks: Sequence[L.Callback] = (),
    **extra,
) -> L.Trainer:
    """A Lightning Trainer from ``cfg.trainer`` writing TensorBoard and checkpoints to ``output_dir``.

    Checkpoints: ``checkpoints/last.ckpt`` every ``cfg.checkpoint_every_n_steps`` steps, at epoch
    ends, at the end and on SIGTERM/SIGUSR1 (:class:`LastCheckpoint`, :class:`StopOnSignal`);
    with a ``monitor`` also ``checkpoints/best.ckpt``. Every write is atomic and every load is
    ``weights_only`` (:class:`SafeCheckpointIO`). Global random generators are reseeded before
    each step (:class:`StepSeed`), so a resumed run draws what the uninterrupted one would have.

    Args:
        cfg: The full run config (uses ``cfg.trainer``, ``cfg.seed``,
            ``cfg.checkpoint_every_n_steps``, ``cfg.slurm_requeue``).
        output_dir: The run folder.
        monitor: Metric for the best checkpoint (mode max), e.g. ``val/mIoU``; None: no best.
        callbacks: Extra callbacks (after the checkpoint callbacks).
        **extra: Extra Trainer arguments.

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
    ckpt_dir = checkpoint_dir(output_dir)
    own: list[L.Callback] = []
    if monitor:
        own.append(
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename="best",
                monitor=monitor,
                mode="max",
                save_top_k=1,
                save_last=False,
                auto_insert_metric_name=False,
            )
        )
    own += [
        LastCheckpoint(ckpt_dir, int(cfg.get("checkpoint_every_n_steps") or 0)),
        StopOnSignal(requeue=bool(cfg.get("slurm_requeue", True))),
        StepSeed(int(cfg.seed)),
        LearningRateMonitor(logging_interval="step"),
    ]
    logger = TensorBoardLogger(save_dir=str(output_dir), name="tensorboard", version="")
    return instantiate(
        tcfg,
        callbacks=[*own, *callbacks],
        logger=logger,
        default_root_dir=str(output_dir),
        plugins=[SafeCheckpointIO(), *cluster_plugins()],
        enable_checkpointing=bool(monitor),
        **extra,
    )


def fit(
    trainer: L.Trainer,
    module: L.LightningModule,
    output_dir: Path,
    ckpt_path: str | None = None,
    **loaders,
) -> None:
    """``trainer.fit`` that resumes from ``ckpt_path`` (``last`` allowed) and stops cleanly on signals.

    Args:
        trainer: From :func:`build_trainer`.
        module: The LightningModule.
        output_dir: The run folder (``ckpt_path=last`` resumes from its ``checkpoints/last.ckpt``).
        ckpt_path: None, ``last`` or a checkpoint file.
        **loaders: ``train_dataloaders`` and ``val_dataloaders``.

    Raises:
        RunStoppedError: SIGTERM or SIGUSR1 stopped the run after ``last.ckpt`` was written.
    """
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    resume = resolve_ckpt_path(ckpt_path, output_dir)
    with warnings.catch_warnings():
        # the seeded sampler resumes mid-epoch (glcnet.training.resume.ResumeDataOrder)
        warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")
        warnings.filterwarnings("ignore", message=".*ended before the epoch ended.*")
        try:
            trainer.fit(module, ckpt_path=resume, **loaders)
        except SIGTERMException:
            stop = next(cb for cb in trainer.callbacks if isinstance(cb, StopOnSignal))
            last = checkpoint_dir(output_dir) / "last.ckpt"
            raise stop.stopped_message(trainer, last, output_dir) from None


def save_run_config(cfg: DictConfig, output_dir: Path) -> None:
    """Write the resolved config of the run as ``config.yaml`` in the run folder."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(to_plain(cfg))))


def seed_everything(seed: int) -> None:
    """Seed python, numpy, torch and (through Lightning) the data-loader workers."""
    L.seed_everything(seed, workers=True, verbose=False)
