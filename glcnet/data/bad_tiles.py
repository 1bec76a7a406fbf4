"""Training on when a tile file becomes unreadable mid-run (``data.skip_bad_tiles=true``).

Without this wrapper a read error stops the run with a message naming the file. With it, an item
whose read fails is replaced by the next readable item of the data set (so batches keep their
size and the order stays deterministic), the failure is logged once per file and process and
appended to a log file, and every item carries ``skipped_tiles``: how many of the requested items
it replaces (0 or 1), which the training loop sums for the run summary.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from glcnet.data.errors import DataError, MissingDataError

log = logging.getLogger(__name__)

#: Key of the per-item skip count in the items of :class:`SkipBadTiles`.
SKIPPED_KEY = "skipped_tiles"


class NoReadableTileError(DataError):
    """Every tile of a data set failed to read."""


class SkipBadTiles(Dataset):
    """Replaces items that cannot be read by the next readable one, logging and counting it.

    Args:
        dataset: Items (dicts) of a tile data set (or a wrapper of one, e.g. paired views).
        log_file: File the skipped reads are appended to (one line each); None: log only.
    """

    def __init__(self, dataset: Dataset, log_file: str | Path | None = None) -> None:
        self.dataset = dataset
        self.log_file = Path(log_file) if log_file is not None else None
        self._known_bad: set[int] = set()
        self._logged: set[str] = set()

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        for step in range(n):
            i = (index + step) % n
            if i in self._known_bad:
                continue
            try:
                item = dict(self.dataset[i])
            except (DataError, MissingDataError) as err:
                self._known_bad.add(i)
                self._report(i, err)
                continue
            item[SKIPPED_KEY] = torch.tensor(int(i != index))
            return item
        raise NoReadableTileError(f"none of the {n} tiles can be read (see the errors above)")

    def _report(self, index: int, err: Exception) -> None:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if message not in self._logged:
            self._logged.add(message)
            log.warning(
                "skipping unreadable tile %d (data.skip_bad_tiles=true): %s", index, message
            )
        if self.log_file is not None:
            with open(self.log_file, "a") as fh:
                fh.write(f"tile {index}: {message}\n")
