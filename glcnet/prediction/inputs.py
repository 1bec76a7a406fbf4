"""The images an ``input=`` setting names: one file, every image in a folder, or a glob."""

from __future__ import annotations

import glob
import logging
from pathlib import Path

from glcnet.data.errors import DataError, EmptyFolderError, MissingDataError

log = logging.getLogger(__name__)

#: Image suffixes taken from a folder or a glob (case-insensitive).
IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


def resolve_inputs(spec: str | Path) -> list[Path]:
    """The image files ``spec`` names, sorted.

    Args:
        spec: A file (any format rasterio reads), a folder (the ``.tif``/``.tiff``/``.png`` files
            directly inside it) or a glob pattern (``*``, ``?``, ``[...]``; ``**`` recurses) whose
            matches are filtered to those suffixes.

    Returns:
        Paths, each with a distinct file stem (outputs are named after it).

    Raises:
        MissingDataError: The file or folder does not exist, or the glob matches no image.
        EmptyFolderError: The folder holds no image.
        DataError: Two images share a stem.
    """
    text = str(spec)
    if glob.has_magic(text):
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        images = [p for p in matches if p.suffix.lower() in IMAGE_SUFFIXES]
        if len(images) < len(matches):
            log.warning(
                "input=%s: %d of %d matching files are not %s and are left out",
                text,
                len(matches) - len(images),
                len(matches),
                "/".join(IMAGE_SUFFIXES),
            )
        if not images:
            raise MissingDataError(
                f"input={text} matches no {'/'.join(IMAGE_SUFFIXES)} file ({len(matches)} files "
                f"matched)"
            )
    else:
        path = Path(text).expanduser()
        if path.is_dir():
            images = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not images:
                raise EmptyFolderError(
                    f"input folder {path} holds no {'/'.join(IMAGE_SUFFIXES)} file"
                )
        elif path.is_file():
            images = [path]
        else:
            raise MissingDataError(f"input not found: {path}")
    stems: dict[str, Path] = {}
    for p in images:
        if p.stem in stems:
            raise DataError(
                f"input images {stems[p.stem]} and {p} share the name {p.stem!r}, so their outputs "
                f"would overwrite each other; predict them in separate runs (output_dir=...)"
            )
        stems[p.stem] = p
    return images
