"""Running the entry scripts as a user does (subprocess, PYTHONPATH inherited) on tiny fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import tiny_stage_overrides

from glcnet.utils.config import PROJECT_ROOT

#: Views small enough for 64 px tiles, no diagnostics.
VIEWS = ["augment.size=64", "augment.region_size=16", "diagnostics_every=0"]


def tiny_args(root: Path, train: bool = True) -> list[str]:
    """CLI overrides that shrink a run to seconds on the tiny sample set (a small decoder too)."""
    return [*tiny_stage_overrides(root, train), "model.decoder_channels=32"]


def command(script: str, *args: str) -> list[str]:
    """The command line of ``python scripts/<script> args...``."""
    return [sys.executable, str(PROJECT_ROOT / "scripts" / script), *args]


def run_script(
    script: str, *args: str, cwd: Path, env: dict | None = None, timeout: float = 600, **kw
) -> subprocess.CompletedProcess:
    """Run an entry script to completion and capture its output."""
    return subprocess.run(
        command(script, *args),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        **kw,
    )


def start_script(script: str, *args: str, cwd: Path, log: Path, env: dict | None = None):
    """Start an entry script in the background, stdout and stderr into ``log``."""
    fh = open(log, "w")  # noqa: SIM115 - closed by the caller through the process
    return subprocess.Popen(
        command(script, *args),
        cwd=cwd,
        stdout=fh,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


def wait_for(condition, proc: subprocess.Popen, timeout: float = 300, what: str = "") -> None:
    """Poll ``condition()`` every 20 ms; fail if the process ends or time runs out first."""
    start = time.monotonic()
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before {what}")
        if time.monotonic() - start > timeout:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def error_line(res: subprocess.CompletedProcess) -> str:
    """The one line an input error prints (the last line of stderr); asserts no traceback."""
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [line for line in res.stderr.strip().splitlines() if line.strip()]
    assert lines, res.stdout[-2000:]
    return lines[-1]


def run_many(script: str, arg_lists: list[list[str]], cwd: Path, timeout: float = 900) -> list:
    """Run ``script`` once per argument list in one process (see tests/run_many.py).

    Returns:
        Per command line: ``{"code", "stderr", "stdout"}``.
    """
    return run_commands([(script, args) for args in arg_lists], cwd, timeout)


def run_commands(commands: list[tuple[str, list[str]]], cwd: Path, timeout: float = 900) -> list:
    """Run ``(script, arguments)`` command lines one after the other in one process."""
    import json

    res = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("run_many.py")), json.dumps(commands)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])
