"""A linear probe: a 1x1 convolution on the frozen features of a segmentation network.

It measures what the features alone separate: for ``source="encoder"`` the deepest encoder feature
map (stride = the output stride), for ``source="decoder"`` the DeepLabV3+ decoder output (stride 4).
The features are standardised per channel with statistics of the probe's training features, mapped
to class logits by a 1x1 convolution and upsampled bilinearly to the input size. The wrapped network
never trains and stays in eval mode (batch-norm running statistics included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from glcnet.models.segmenter import Segmenter

#: Feature sources of a probe, in the order of the ``source_index`` buffer.
SOURCES = ("encoder", "decoder")


def source_of_transfer(transfer: str) -> str:
    """The probed features for a ``transfer`` setting: encoder -> encoder, encoder+decoder -> decoder."""
    if transfer not in ("encoder", "encoder+decoder"):
        raise ValueError(f"transfer must be 'encoder' or 'encoder+decoder', got {transfer!r}")
    return "encoder" if transfer == "encoder" else "decoder"


class LinearProbe(nn.Module):
    """Frozen ``backbone`` features -> standardise -> 1x1 conv -> bilinear upsampling.

    Args:
        backbone: The segmentation network whose features are probed (frozen here).
        source: ``encoder`` (deepest encoder features) or ``decoder`` (decoder output).

    Attributes:
        classifier: The trained 1x1 convolution, C -> K.
        feature_mean, feature_std: (C,) standardisation buffers (set by :meth:`set_statistics`).
        source_index: Index of ``source`` in :data:`SOURCES` (stored, so that a checkpoint says
            which features it probes).
    """

    def __init__(self, backbone: Segmenter, source: str = "encoder") -> None:
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"probe source must be one of {SOURCES}, got {source!r}")
        self.backbone = backbone.requires_grad_(False).eval()
        self.source = source
        channels = (
            backbone.encoder.out_channels[-1] if source == "encoder" else backbone.decoder_channels
        )
        self.classifier = nn.Conv2d(channels, backbone.num_classes, kernel_size=1)
        self.register_buffer("feature_mean", torch.zeros(channels))
        self.register_buffer("feature_std", torch.ones(channels))
        self.register_buffer("source_index", torch.tensor(SOURCES.index(source)))

    # The attributes evaluation and fine-tuning read from a Segmenter.
    @property
    def encoder(self) -> nn.Module:  # noqa: D102
        return self.backbone.encoder

    @property
    def decoder(self) -> nn.Module:  # noqa: D102
        return self.backbone.decoder

    @property
    def num_classes(self) -> int:  # noqa: D102
        return self.backbone.num_classes

    @property
    def in_channels(self) -> int:  # noqa: D102
        return self.backbone.in_channels

    @property
    def encoder_name(self) -> str:  # noqa: D102
        return self.backbone.encoder_name

    @property
    def channels(self) -> int:
        """Width C of the probed features."""
        return self.classifier.in_channels

    def train(self, mode: bool = True) -> LinearProbe:
        """Switch the classifier's mode; the backbone always stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        """Raw probed features of images.

        Args:
            x: Images (B, C_in, H, W), H and W divisible by the output stride.

        Returns:
            (B, C, H / os, W / os) for the encoder, (B, C, H / 4, W / 4) for the decoder.
        """
        self.backbone.check_input(x)
        if self.source == "encoder":
            return self.backbone.net.encoder(x)[-1]
        return self.backbone.features(x, with_decoder=True).decoder

    @torch.no_grad()
    def set_statistics(self, features: Tensor) -> None:
        """Set the standardisation from training features (N, C, h, w): per-channel mean and std."""
        flat = features.transpose(0, 1).reshape(features.shape[1], -1).double()
        self.feature_mean.copy_(flat.mean(1).float())
        self.feature_std.copy_(flat.std(1).clamp_min(1e-6).float())

    def classify(self, features: Tensor, size: tuple[int, int] | torch.Size) -> Tensor:
        """Logits of cached or fresh features.

        Args:
            features: (B, C, h, w) raw features from :meth:`features`.
            size: Output (H, W), e.g. the label size.

        Returns:
            (B, K, H, W) logits, bilinearly upsampled.
        """
        z = (features - self.feature_mean[:, None, None]) / self.feature_std[:, None, None]
        logits = self.classifier(z)
        return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, K, H, W) of images (B, C_in, H, W)."""
        return self.classify(self.features(x), x.shape[-2:])


def is_linear_probe_state(state: dict[str, Tensor]) -> bool:
    """Whether a model state dict (keys without the ``model.`` prefix) is a :class:`LinearProbe`'s."""
    return "source_index" in state and "classifier.weight" in state


def linear_probe_for_state(backbone: Segmenter, state: dict[str, Tensor]) -> LinearProbe:
    """A :class:`LinearProbe` around ``backbone`` shaped like the one that saved ``state``."""
    return LinearProbe(backbone, SOURCES[int(state["source_index"])])
