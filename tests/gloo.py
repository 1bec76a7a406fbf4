"""Run a function on several CPU processes with torch.distributed (gloo) and collect their results."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on the loopback interface that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(worker: Callable, world: int, out_dir: Path, timeout_s: float) -> list:
    """Spawn ``worker(rank, port, out_dir)`` on ``world`` processes and load ``rank{r}.pt`` of each.

    Skips the test when gloo is unavailable; fails it when the workers exceed ``timeout_s``.
    """
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    ctx = mp.start_processes(
        worker, args=(free_port(), str(out_dir)), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not ctx.join(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                pytest.fail(f"distributed workers did not finish within {timeout_s} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()
    return [torch.load(Path(out_dir) / f"rank{r}.pt") for r in range(world)]
