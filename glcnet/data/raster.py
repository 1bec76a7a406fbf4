"""Opening and reading rasters with clear errors, finding files in folders or zip archives.

Everything here is about *files*: which path holds a scene (inside an extracted folder or a zip
archive, at any depth), opening it with rasterio, reading one window, and caching open handles per
process. Errors name the file at fault (see :mod:`glcnet.data.errors`).

Zip archives are read in place through GDAL's ``/vsizip/`` paths; random windowed reads into
deflated zip members are several times slower than into extracted files (about 4x for a
6000x6000 px scene in our test), so extract large archives when speed matters.
"""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from glcnet.data.errors import (
    CorruptRasterError,
    DataError,
    DuplicateSceneError,
    MissingDataError,
)


@dataclass(frozen=True)
class RasterInfo:
    """Header facts of a raster file.

    Attributes:
        height: Rows.
        width: Columns.
        count: Number of bands.
        dtype: Numpy dtype name of the bands (e.g. ``"uint8"``).
        has_colormap: Band 1 carries a colour table (a paletted PNG / GeoTIFF).

    """

    height: int
    width: int
    count: int
    dtype: str
    has_colormap: bool = False


def open_raster(path: str) -> rasterio.io.DatasetReader:
    """Open a raster for reading, naming the file in any error.

    Args:
        path: Anything rasterio opens (file path, ``/vsizip/...`` path).

    Returns:
        The open data set (the caller closes it).

    Raises:
        MissingDataError: The file does not exist.
        CorruptRasterError: The file exists but is not a readable raster.

    """
    if not path.startswith("/vsi") and not os.path.exists(path):
        raise MissingDataError(f"raster file not found: {path}")
    try:
        with warnings.catch_warnings():  # plain PNGs / TIFFs are fine without georeference
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioError as err:
        raise CorruptRasterError(f"cannot open raster {path}: {err}") from err


def raster_info(path: str) -> RasterInfo:
    """Read the size, band count and dtype of a raster (header only).

    Args:
        path: Raster path (see :func:`open_raster`).

    """
    with open_raster(path) as ds:
        return RasterInfo(ds.height, ds.width, ds.count, ds.dtypes[0], has_colormap(ds))


def has_colormap(ds: rasterio.io.DatasetReader) -> bool:
    """Whether band 1 of an open raster carries a colour table."""
    try:
        return bool(ds.colormap(1))
    except ValueError:  # rasterio: "NULL color table"
        return False


def read_window(
    ds: rasterio.io.DatasetReader, indexes: tuple[int, ...], window: Window, path: str
) -> np.ndarray:
    """Read some bands of one window, naming the file when the read fails.

    Bands are read explicitly by index, never through a dataset mask, so a band tagged as alpha
    (e.g. the IR band of some RGBIR GeoTIFFs) is read as data.

    Args:
        ds: Open data set.
        indexes: 1-based band indexes, in output order.
        window: Pixel window to read.
        path: File name for error messages.

    Returns:
        Pixel values, shape (len(indexes), window.height, window.width), the file's dtype.

    Raises:
        CorruptRasterError: The read failed (e.g. a truncated file).

    """
    try:
        return ds.read(list(indexes), window=window)
    except RasterioError as err:
        cause = f" ({err.__cause__})" if err.__cause__ else ""
        raise CorruptRasterError(
            f"cannot read window {window} of raster {path} (corrupt or truncated?): {err}{cause}"
        ) from err


def to_unit_float(values: np.ndarray) -> np.ndarray:
    """Scale pixel values to [0, 1] by the maximum of their integer dtype.

    uint8 is divided by 255, uint16 by 65535, and so on; float data are returned unchanged
    (assumed to be scaled already).

    Args:
        values: Pixel values of any shape.

    Returns:
        float32 array of the same shape.

    """
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.float32) / np.float32(np.iinfo(values.dtype).max)
    return values.astype(np.float32, copy=False)


class RasterCache:
    """Open raster handles of the current process, at most ``max_open`` (least recently used out).

    Handles are never shared across processes: after a fork (DataLoader workers) the cache notices
    the new process id and starts empty, and pickling drops the handles.

    Args:
        max_open: Most handles kept open at once.

    """

    def __init__(self, max_open: int = 128) -> None:
        if max_open < 1:
            raise ValueError(f"max_open must be >= 1, got {max_open}")
        self.max_open = max_open
        self._pid = os.getpid()
        self._handles: OrderedDict[str, rasterio.io.DatasetReader] = OrderedDict()

    def get(self, path: str) -> rasterio.io.DatasetReader:
        """Return an open handle of ``path``, opening it when needed (see :func:`open_raster`)."""
        if os.getpid() != self._pid:  # forked: the parent's handles are not ours to use
            self._pid = os.getpid()
            self._handles = OrderedDict()
        ds = self._handles.get(path)
        if ds is None:
            ds = open_raster(path)
            self._handles[path] = ds
            while len(self._handles) > self.max_open:
                self._handles.popitem(last=False)[1].close()
        else:
            self._handles.move_to_end(path)
        return ds

    def close(self) -> None:
        """Close every handle opened by this process."""
        if os.getpid() == self._pid:
            for ds in self._handles.values():
                ds.close()
        self._handles = OrderedDict()

    def __len__(self) -> int:
        return len(self._handles) if os.getpid() == self._pid else 0

    def __getstate__(self) -> dict:
        return {"max_open": self.max_open}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_open"])


