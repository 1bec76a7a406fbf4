"""Step checkpoints and exact resumption of interrupted runs.

- :class:`LastCheckpoint` writes ``<run>/checkpoints/last.ckpt`` every ``checkpoint_every_n_steps``
  optimizer steps, at every epoch end, at the end of training and when the run is stopped by a
  signal (see :mod:`glcnet.training.preemption`); writes are atomic
  (:class:`glcnet.training.checkpoints.SafeCheckpointIO`).
- :func:`resolve_ckpt_path` turns ``ckpt_path=last`` into that file.
- :class:`ResumeDataOrder` stores where the seeded sampler stood and makes a resumed run continue
  the interrupted epoch with the batches it had not yet seen.
- :class:`StepSeed` reseeds the global random generators before every step from
  ``(seed, step, rank)``, so dropout and sampled negatives do not depend on how many random numbers
  were drawn before a restart.
- :class:`RunRecordInCheckpoints` stores the run record in every checkpoint.
- :class:`SkippedTileCounter` sums the ``skipped_tiles`` of the batches for the run summary.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from glcnet.data.bad_tiles import SKIPPED_KEY
from glcnet.data.sampling import ResumableSampler, derived_seed
from glcnet.training.checkpoints import remove_stale_temporaries
from glcnet.training.run_record import RECORD_KEY
from glcnet.utils.validation import ConfigError

log = logging.getLogger(__name__)

LAST_NAME = "last.ckpt"


def checkpoint_dir(output_dir: str | Path) -> Path:
    """The checkpoint folder of a run folder."""
    return Path(output_dir) / "checkpoints"


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """The checkpoint a run resumes from.

    Args:
        ckpt_path: None (fresh run), ``last`` (the run folder's ``checkpoints/last.ckpt`` when it
            exists, else a fresh run, so the same command starts and continues a job) or a file.
        output_dir: The run folder (``hydra.run.dir``).

    Returns:
        The file to resume from, or None.

    Raises:
        ConfigError: ``ckpt_path`` names a file that does not exist.
    """
    if ckpt_path in (None, ""):
        return None
    if str(ckpt_path) == "last":
        last = checkpoint_dir(output_dir) / LAST_NAME
        if last.is_file():
            log.info("ckpt_path=last: resuming from %s", last)
            return str(last)
        log.info("ckpt_path=last: no %s yet, starting from step 0", last)
        return None
    if not Path(ckpt_path).is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path}: no such file; give a checkpoint file, or ckpt_path=last "
            "with hydra.run.dir=<the run folder> to continue that run"
        )
    return str(ckpt_path)


class LastCheckpoint(L.Callback):
    """Keeps ``last.ckpt`` up to date: every N steps, at epoch ends, at the end, on a stop signal.

    Args:
        dirpath: The checkpoint folder.
        every_n_steps: Optimizer steps between step checkpoints (0: epoch ends only).
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int = 0) -> None:
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {every_n_steps}")
        self.dirpath = Path(dirpath)
        self.every_n_steps = int(every_n_steps)
        self._saved_step: int | None = None

    @property
    def path(self) -> Path:
        """The ``last.ckpt`` file."""
        return self.dirpath / LAST_NAME

    def save(self, trainer: L.Trainer) -> None:
        """Write ``last.ckpt`` now (every process must call it; rank 0 writes)."""
        trainer.save_checkpoint(self.path, weights_only=False)  # the full training state
        self._saved_step = trainer.global_step

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:  # noqa: D102
        if trainer.is_global_zero:
            for tmp in remove_stale_temporaries(self.dirpath):
                log.info("removed %s, left by a write that was interrupted", tmp)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D102
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and step != self._saved_step:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        # Saved again after a step checkpoint of the same step when validation ran since, so
        # that a resume does not repeat it (best.ckpt is chosen by validation).
        if trainer.global_step != self._saved_step or trainer.val_dataloaders is not None:
            self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if trainer.global_step != self._saved_step:
            self.save(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:  # noqa: D102
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        # SIGTERMException is raised between steps, where the state is consistent; other errors
        # (a NaN loss, a failed read) keep the last good checkpoint instead.
        if isinstance(exception, SIGTERMException):
            self.save(trainer)
            log.info("stopped by a signal at step %d; saved %s", trainer.global_step, self.path)


class ResumeDataOrder(L.Callback):
    """Saves the sampler's position in checkpoints and restores it on resume.

    Args:
        sampler: The training loader's :class:`ResumableSampler`.
        batch_size: Items per batch and process.
    """

    def __init__(self, sampler: ResumableSampler, batch_size: int) -> None:
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self._trainer: L.Trainer | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:  # noqa: D102
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        """Epoch and batches of it consumed when the checkpoint is written."""
        trainer = self._trainer
        if trainer is None:
            return {}
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        return {
            "epoch": int(trainer.current_epoch),
            "batches": int(batches),
            "seed": self.sampler.seed,
            "total": self.sampler.total,
            "batch_size": self.batch_size,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue the saved epoch after its consumed batches."""
        if not state_dict:
            return
        ours = {
            "seed": self.sampler.seed,
            "total": self.sampler.total,
            "batch_size": self.batch_size,
        }
        theirs = {key: state_dict.get(key, ours[key]) for key in ours}
        if theirs != ours:
            log.warning(
                "resuming with other data settings than the checkpoint's (%s, now %s): the data "
                "order after the restart differs from the interrupted run's",
                theirs,
                ours,
            )
        self.sampler.resume(state_dict["epoch"], state_dict["batches"] * theirs["batch_size"])


class StepSeed(L.Callback):
    """Seeds torch's, NumPy's and Python's global generators before every training step.

    Args:
        seed: The run's seed; step ``s`` on process ``r`` uses ``derived_seed(seed, s, r)``.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: D102
        import random

        value = derived_seed(self.seed, trainer.global_step, trainer.global_rank, 0x5EED)
        torch.manual_seed(value)
        np.random.seed(value % 2**32)
        random.seed(value)


class RunRecordInCheckpoints(L.Callback):
    """Adds the run record (plain data) to every checkpoint under ``glcnet_run_record``."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.record = dict(record)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:  # noqa: D102
        checkpoint[RECORD_KEY] = self.record


class SkippedTileCounter(L.Callback):
    """Counts the training items replaced because their tile could not be read."""

    def __init__(self) -> None:
        self.count = 0
        self._is_global_zero = True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:  # noqa: D102
        self._is_global_zero = trainer.is_global_zero

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: D102
        if isinstance(batch, dict) and SKIPPED_KEY in batch:
            self.count += int(batch[SKIPPED_KEY].sum())

    def total(self, trainer: L.Trainer) -> int:
        """The count over every process of the run."""
        value = torch.tensor(float(self.count), device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(value, reduce_op="sum").item())

    def state_dict(self) -> dict[str, int]:
        """The count so far (continued by a resumed run; rank 0's under DDP)."""
        return {"count": self.count}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        """Continue the count of the interrupted run (on rank 0, so :meth:`total` stays right)."""
        self.count = int(state_dict.get("count", 0)) if self._is_global_zero else 0


def check_resume_fits(path: str | Path | None, record: Mapping[str, Any]) -> None:
    """Refuse to resume from a checkpoint written by a run with another model, data or method.

    Args:
        path: The checkpoint to resume from (None: nothing to check).
        record: The run record of the run about to start.

    Raises:
        CheckpointMismatchError: The checkpoint's record differs (the settings are named).
    """
    from glcnet.training.export import CheckpointMismatchError
    from glcnet.training.run_record import MODEL_KEYS, read_run_record

    if path is None:
        return
    theirs = read_run_record(path, required=False)
    if theirs is None:
        return
    diffs = []
    for section, keys in (("model", MODEL_KEYS), ("data", ("in_channels", "num_classes"))):
        for key in keys:
            a, b = (theirs.get(section) or {}).get(key), (record.get(section) or {}).get(key)
            if a is not None and a != b:
                diffs.append(f"{section}.{key}: checkpoint {a}, this run {b}")
    for key in ("stage", "method"):
        if theirs.get(key) != record.get(key):
            diffs.append(f"{key}: checkpoint {theirs.get(key)}, this run {record.get(key)}")
    if diffs:
        raise CheckpointMismatchError(
            f"{path}: cannot resume this run from it ({'; '.join(diffs)}); resume with the "
            "settings it was written with, or start a new run folder"
        )
