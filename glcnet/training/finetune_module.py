"""LightningModule for supervised fine-tuning of the segmentation network."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import lightning as L
import torch
from torch import Tensor, nn

from glcnet.metrics import ConfusionMatrix, segmentation_metrics
from glcnet.models.segmenter import Segmenter
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
        freeze_encoder: Keep the encoder fixed (linear-probe-like setting; BN statistics frozen too).
        ignore_index: Label value excluded from metrics.
        class_names: Names for the per-class metrics.
        exclude_from_mean: Class indices left out of mIoU / mean F1 (e.g. clutter).
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
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_name = scheduler
        self.warmup_steps = warmup_steps
        self.freeze_encoder = freeze_encoder
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names else None
        self.exclude_from_mean = list(exclude_from_mean)
        if freeze_encoder:
            for p in self.model.encoder.parameters():
                p.requires_grad_(False)
        self.val_confusion = ConfusionMatrix(model.num_classes, ignore_index=ignore_index)

    def on_train_epoch_start(self) -> None:
        """Keep a frozen encoder's batch-norm statistics fixed."""
        if self.freeze_encoder:
            self.model.encoder.eval()

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, K, H, W) of images (B, C, H, W)."""
        return self.model(x)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step on labeled tiles."""
        logits = self.model(batch["image"])
        loss = self.loss(logits, batch["mask"])
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"fine-tuning loss is {loss.item()} at step {self.global_step}; the last good "
                "checkpoint is kept in the run's checkpoints/ folder. Lower the learning rate or "
                "check the loss parameters."
            )
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        """Start a fresh confusion matrix."""
        self.val_confusion.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Accumulate the confusion matrix of one validation batch."""
        logits = self.model(batch["image"])
        loss = self.loss(logits, batch["mask"])
        self.log("val/loss", loss, batch_size=batch["image"].shape[0], sync_dist=True)
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
        """Optimizer from the config; per-step schedule over the whole run."""
        return optimization(
            self.model.parameters(),
            self.optimizer_factory,
            self.scheduler_name,
            self.trainer.estimated_stepping_batches,
            self.warmup_steps,
        )