class FileSource:
    """An extracted folder or a zip archive whose files are found by name at any depth.

    Args:
        location: The folder or the ``.zip`` file.
        recursive: Folders only; False: only the files directly inside ``location`` count (the
            files an archive extracted in place put into the data root).

    Raises:
        DataError: ``location`` is a file but not a valid zip archive.

    """

    def __init__(self, location: Path, recursive: bool = True) -> None:
        self.location = Path(location).resolve()
        self.is_zip = self.location.is_file()
        self.recursive = recursive or self.is_zip
        if self.is_zip:
            try:
                with zipfile.ZipFile(self.location) as zf:
                    names = [n for n in zf.namelist() if not n.endswith("/")]
            except (zipfile.BadZipFile, OSError) as err:
                raise DataError(f"{self.location} is not a readable zip archive: {err}") from err
        elif not self.recursive:
            names = [p.name for p in self.location.iterdir() if p.is_file()]
        else:
            names = []
            for folder, _, files in os.walk(self.location, followlinks=True):
                rel = Path(folder).relative_to(self.location)
                names.extend((rel / f).as_posix() for f in files)
        self.members: tuple[str, ...] = tuple(sorted(names))

    def path_of(self, member: str) -> str:
        """Return a path rasterio can open for one member (``/vsizip/`` inside zip archives)."""
        if self.is_zip:
            return f"/vsizip/{self.location.as_posix()}/{member}"
        return str(self.location / member)

    def index(self, pattern: re.Pattern, parent: str | None = None) -> dict[tuple[int, ...], str]:
        """Find the files whose name matches ``pattern``, keyed by the pattern's integer groups.

        Args:
            pattern: Regular expression matched against the whole file name (not the folders);
                its groups must be integers (e.g. the row and column of a Potsdam scene).
            parent: When given, only files directly inside a folder of this name count (a
                non-recursive source is that folder itself, so the filter does not apply).

        Returns:
            Key -> openable path. Where several files share a key the shallowest one wins.

        """
        found: dict[tuple[int, ...], str] = {}
        for member in sorted(self.members, key=lambda m: (m.count("/"), m)):
            parts = member.split("/")
            if self.recursive and parent is not None and (len(parts) < 2 or parts[-2] != parent):
                continue
            match = pattern.fullmatch(parts[-1])
            if match:
                found.setdefault(tuple(int(g) for g in match.groups()), self.path_of(member))
        return found

    def describe(self) -> str:
        """How messages name the source: the zip, the folder, or the folder's own files."""
        return str(self.location) + ("" if self.recursive else " (files directly inside)")

    def __repr__(self) -> str:
        return f"FileSource({str(self.location)!r}, recursive={self.recursive})"


def find_sources(root: Path, name: str, in_place: str | None = None) -> list[FileSource]:
    """Find the extracted folder ``root/name``, the in-place files and the archive ``root/name.zip``.

    Args:
        root: Data-set root.
        name: Product name without extension (e.g. ``4_Ortho_RGBIR``).
        in_place: Where ``unzip name.zip`` run in the root puts the files, relative to the root
            (``""``: the root itself, ``"top"``: ``root/top/``); only the files directly inside
            count. None: the archive has no such place of its own (its files sit in a folder named
            like the archive, which is ``root/name`` already).

    Returns:
        The sources that exist (possibly none): the folder, the in-place folder, the zip.

    """
    out = []
    if (root / name).is_dir():
        out.append(FileSource(root / name))
    if in_place is not None and (root / in_place).is_dir():
        out.append(FileSource(root / in_place, recursive=False))
    if (root / f"{name}.zip").is_file():
        out.append(FileSource(root / f"{name}.zip"))
    return out


def index_sources(
    sources: list[FileSource], pattern: re.Pattern, parent: str | None = None
) -> dict[tuple[int, ...], str]:
    """Merge :meth:`FileSource.index` over sources.

    Extracted files win over zip members (windowed reads into zips are slower); between zips the
    earlier source wins. Two *extracted* copies of one file (e.g. an archive extracted both into
    its own folder and in place into the root) are refused unless they are the same file.

    Raises:
        DuplicateSceneError: Two different extracted files match one key.

    """
    merged: dict[tuple[int, ...], str] = {}
    extracted: dict[tuple[int, ...], str] = {}
    for source in reversed(sources):
        found = source.index(pattern, parent)
        if not source.is_zip:
            for key, path in found.items():
                other = extracted.get(key)
                if other is not None and not os.path.samefile(other, path):
                    raise DuplicateSceneError(
                        f"{path} and {other} are two copies of one scene file (extracted both "
                        f"into the archive's folder and in place?); delete or move one of them"
                    )
                extracted[key] = path
        merged.update(found)
    merged.update(extracted)
    return merged
