"""Optimizers from the ``optimizer`` config group, with an encoder learning-rate multiplier.

The config group maps 1:1 onto :func:`build_optimizer` (``_partial_: true``); the training modules
call the partial with :func:`encoder_param_groups` of their network, so that
``optimizer.encoder_lr_scale`` can give the (pretrained) encoder its own learning rate.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import hydra
from torch import nn
from torch.optim import Optimizer

#: Key of a parameter group that marks the encoder's parameters.
ROLE = "role"


def encoder_param_groups(module: nn.Module, encoder: nn.Module | None) -> list[dict[str, Any]]:
    """Split the trainable parameters of ``module`` into the encoder's and the rest.

    Args:
        module: Everything being optimised (a network, or a pretraining method holding one).
        encoder: The sub-module whose parameters form the ``encoder`` group (None: no such group).

    Returns:
        ``[{"params": [...], "role": "encoder"}, {"params": [...], "role": "rest"}]`` with only
        parameters that require gradients; empty groups are left out.
    """
    own = {id(p) for p in encoder.parameters()} if encoder is not None else set()
    trainable = [p for p in module.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) in own], ROLE: "encoder"},
        {"params": [p for p in trainable if id(p) not in own], ROLE: "rest"},
    ]
    return [g for g in groups if g["params"]]


def _is_group_list(params: Any) -> bool:
    return isinstance(params, list | tuple) and bool(params) and isinstance(params[0], dict)


def build_optimizer(
    params: Iterable[nn.Parameter] | list[dict[str, Any]],
    optimizer_class: str = "torch.optim.Adam",
    lr: float = 1e-3,
    encoder_lr_scale: float = 1.0,
    **kwargs: Any,
) -> Optimizer:
    """Build a torch optimizer whose encoder group runs at ``lr * encoder_lr_scale``.

    Args:
        params: Parameters, or parameter groups from :func:`encoder_param_groups` (groups whose
            ``role`` is ``encoder`` get the scaled learning rate).
        optimizer_class: Import path of the torch optimizer, e.g. ``torch.optim.SGD``.
        lr: Learning rate of every parameter that is not the encoder's.
        encoder_lr_scale: Multiplier of the encoder's learning rate (1: one rate for all, and one
            parameter group, as a plain optimizer; 0 is allowed and keeps the encoder's weights
            fixed while its batch-norm statistics still adapt).
        **kwargs: Further arguments of the optimizer (``weight_decay``, ``momentum``, ...).

    Returns:
        The optimizer. With ``encoder_lr_scale != 1`` its groups are named ``encoder`` and
        ``rest`` (the learning-rate monitor logs ``lr-<Optimizer>/encoder`` and ``.../rest``).

    Raises:
        ValueError: A negative scale, or a scale != 1 for plain parameters (no encoder group).
    """
    if encoder_lr_scale < 0:
        raise ValueError(f"optimizer.encoder_lr_scale must be >= 0, got {encoder_lr_scale}")
    cls = hydra.utils.get_class(optimizer_class)
    if not _is_group_list(params):
        params = list(params)
        if encoder_lr_scale != 1.0:
            raise ValueError(
                f"optimizer.encoder_lr_scale={encoder_lr_scale} needs parameter groups that mark "
                "the encoder (glcnet.training.optim.encoder_param_groups); got plain parameters"
            )
        return cls(params, lr=lr, **kwargs)
    groups = [dict(g) for g in params]
    if encoder_lr_scale == 1.0:
        merged = [p for g in groups for p in g["params"]]
        return cls(merged, lr=lr, **kwargs)
    for g in groups:
        encoder = g.get(ROLE) == "encoder"
        g["lr"] = lr * encoder_lr_scale if encoder else lr
        g.setdefault("name", g.get(ROLE, "rest"))
    return cls(groups, lr=lr, **kwargs)
