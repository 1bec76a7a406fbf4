"""Errors of the prediction command; each names the file or setting at fault and how to fix it.

They join the families that ``scripts/_common.py`` reports as one line with exit status 2: an input
that does not fit the model is a :class:`~glcnet.data.errors.DataError`, a setting that cannot work
is a ``ValueError``, a missing optional package an ``ImportError``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from glcnet.data.errors import DataError


class InputMismatchError(DataError):
    """An input image does not fit the model (band count, pixel type or scaling)."""


class PredictOptionError(ValueError):
    """A prediction setting that cannot work as given (e.g. an output nodata value that is a class)."""


class MissingDependencyError(ImportError):
    """An optional package needed by the requested output is not installed."""


def require(module: str, purpose: str, extra: str) -> ModuleType:
    """Import an optional dependency or fail with the command that installs it.

    Args:
        module: Importable module name (e.g. ``pyogrio``).
        purpose: What needs it, for the message (e.g. ``vector=gpkg``).
        extra: The pyproject extra that installs it (e.g. ``vector``).

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: The module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingDependencyError(
            f"{purpose} needs the Python package {module!r}, which is not installed: "
            f"pip install -e '.[{extra}]' in the glcnet checkout (or pip install {module})"
        ) from err
