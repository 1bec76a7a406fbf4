"""Throughput and model-FLOP utilisation of one GLCNet training step (forward, backward, Adam).

The FLOPs are counted, not estimated: one forward+backward pass runs under
``torch.utils.flop_counter.FlopCounterMode``, which adds up the matrix products and convolutions
(forward and backward) that the step dispatches; element-wise work, normalisation and the optimizer
are not counted, as usual for MFU. Achieved TFLOP/s = counted FLOPs / measured step time; MFU =
achieved / the device's dense bf16 peak (:data:`DENSE_BF16_PEAK_TFLOPS`, or ``peak_tflops``).
A plain bf16 matrix product is timed too, as the ceiling this machine actually reaches.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils.data import default_collate
from torch.utils.flop_counter import FlopCounterMode

from glcnet.bench.pretrain_step import RandomTiles
from glcnet.data.paired import PairedViewDataset
from glcnet.data.views import PairedViews
from glcnet.methods.glcnet import GLCNet
from glcnet.models.segmenter import Segmenter

#: Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, from NVIDIA's datasheets: H100 SXM and
#: H200 (SXM and NVL share the H100 SXM's tensor cores) list "BF16 Tensor Core 1,979 TFLOPS" with
#: 2:4 sparsity, i.e. 989.4 dense; H100 PCIe 1,513 -> 756.5; A100 312 dense. Matched against
#: ``torch.cuda.get_device_name()`` in order (first hit).
DENSE_BF16_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.4),
    ("H100 PCIe", 756.5),
    ("H100", 989.4),
    ("A100", 312.0),
)


def peak_tflops_of(device_name: str) -> float | None:
    """The dense bf16 peak of a GPU from its name (None when not in the table)."""
    for key, peak in DENSE_BF16_PEAK_TFLOPS:
        if key in device_name:
            return peak
    return None


def _timed(fn: Callable[[], None], steps: int, device: torch.device) -> float:
    """Mean seconds per call over ``steps`` calls (the caller warms up)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) / steps


def matmul_tflops(device: torch.device, n: int = 8192, repeats: int = 10) -> float:
    """TFLOP/s of an ``n`` x ``n`` x ``n`` matrix product (bf16 on GPUs, fp32 on CPUs)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    seconds = _timed(lambda: a @ b, repeats, device)
    return 2 * n**3 / seconds / 1e12


def bench_step_flops(
    encoder: str = "resnet50",
    batch_size: int = 128,
    tile_size: int = 256,
    view_size: int = 224,
    channels: int = 4,
    steps: int = 20,
    warmup: int = 5,
    device: str = "cuda",
    precision: str = "bf16",
    peak_tflops: float | None = None,
    matmul_size: int = 8192,
) -> dict:
    """Measure a GLCNet training step: images/s, counted FLOPs, achieved TFLOP/s and MFU.

    Args:
        encoder: Encoder of the DeepLabV3+ network.
        batch_size: Pairs per step (each pair is two images through the network).
        tile_size: Source tile side.
        view_size: View side.
        channels: Input bands.
        steps: Timed steps (after ``warmup`` untimed ones), each with an Adam update.
        warmup: Untimed steps first.
        device: ``cuda`` or ``cpu``.
        precision: ``bf16`` (autocast) or ``32``.
        peak_tflops: Dense peak of the device for MFU; None: :func:`peak_tflops_of` its name.
        matmul_size: Side of the timed matrix product (0: skip it).

    Returns:
        ``pairs_per_s``, ``images_per_s`` (2 per pair), ``step_s``, ``flops_per_step`` (forward +
        backward), ``achieved_tflops``, ``peak_tflops``, ``mfu`` (None without a peak),
        ``matmul_tflops`` and ``mfu_vs_matmul`` (against the measured ceiling), the same step time
        with ``cudnn.benchmark`` on (``images_per_s_cudnn_benchmark``), and the settings.
    """
    dev = torch.device(device)
    torch.manual_seed(0)
    views = PairedViews(size=view_size, region_size=max(8, view_size * 48 // 224))
    pairs = PairedViewDataset(RandomTiles(batch_size, channels, tile_size), views)
    batch = default_collate([pairs[i] for i in range(batch_size)])
    batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
    method = GLCNet(Segmenter(encoder, in_channels=channels, num_classes=6)).to(dev)
    optimizer = torch.optim.Adam(method.parameters(), lr=1e-3, weight_decay=1e-5)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def forward_backward() -> None:
        with autocast:
            loss = method(batch)["loss"]
        loss.backward()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        forward_backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        forward_backward()
    flops = int(counter.get_total_flops())
    optimizer.zero_grad(set_to_none=True)

    cudnn_benchmark = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False  # Lightning's default: as pretraining runs
        for _ in range(warmup):
            step()
        step_s = _timed(step, steps, dev)
        torch.backends.cudnn.benchmark = True
        for _ in range(warmup):
            step()
        step_s_benchmark = _timed(step, steps, dev)
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark

    if peak_tflops is None and dev.type == "cuda":
        peak_tflops = peak_tflops_of(torch.cuda.get_device_name(dev))
    achieved = flops / step_s / 1e12
    ceiling = matmul_tflops(dev, matmul_size) if matmul_size else None
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "encoder": encoder,
        "view_size": view_size,
        "batch_pairs": batch_size,
        "precision": precision,
        "step_s": step_s,
        "pairs_per_s": batch_size / step_s,
        "images_per_s": 2 * batch_size / step_s,
        "images_per_s_cudnn_benchmark": 2 * batch_size / step_s_benchmark,
        "flops_per_step": flops,
        "achieved_tflops": achieved,
        "peak_tflops": peak_tflops,
        "mfu": achieved / peak_tflops if peak_tflops else None,
        "matmul_tflops": ceiling,
        "mfu_vs_matmul": achieved / ceiling if ceiling else None,
    }
