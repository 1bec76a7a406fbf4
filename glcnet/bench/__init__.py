"""Benchmarks (time and memory) of the building blocks."""

from glcnet.bench.losses import bench_contrastive_losses

__all__ = ["bench_contrastive_losses"]
