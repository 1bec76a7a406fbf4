"""DeepLabV3+ (segmentation-models-pytorch) with access to its intermediate features."""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass

import segmentation_models_pytorch as smp
import torch
from torch import Tensor, nn


class EncoderWeightsError(RuntimeError):
    """Pretrained encoder weights were asked for but cannot be loaded (e.g. offline)."""


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the weights hub answers a TCP connection within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _offline_hub_when_unreachable():
    """Make huggingface_hub use its local cache only when the hub cannot be reached.

    Without this, an offline machine spends half a minute in download retries before failing.
    """
    if _hub_reachable():
        yield
        return
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - smp always installs it
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


@dataclass
class SegmenterFeatures:
    """The feature maps a pretraining method may use.

    Attributes:
        aspp: ASPP output, (B, D, H / os, W / os) with D = decoder channels and os the output stride.
            This is what GLCNet's global heads pool ("encoder output" in the paper).
        decoder: Decoder output before the classifier, (B, D, H / 4, W / 4); None when it was not
            asked for.
    """

    aspp: Tensor
    decoder: Tensor | None


class Segmenter(nn.Module):
    """DeepLabV3+ with any segmentation-models-pytorch encoder.

    Args:
        encoder: Encoder name understood by segmentation-models-pytorch (e.g. ``resnet18``,
            ``resnet50``, ``efficientnet-b0``, ``mit_b0``).
        in_channels: Number of input bands (3 for RGB/IRRG, 4 for RGBIR).
        num_classes: Number of output classes of the segmentation head.
        encoder_weights: Name of pretrained encoder weights (e.g. ``imagenet``) or None for random
            initialisation. Named weights are downloaded by segmentation-models-pytorch; on a machine
            without network this fails with :class:`EncoderWeightsError`.
        output_stride: Output stride of the encoder, 8 or 16.
        decoder_channels: Channels of the ASPP and decoder (D).
        encoder_depth: Number of encoder stages.
    """

    def __init__(
        self,
        encoder: str = "resnet50",
        in_channels: int = 4,
        num_classes: int = 6,
        encoder_weights: str | None = None,
        output_stride: int = 16,
        decoder_channels: int = 256,
        encoder_depth: int = 5,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        if encoder not in smp.encoders.get_encoder_names():
            raise ValueError(
                f"unknown encoder {encoder!r}; choose one of segmentation-models-pytorch's encoders, "
                f"e.g. resnet18, resnet50, efficientnet-b0 (see smp.encoders.get_encoder_names())"
            )
        loading = _offline_hub_when_unreachable() if encoder_weights else contextlib.nullcontext()
        try:
            with loading:
                self.net = smp.DeepLabV3Plus(
                    encoder_name=encoder,
                    encoder_weights=encoder_weights,
                    encoder_depth=encoder_depth,
                    encoder_output_stride=output_stride,
                    decoder_channels=decoder_channels,
                    in_channels=in_channels,
                    classes=num_classes,
                )
        except Exception as err:  # network errors surface as many different types
            if encoder_weights is None:
                raise
            raise EncoderWeightsError(
                f"could not load encoder_weights={encoder_weights!r} for encoder {encoder!r}: {err}. "
                "Pretrained weights are downloaded on first use; without network access set "
                "model.encoder_weights=null (random init) or place the weights in the torch hub cache."
            ) from err
        self.encoder_name = encoder
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.decoder_channels = decoder_channels

    @property
    def encoder(self) -> nn.Module:
        """The backbone (transferred to fine-tuning by default)."""
        return self.net.encoder

    @property
    def decoder(self) -> nn.Module:
        """ASPP + decoder."""
        return self.net.decoder

    @property
    def head(self) -> nn.Module:
        """The 1x1 classifier and upsampling."""
        return self.net.segmentation_head

    def check_input(self, x: Tensor) -> None:
        """Raise a clear error for inputs the network cannot take.

        Args:
            x: Images, (B, C, H, W).
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected images (B, {self.in_channels}, H, W), got {tuple(x.shape)}; "
                "does data.bands match model.in_channels?"
            )
        h, w = x.shape[-2:]
        if h % self.output_stride or w % self.output_stride:
            raise ValueError(
                f"image size {h}x{w} must be divisible by the output stride {self.output_stride}"
            )

    def features(self, x: Tensor, with_decoder: bool = True) -> SegmenterFeatures:
        """Run encoder and decoder, keeping the ASPP and decoder feature maps.

        Args:
            x: Images, (B, C, H, W), H and W divisible by the output stride.
            with_decoder: Also run the decoder's high-resolution blocks; False stops at the ASPP
                (methods that only pool the ASPP output).

        Returns:
            The ASPP output (B, D, H/os, W/os) and the decoder output (B, D, H/4, W/4) or None.
        """
        self.check_input(x)
        skips = self.net.encoder(x)
        dec = self.net.decoder
        aspp = dec.aspp(skips[-1])
        if not with_decoder:
            return SegmenterFeatures(aspp=aspp, decoder=None)
        high_res = dec.block1(skips[2])
        fused = dec.block2(torch.cat([dec.up(aspp), high_res], dim=1))
        return SegmenterFeatures(aspp=aspp, decoder=fused)

    def decoder_output_layers(self) -> list[nn.Module]:
        """The decoder layers after the ASPP: skip projection and fusion (only the output needs them)."""
        return [self.net.decoder.block1, self.net.decoder.block2]

    def forward(self, x: Tensor) -> Tensor:
        """Segment images.

        Args:
            x: Images, (B, C, H, W).

        Returns:
            Class logits, (B, num_classes, H, W).
        """
        self.check_input(x)
        return self.net(x)
