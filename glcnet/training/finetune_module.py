"""LightningModule for supervised fine-tuning of the segmentation network."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch import Tensor, nn

from glcnet.metrics import ConfusionMatrix, segmentation_metrics
from glcnet.models.segmenter import Segmenter
from glcnet.training.freezing import BN_MODES, PARTS, ModeKeeper, batch_norm_layers
from glcnet.training.optim import encoder_param_groups
from glcnet.training.pretrain_module import NonFiniteLossError
from glcnet.training.schedule import optimization


class FinetuneModule(L.LightningModule):
    """Trains ``model`` with a segmentation loss; validates with one confusion matrix per epoch.

    Args:
        model: The segmentation network.
        loss: Loss module ``loss(logits (B, K, H, W), target (B, H, W)) -> scalar``.
        optimizer: Partial optimizer constructor taking the parameters.
        scheduler: ``cosine`` or ``constant`` (per step).
        warmup_steps: Linear warm-up steps.
        freeze_encoder: Keep the encoder fixed (same as ``frozen=["encoder"]``).
        ignore_index: Label value excluded from metrics.
        class_names: Names for the per-class metrics.
        exclude_from_mean: Class indices left out of mIoU / mean F1 (e.g. clutter).
        frozen: Parts of the network kept fixed (``encoder``, ``decoder``): parameters and
            batch-norm running statistics (eval mode throughout training).
        bn_mode: The encoder's batch norm while it trains: ``train`` (statistics adapt to the
            labeled tiles) or ``frozen_stats`` (running statistics kept as initialised, e.g. from
            pretraining; the affine parameters still train).
    """

    def __init__(
        self,
        model: Segmenter,
        loss: nn.Module,
        optimizer: Callable,
        scheduler: str = "cosine",
        warmup_steps: int = 0,
        freeze_encoder: bool = False,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
        exclude_from_mean: Sequence[int] = (),
        frozen: Sequence[str] = (),
        bn_mode: str = "train",
    ) -> None:
        super().__init__()
        frozen = list(dict.fromkeys([*frozen, *(["encoder"] if freeze_encoder else [])]))
        unknown = sorted(set(frozen) - set(PARTS))
        if unknown:
            raise ValueError(f"frozen parts must be among {PARTS}, got {unknown}")
        if bn_mode not in BN_MODES:
            raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
        self.model = model
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_name = scheduler
        self.warmup_steps = warmup_steps
        self.frozen = frozen
        self.bn_mode = bn_mode
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names else None
        self.exclude_from_mean = list(exclude_from_mean)
        fixed = (
            batch_norm_layers(model.encoder)
            if bn_mode == "frozen_stats" and "encoder" not in frozen
            else []
        )
        self.keeper = ModeKeeper([getattr(model, p) for p in frozen], fixed)
        self.val_confusion = ConfusionMatrix(model.num_classes, ignore_index=ignore_index)

    def train(self, mode: bool = True) -> FinetuneModule:
        """Switch modes, keeping frozen parts (and fixed batch-norm statistics) in eval mode."""
        super().train(mode)
        if mode and getattr(self, "keeper", None):
            self.keeper.apply()
        return self

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        """Class logits (B, K, H, W) of a batch (its ``image``); probes override this."""
        return self.model(batch["image"])

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, K, H, W) of images (B, C, H, W)."""
        return self.model(x)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step on labeled tiles."""
        logits = self.logits(batch)
        loss = self.loss(logits, batch["mask"])
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"fine-tuning loss is {loss.item()} at step {self.global_step}; the last good "
                "checkpoint is kept in the run's checkpoints/ folder. Lower the learning rate or "
                "check the loss parameters."
            )
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch["mask"].shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        """Start a fresh confusion matrix."""
        self.val_confusion.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Accumulate the confusion matrix of one validation batch."""
        logits = self.logits(batch)
        loss = self.loss(logits, batch["mask"])
        self.log("val/loss", loss, batch_size=batch["mask"].shape[0], sync_dist=True)
        self.val_confusion.update(logits.argmax(1), batch["mask"])

    def on_validation_epoch_end(self) -> None:
        """Log mIoU, mean F1, OA and Kappa of the whole validation split."""
        self.val_confusion.sync()
        m = segmentation_metrics(
            self.val_confusion.matrix, self.class_names, exclude_from_mean=self.exclude_from_mean
        )
        for key in ("mIoU", "mF1", "OA", "Kappa"):
            value = m[key]
            self.log(f"val/{key}", 0.0 if math.isnan(value) else value, prog_bar=key == "mIoU")

    def configure_optimizers(self):
        """Optimizer from the config (encoder group for ``encoder_lr_scale``); per-step schedule."""
        return optimization(
            encoder_param_groups(self.model, self.model.encoder),
            self.optimizer_factory,
            self.scheduler_name,
            self.trainer.estimated_stepping_batches,
            self.warmup_steps,
        )
