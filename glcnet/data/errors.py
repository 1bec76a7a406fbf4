"""Exceptions raised by the data sets on bad input; each message names the file or folder at fault.

Missing things are :class:`MissingDataError` (a :class:`FileNotFoundError`), bad content and
settings that do not fit the data are :class:`DataError` (a :class:`ValueError`), so callers can
catch either family and the entry scripts print both as one line with exit status 2. Every message
names the file, the values found and the setting that fixes it.
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
    """A split selects no scene (or every tile of it is nodata)."""


class UnknownColorError(DataError):
    """A label file holds a colour or value that is neither a class nor ignored."""


class MaskSpecError(DataError):
    """The mask settings (palette, ignore values) do not fit each other or the mask files."""


class ClassMismatchError(DataError):
    """``num_classes``, ``class_names`` and the palette disagree, or do not fit the data set."""


class NodataError(DataError):
    """An image's nodata information cannot be read one way only (e.g. an 'alpha' band of data)."""


class DuplicateSceneError(DataError):
    """Two extracted copies of one scene file exist, so which one to read is ambiguous."""


class SubsetError(ValueError):
    """A labeled-subset setting (fraction, count, subset file) that does not fit the data set."""
