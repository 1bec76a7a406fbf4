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
    fit, unavailable encoder weights, augmentations that would corrupt labels, a diverging loss,
    prediction settings that cannot work and a missing optional package are the user's to fix, so
    they are reported without a stack trace (``GLCNET_TRACEBACK=1`` shows it). Anything else is a
    bug and raises.
    """
    from glcnet.data.classes import UnknownColorError
    from glcnet.data.errors import DataError, MissingDataError, SubsetError
    from glcnet.data.seg_augment import AugmentConfigError
    from glcnet.models.segmenter import EncoderWeightsError
    from glcnet.prediction.errors import MissingDependencyError, PredictOptionError
    from glcnet.protocol import ProtocolResumeError
    from glcnet.training.export import CheckpointMismatchError
    from glcnet.training.pretrain_module import NonFiniteLossError

    user_errors = (  # EmptyFolderError is a MissingDataError
        DataError,
        AugmentConfigError,
        MissingDataError,
        SubsetError,
        UnknownColorError,
        EncoderWeightsError,
        CheckpointMismatchError,
        NonFiniteLossError,
        ProtocolResumeError,
        PredictOptionError,
        MissingDependencyError,
    )
    return _reported(run, user_errors)


def report_data_errors(run: Callable[[], Any]) -> Any:
    """Like :func:`report_input_errors`, for scripts that only read data (no model imports)."""
    from glcnet.data.classes import UnknownColorError
    from glcnet.data.errors import DataError, MissingDataError

    return _reported(run, (DataError, MissingDataError, UnknownColorError))


def _reported(run: Callable[[], Any], user_errors: tuple[type[Exception], ...]) -> Any:
    try:
        return run()
    except user_errors as err:
        if os.environ.get("GLCNET_TRACEBACK"):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
