"""Projection heads and global pooling used by the pretraining methods."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class GlobalPooling(nn.Module):
    """Global descriptor of a feature map.

    ``mode="style"`` is GLCNet's global style feature: the channel-wise mean and variance,
    concatenated (2D). ``mode="mean"`` is plain global average pooling (SimCLR, the GLCNet "no style"
    ablation).

    Args:
        mode: ``"style"`` or ``"mean"``.
    """

    def __init__(self, mode: str = "style") -> None:
        super().__init__()
        if mode not in ("style", "mean"):
            raise ValueError(f"mode must be 'style' or 'mean', got {mode!r}")
        self.mode = mode

    def output_dim(self, channels: int) -> int:
        """Descriptor length for a feature map of ``channels`` channels."""
        return 2 * channels if self.mode == "style" else channels

    def forward(self, x: Tensor) -> Tensor:
        """Pool a feature map.

        Args:
            x: Features, (B, D, h, w).

        Returns:
            (B, 2D) for ``style`` (mean then variance), (B, D) for ``mean``.
        """
        x32 = x.float()
        mean = x32.mean(dim=(2, 3))
        if self.mode == "mean":
            return mean.to(x.dtype)
        var = x32.var(dim=(2, 3), unbiased=False)
        return torch.cat([mean, var], dim=1).to(x.dtype)


class ProjectionHead(nn.Module):
    """MLP projection head (Linear -> [BN] -> ReLU -> ... -> Linear).

    Args:
        dims: Layer widths from input to output, e.g. ``(512, 256, 64)`` for GLCNet's global head
            or ``(256, 64, 64)`` for its local head. At least two entries.
        batch_norm: Put a BatchNorm1d after each hidden Linear.
    """

    def __init__(self, dims: Sequence[int], batch_norm: bool = False) -> None:
        super().__init__()
        dims = list(dims)
        if len(dims) < 2 or any(d <= 0 for d in dims):
            raise ValueError(f"dims needs at least two positive widths, got {dims}")
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(d_in, d_out))
            if i < len(dims) - 2:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(d_out))
                layers.append(nn.ReLU(inplace=True))
        self.mlp = nn.Sequential(*layers)
        self.in_dim = dims[0]
        self.out_dim = dims[-1]

    def forward(self, x: Tensor) -> Tensor:
        """Project.

        Args:
            x: Inputs, (..., dims[0]).

        Returns:
            Projections, (..., dims[-1]).
        """
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"projection head expects {self.in_dim} inputs, got {x.shape[-1]}")
        lead = x.shape[:-1]
        return self.mlp(x.reshape(-1, self.in_dim)).reshape(*lead, self.out_dim)
