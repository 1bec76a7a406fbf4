"""scripts/gpu_check.sh in its CPU smoke mode, and the pieces of its MFU figure."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from glcnet.bench.step_flops import peak_tflops_of
from glcnet.utils.config import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "gpu_check.sh"


def test_peak_table_matches_device_names():
    assert peak_tflops_of("NVIDIA H200") == 989.4
    assert peak_tflops_of("NVIDIA H100 80GB HBM3") == 989.4
    assert peak_tflops_of("NVIDIA H100 PCIe") == 756.5
    assert peak_tflops_of("NVIDIA GeForce RTX 4090") is None


def test_script_is_valid_bash():
    res = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.slow
def test_smoke_mode_runs_every_part_and_writes_json(tmp_path):
    """About 2-4 minutes on 2 shared cores: model builds and two CLI runs."""
    out = tmp_path / "out"
    env = {
        **os.environ,
        "GPU_CHECK_SMOKE": "1",
        "PYTHON": sys.executable,
        "OUT": str(out),
        "GPU_CHECK_WORK": str(tmp_path / "work"),
    }
    res = subprocess.run(
        ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=900
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    parts = ("step", "loader", "pretrain", "protocol")
    for part in parts:
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith(f"gpu_check {part}:")]
        assert len(lines) == 1, res.stdout
        record = json.loads((out / f"gpu_check_{part}.json").read_text())
        assert record["summary"] == lines[0].split(": ", 1)[1]
        assert record["status"] in (("ok", "skipped") if part == "protocol" else ("ok",))
    step = json.loads((out / "gpu_check_step.json").read_text())
    assert step["flops_per_step"] > 0 and step["images_per_s"] > 0
    assert math.isclose(step["achieved_tflops"], step["flops_per_step"] / step["step_s"] / 1e12)
    loader = json.loads((out / "gpu_check_loader.json").read_text())
    assert loader["pairs_per_s"] > 0 and loader["workers"] == 2
    pretrain = json.loads((out / "gpu_check_pretrain.json").read_text())
    assert pretrain["returncode"] == 0 and math.isfinite(pretrain["loss_last"])
    assert "trainer.max_steps=2" in pretrain["command"]
