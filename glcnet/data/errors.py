"""Exceptions raised by the data sets on bad input; each message names the file or folder at fault.

Missing things are :class:`FileNotFoundError` subclasses, bad content is :class:`ValueError`
subclasses, so callers can catch either family. Off-palette label colours raise
:class:`glcnet.data.classes.UnknownColorError` (a ``ValueError``).
"""

from __future__ import annotations


class MissingDataError(FileNotFoundError):
    """A data-set root, archive, folder or scene file does not exist."""


class EmptyFolderError(MissingDataError):
    """A folder that should hold images holds none."""


class DataError(ValueError):
    """Base class of the errors about data that exist but cannot be used as they are."""


class CorruptRasterError(DataError):
    """A raster file cannot be opened or read (corrupt, truncated, not a raster)."""


class SizeMismatchError(DataError):
    """An image and its label raster have different sizes."""


class BandCountError(DataError):
    """A raster has fewer bands than the chosen band mode reads."""


class SceneTooSmallError(DataError):
    """A scene is smaller than the tile size."""


class EmptySplitError(DataError):
    """A split selects no scene."""


class SubsetError(ValueError):
    """A labeled-subset setting (fraction, count, subset file) that does not fit the data set."""
