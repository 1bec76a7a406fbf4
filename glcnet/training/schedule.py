"""Learning-rate schedules as LambdaLR multipliers."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, final: float = 0.0
):
    """Linear warm-up then cosine decay to ``final`` x the base learning rate, stepped per batch.

    Args:
        optimizer: The optimizer whose learning rates are scheduled.
        total_steps: Number of optimizer steps of the whole run.
        warmup_steps: Steps of linear warm-up from 0.
        final: Learning-rate multiplier reached at ``total_steps``.

    Returns:
        A LambdaLR scheduler.
    """
    total_steps = max(1, int(total_steps))
    warmup_steps = max(0, min(int(warmup_steps), total_steps - 1))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def build_scheduler(name: str, optimizer: Optimizer, total_steps: int, warmup_steps: int = 0):
    """Scheduler by name: ``cosine`` (with optional warm-up) or ``constant``."""
    if name == "cosine":
        return warmup_cosine(optimizer, total_steps, warmup_steps)
    if name == "constant":
        return LambdaLR(optimizer, lambda step: 1.0)
    raise ValueError(f"unknown scheduler {name!r}; use 'cosine' or 'constant'")


def optimization(
    parameters: Iterable[nn.Parameter] | list[dict],
    optimizer_factory: Callable[..., Optimizer],
    scheduler: str,
    total_steps: float,
    warmup_steps: int = 0,
) -> dict:
    """What a LightningModule's ``configure_optimizers`` returns: optimizer + per-step schedule.

    Args:
        parameters: All parameters, or parameter groups (dicts with ``params``, e.g. from
            :func:`glcnet.training.optim.encoder_param_groups`); parameters not requiring
            gradients are left out, and groups left empty are dropped.
        optimizer_factory: Partial optimizer constructor (from the ``optimizer`` config group).
        scheduler: ``cosine`` or ``constant``.
        total_steps: Optimizer steps of the run (``trainer.estimated_stepping_batches``; inf -> 1).
        warmup_steps: Linear warm-up steps.

    Returns:
        ``{"optimizer": ..., "lr_scheduler": {"scheduler": ..., "interval": "step"}}``.
    """
    parameters = list(parameters)
    if parameters and isinstance(parameters[0], dict):
        groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in parameters]
        opt = optimizer_factory([g for g in groups if g["params"]])
    else:
        opt = optimizer_factory([p for p in parameters if p.requires_grad])
    total = int(total_steps) if math.isfinite(total_steps) else 1
    sched = build_scheduler(scheduler, opt, total, warmup_steps)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
