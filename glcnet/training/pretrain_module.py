"""LightningModule that trains any pretraining method (GLCNet, SimCLR, ...)."""

from __future__ import annotations

import time
from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor, nn

from glcnet.training.optim import encoder_param_groups
from glcnet.training.schedule import optimization


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class PretrainModule(L.LightningModule):
    """Optimises ``method(batch)["loss"]`` and logs every entry of the loss dict.

    Args:
        method: A pretraining method: ``nn.Module`` mapping a batch dict to a dict of scalars with
            ``loss``; it owns the network as ``method.model``.
        optimizer: Partial optimizer constructor taking the parameters (``_partial_: true`` config).
        scheduler: ``cosine`` or ``constant`` (stepped per batch).
        warmup_steps: Linear warm-up steps.
        diagnostics_every: Compute view diagnostics (matched-area IoU) every this many steps; 0: never.
    """

    def __init__(
        self,
        method: nn.Module,
        optimizer: Callable,
        scheduler: str = "cosine",
        warmup_steps: int = 0,
        diagnostics_every: int = 50,
    ) -> None:
        super().__init__()
        self.method = method
        self.optimizer_factory = optimizer
        self.scheduler_name = scheduler
        self.warmup_steps = warmup_steps
        self.diagnostics_every = diagnostics_every
        self._t_last: float | None = None

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """One optimisation step on a batch of view pairs."""
        out = self.method(batch)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"pretraining loss is {loss.item()} at step {self.global_step}; the last good "
                "checkpoint is kept in the run's checkpoints/ folder. Try a lower learning rate, "
                "a higher temperature or precision=32."
            )
        n = batch["view_a"].shape[0]
        for key, value in out.items():
            self.log(
                f"train/{key}", value.detach(), on_step=True, prog_bar=key == "loss", batch_size=n
            )
        now = time.perf_counter()
        if self._t_last is not None:
            pairs = n * self.trainer.world_size
            self.log("train/pairs_per_s", pairs / max(now - self._t_last, 1e-9), batch_size=n)
        self._t_last = now
        if self.diagnostics_every and self.global_step % self.diagnostics_every == 0:
            self._log_diagnostics(batch)
        return loss

    def on_after_backward(self) -> None:
        """Let the method adjust its gradients (e.g. SwAV's frozen prototypes)."""
        hook = getattr(self.method, "on_after_backward", None)
        if hook is not None:
            hook()

    def optimizer_step(self, *args, **kwargs) -> None:
        """Step the optimizer, then let the method update momentum encoders / prototypes."""
        super().optimizer_step(*args, **kwargs)
        hook = getattr(self.method, "on_train_step_end", None)
        if hook is not None:
            hook()

    def _log_diagnostics(self, batch: dict[str, Tensor]) -> None:
        """Log the matched-area IoU of the batch's local regions (exact view geometry)."""
        if "regions" not in batch or "crop_a" not in batch:
            return
        from glcnet.data.regions import exact_affine, matched_area_iou

        size = batch["view_a"].shape[-1]
        iou = matched_area_iou(
            batch["index_a"].cpu(),
            batch["index_b"].cpu(),
            batch["regions"].cpu(),
            batch["region_valid"].bool().cpu(),
            source_size=batch["source_size"].cpu(),
            affine_a=exact_affine(batch["crop_a"], batch["flip_a"], batch["rot_a"], size),
            affine_b=exact_affine(batch["crop_b"], batch["flip_b"], batch["rot_b"], size),
        )
        if iou.numel():
            self.log("train/matched_area_iou", float(iou.mean()), batch_size=iou.numel())

    def configure_optimizers(self):
        """Optimizer from the config (encoder group for ``encoder_lr_scale``); per-step schedule."""
        return optimization(
            encoder_param_groups(self.method, self.method.model.encoder),
            self.optimizer_factory,
            self.scheduler_name,
            self.trainer.estimated_stepping_batches,
            self.warmup_steps,
        )
