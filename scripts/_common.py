"""Shared by the entry scripts: the config folder, and clean reporting of input errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")


def report_input_errors(run: Callable[[], Any]) -> Any:
    """Call ``run``; a problem with the user's input is printed as one clear line, exit status 2.

    Data errors (missing or corrupt files, wrong bands, off-palette labels), checkpoints that do not
    fit, unavailable encoder weights and a diverging loss are the user's to fix, so they are reported
    without a stack trace (``GLCNET_TRACEBACK=1`` shows it). Anything else is a bug and raises.
    """
    from glcnet.data.classes import UnknownColorError
    from glcnet.data.errors import DataError, MissingDataError, SubsetError
    from glcnet.models.segmenter import EncoderWeightsError
    from glcnet.protocol import ProtocolError
    from glcnet.training.export import CheckpointMismatchError
    from glcnet.training.pretrain_module import NonFiniteLossError
    from glcnet.training.probes import ProbeCacheError

    user_errors = (  # EmptyFolderError is a MissingDataError
        DataError,
        MissingDataError,
        SubsetError,
        UnknownColorError,
        EncoderWeightsError,
        CheckpointMismatchError,
        NonFiniteLossError,
        ProbeCacheError,
        ProtocolError,
    )
    try:
        return run()
    except user_errors as err:
        if os.environ.get("GLCNET_TRACEBACK"):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
