"""Stopping cleanly on SIGTERM and SIGUSR1 (pre-emption, time limits, SLURM requeue).

Lightning already turns SIGTERM into a stop between two training steps: its handler sets a flag,
the loop raises ``SIGTERMException`` after the current step, and callbacks see it in
``on_exception``, where :class:`glcnet.training.resume.LastCheckpoint` writes ``last.ckpt``.
:class:`StopOnSignal` routes SIGUSR1 (what SLURM sends ahead of a time limit with
``#SBATCH --signal=USR1@<seconds>``) into the same path and, under SLURM, requeues the job once
that checkpoint is written. The requeued job runs the same command; with ``ckpt_path=last`` and a
fixed ``hydra.run.dir`` it continues from the checkpoint.

Lightning's own SLURM requeue handler is switched off (``SLURMEnvironment(auto_requeue=False)``):
it saves an ``hpc_ckpt_<n>.ckpt`` from inside the signal handler, i.e. at any point of a step (in
the middle of an optimizer update, say), which cannot resume exactly. Rank and world size still
come from Lightning's :class:`SLURMEnvironment`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from typing import Any

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment

log = logging.getLogger(__name__)

#: Signals that stop a run after the current step, with a checkpoint.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class RunStoppedError(Exception):
    """A run stopped by a signal after writing its checkpoint.

    Attributes:
        exit_code: 128 + the signal number (the shell convention for "ended by signal N").
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def cluster_plugins() -> list[Any]:
    """Trainer plugins for the cluster the run is on: SLURM without Lightning's mid-step requeue."""
    if SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` needs (array jobs: ``<job>_<task>``), None outside SLURM."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None and "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


class StopOnSignal(L.Callback):
    """SIGTERM and SIGUSR1 stop training after the current step; SIGUSR1 under SLURM requeues.

    Place it after :class:`glcnet.training.resume.LastCheckpoint` in the callback list, so the
    checkpoint is written before the job is requeued.

    Args:
        requeue: Requeue the SLURM job after a SIGUSR1 (``scontrol requeue``).
    """

    def __init__(self, requeue: bool = True) -> None:
        self.requeue = bool(requeue)
        self.received: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Install the handlers (Lightning has installed its SIGTERM handler by now)."""
        if threading.current_thread() is not threading.main_thread():
            return
        lightning_sigterm = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum, frame) -> None:
            self.received = self.received or signum
            if callable(lightning_sigterm):
                lightning_sigterm(signum, frame)

        def on_sigusr1(signum, frame) -> None:
            self.received = self.received or signum
            log.info("received SIGUSR1: stopping after this step")
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's graceful stop

        signal.signal(signal.SIGTERM, on_sigterm)
        signal.signal(signal.SIGUSR1, on_sigusr1)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Requeue the SLURM job after a SIGUSR1 (the checkpoint is already written)."""
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(exception, SIGTERMException) or self.received != signal.SIGUSR1:
            return
        job = slurm_job_id()
        if not (self.requeue and job and trainer.is_global_zero):
            return
        try:
            done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        except OSError as err:
            log.warning("could not requeue SLURM job %s: %s", job, err)
            return
        if done.returncode == 0:
            log.info("requeued SLURM job %s", job)
        else:
            log.warning("scontrol requeue %s failed: %s", job, done.stderr.strip())

    def stopped_message(
        self, trainer: L.Trainer, checkpoint: Any, output_dir: Any
    ) -> RunStoppedError:
        """The :class:`RunStoppedError` to raise once ``trainer.fit`` has returned after a signal."""
        signum = self.received or signal.SIGTERM
        name = signal.Signals(signum).name
        return RunStoppedError(
            f"{name} at step {trainer.global_step}; checkpoint written: {checkpoint}. Continue "
            f"with the same command plus ckpt_path=last hydra.run.dir={output_dir}",
            signum,
        )
