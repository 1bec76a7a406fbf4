"""Checkpoint files as data: safe loading, atomic writing, and the Lightning plugin that does both.

Every file a user hands to glcnet (``pretrained=``, ``checkpoint=``, ``ckpt_path=``) is read with
``torch.load(..., weights_only=True)``: tensors, plain containers and numbers only, so unpickling a
file can never run code. Our own checkpoints hold nothing else (the run record is plain data), so
the allow-list of extra types, :data:`SAFE_GLOBALS`, is empty.

Writes go to a temporary file in the target's folder, are flushed to disk, then renamed over the
target (``os.replace`` is atomic on POSIX): a process killed during a write leaves the previous file
intact, and a write that fails (full disk, lost permission) removes its temporary file and keeps
the earlier checkpoint.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

#: Non-tensor types allowed when unpickling checkpoints. Ours need none: the run record and every
#: Lightning state glcnet writes are plain dicts, lists, strings and numbers.
SAFE_GLOBALS: tuple = ()

_TMP_PREFIX = ".tmp-"


class CheckpointReadError(ValueError):
    """A checkpoint or weights file is missing, corrupt or not a glcnet/torch checkpoint."""


class UnsafeCheckpointError(CheckpointReadError):
    """A file holds pickled Python objects beyond tensors and plain data; it is refused unread."""


class CheckpointWriteError(OSError):
    """A checkpoint or weights file could not be written (the earlier file is kept)."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _unsafe_global(err: BaseException) -> str | None:
    """The Python object a weights-only unpickling refused to import, if that is what failed."""
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(err))
    return found.group(1) if found else None


def load_torch_file(path: str | Path, what: str = "checkpoint", mmap: bool = False) -> Any:
    """Read a torch file (``torch.save`` output, e.g. a Lightning ``.ckpt``) without running code.

    Args:
        path: The file.
        what: What the file is meant to be, for messages (``checkpoint``, ``pretrained weights``).
        mmap: Map tensors from the file instead of reading them (cheap when only metadata is
            needed; zip-format files only).

    Returns:
        The unpickled object: tensors, dicts, lists, strings and numbers only.

    Raises:
        CheckpointReadError: The file is missing or cannot be read as a torch file.
        UnsafeCheckpointError: Unpickling it would build other Python objects (possibly running
            code); nothing of it is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointReadError(f"{what} not found: {path}")
    use_mmap = mmap and zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except pickle.UnpicklingError as err:
        culprit = _unsafe_global(err)
        if culprit is None:
            raise CheckpointReadError(
                f"{path}: cannot be read as a {what} (corrupt or another format): "
                f"{_first_line(err)}"
            ) from None
        raise UnsafeCheckpointError(
            f"{path}: refused to load ({what}): it asks to import and call {culprit}. glcnet "
            "reads files with weights_only=True, so a file can never run code here; re-create "
            "it with glcnet (tensors and plain data only) if it is yours"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
        raise CheckpointReadError(
            f"{path}: cannot be read as a {what} (corrupt, truncated or another format): "
            f"{_first_line(err)}"
        ) from None


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file through a temporary file and a rename, so it is either old or new, never partial.

    Args:
        path: The target file (its folder is created when missing).
        write: Writes the whole content to the binary file object it is given.

    Returns:
        The written path.

    Raises:
        CheckpointWriteError: The folder or file cannot be written (full disk, permissions); the
            temporary file is removed and an existing ``path`` is left untouched.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{path.name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
        _sync_folder(path.parent)
    except OSError as err:
        reason = err.strerror or _first_line(err)
        raise CheckpointWriteError(
            f"cannot write {path}: {reason}; earlier files there are kept. Free space or point the "
            "run at a writable folder (hydra.run.dir=...)"
        ) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return path


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entry table so a rename survives a power loss (best effort)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporary files that a killed write left in ``folder`` (never a finished file).

    Args:
        folder: A checkpoint folder.

    Returns:
        The removed files.
    """
    folder = Path(folder)
    removed = []
    for tmp in folder.glob(f"{_TMP_PREFIX}*") if folder.is_dir() else []:
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def save_torch_file(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through :func:`atomic_write`.

    The object is serialised in memory first: torch's zip writer reports a failed file write
    (a full disk) as a generic ``RuntimeError``, a plain file write raises ``OSError``.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write(path, lambda fh: fh.write(buffer.getbuffer()))


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that writes atomically and reads with ``weights_only=True`` only.

    Every checkpoint Lightning writes (step and epoch checkpoints, ``best.ckpt``) and every resume
    (``trainer.fit(ckpt_path=...)``) goes through it.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically (see :func:`atomic_write`)."""
        if storage_options is not None:
            raise TypeError("SafeCheckpointIO takes no storage_options")
        save_torch_file(checkpoint, path)

    def load_checkpoint(self, path: str | Path, map_location: Any = None, **_: Any) -> dict:
        """Read a checkpoint with :func:`load_torch_file` (never ``weights_only=False``)."""
        blob = load_torch_file(path, "checkpoint to resume from")
        if not isinstance(blob, dict) or "state_dict" not in blob:
            raise CheckpointReadError(f"{path}: not a Lightning training checkpoint")
        return blob
