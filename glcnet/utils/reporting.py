"""Input and configuration errors as one line: what the entry scripts print instead of a traceback.

:func:`input_error_message` decides whether an exception is the user's to fix (bad data, files,
settings, checkpoints; a diverging loss) and returns its message as one line. It looks through
the wrappers that would hide it: Hydra's ``InstantiationException`` around a constructor's
``ValueError``, OmegaConf's interpolation errors, and the text a DataLoader worker adds to an
error raised in it. Anything else (a bug) gets None and keeps its traceback.
"""

from __future__ import annotations

import os
import re

#: Environment switches that show the full traceback of input errors too.
TRACEBACK_SWITCHES = ("HYDRA_FULL_ERROR", "GLCNET_TRACEBACK")


def traceback_wanted() -> bool:
    """Whether ``HYDRA_FULL_ERROR=1`` (or ``GLCNET_TRACEBACK=1``) asks for full tracebacks."""
    return any(os.environ.get(name, "") not in ("", "0") for name in TRACEBACK_SWITCHES)


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exception classes that describe a problem with the user's input."""
    from glcnet.data.classes import UnknownColorError
    from glcnet.data.errors import DataError, MissingDataError, SubsetError
    from glcnet.data.seg_augment import AugmentConfigError
    from glcnet.models.segmenter import EncoderWeightsError
    from glcnet.prediction.errors import MissingDependencyError, PredictOptionError
    from glcnet.protocol import ProtocolError
    from glcnet.training.checkpoints import CheckpointReadError, CheckpointWriteError
    from glcnet.training.export import CheckpointMismatchError
    from glcnet.training.output_folder import OutputFolderError
    from glcnet.training.pretrain_module import NonFiniteLossError
    from glcnet.training.probes import ProbeCacheError
    from glcnet.utils.validation import ConfigError

    return (
        DataError,
        MissingDataError,  # EmptyFolderError is one
        SubsetError,
        UnknownColorError,
        EncoderWeightsError,
        CheckpointMismatchError,
        CheckpointReadError,
        CheckpointWriteError,
        OutputFolderError,
        NonFiniteLossError,
        ConfigError,
        AugmentConfigError,
        PredictOptionError,
        MissingDependencyError,
        ProbeCacheError,
        ProtocolError,
    )


_WORKER_PREFIX = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.")
_QUALIFIED = re.compile(r"^[\w.]+(Error|Exception|Warning)\w*: ")


def one_line(err: BaseException) -> str:
    """The message of ``err`` as one line (a DataLoader worker's traceback reduced to its end)."""
    text = str(err).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if _WORKER_PREFIX.match(lines[0]) and len(lines) > 1:
        return _QUALIFIED.sub("", lines[-1].strip())
    return " ".join(line.strip() for line in lines)


def _instantiation_message(err: BaseException) -> str | None:
    """The constructor's own error inside Hydra's InstantiationException, with the config key."""
    cause = err.__cause__ or err.__context__
    if not isinstance(cause, ValueError | TypeError | FileNotFoundError):
        return None
    found = re.search(r"full_key: (\S+)", str(err))
    target = re.search(r"target '([\w.]+)'", str(err))
    where = found.group(1) if found else (target.group(1) if target else "the config")
    message = input_error_message(cause) or one_line(cause)
    return f"{where}: {message}"


def _raised_by_data_layer(err: BaseException) -> bool:
    """A ValueError raised inside glcnet.data: a data set refusing its settings or files."""
    if not isinstance(err, ValueError):
        return False
    text = str(err).strip()
    if _WORKER_PREFIX.match(text):  # raised in a DataLoader worker: its traceback is the text
        files = re.findall(r'File "([^"]+)"', text)
        return bool(files) and "/glcnet/data/" in files[-1].replace("\\", "/")
    tb = err.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and "/glcnet/data/" in last.tb_frame.f_code.co_filename.replace(
        "\\", "/"
    )


def input_error_message(err: BaseException) -> str | None:
    """One line describing an input or config error, or None when ``err`` looks like a bug.

    Args:
        err: The exception that ended the run.

    Returns:
        The message to print after ``error: ``, or None.
    """
    from hydra.errors import InstantiationException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, InstantiationException):
        return _instantiation_message(err)
    if isinstance(err, user_error_types()) or _raised_by_data_layer(err):
        return one_line(err)
    if isinstance(err, OmegaConfBaseException):
        cause = err.__cause__
        message = one_line(cause) if cause is not None else str(err).splitlines()[0]
        key = getattr(err, "full_key", None)
        return f"{key}: {message}" if key and key not in message else message
    return None
