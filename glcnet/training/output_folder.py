"""The run folder: created and probe-written before any work, so an unwritable output fails first."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from omegaconf import DictConfig


class OutputFolderError(OSError):
    """The run folder (or its checkpoint folder) cannot be created or written."""


def prepare_output_dir(path: str | Path, checkpoints: bool = True) -> Path:
    """Create the run folder (and ``checkpoints/``) and prove that files can be written there.

    Each folder gets a small probe file that is written, flushed to disk and removed.

    Args:
        path: The run folder.
        checkpoints: Also prepare ``<path>/checkpoints``.

    Returns:
        The run folder.

    Raises:
        OutputFolderError: A folder cannot be created or written (read-only file system, no
            permission, a file in the way, a full disk).
    """
    out = Path(path)
    folders = [out, out / "checkpoints"] if checkpoints else [out]
    for folder in folders:
        probe = folder / f".glcnet-write-probe-{os.getpid()}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(probe, "wb") as fh:
                fh.write(b"\0" * 4096)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as err:
            raise OutputFolderError(
                f"cannot write to the run folder {folder}: {err.strerror or err}; choose a "
                "writable folder with hydra.run.dir=<folder> (or paths.output_dir=<folder>)"
            ) from None
        finally:
            with contextlib.suppress(OSError):
                probe.unlink()
    return out


def output_dir_of(cfg: DictConfig, checkpoints: bool = True) -> Path:
    """The run folder ``cfg.paths.output_dir`` (Hydra's output dir unless overridden), prepared."""
    return prepare_output_dir(cfg.paths.output_dir, checkpoints=checkpoints)
