"""Check that a GeoTIFF has the Cloud-Optimized layout, the way GDAL's validator judges it.

GDAL's ``validate_cloud_optimized_geotiff.py`` needs GDAL's own Python bindings, which rasterio does
not ship; this module applies the same rules through rasterio's access to the TIFF structure
(``IFD_OFFSET`` and ``BLOCK_OFFSET_x_y`` items of the ``TIFF`` metadata domain):

- tiled (a file wider or taller than 512 px), with internal overviews (no ``.ovr`` side file);
- the main IFD right after the header and GDAL's structural-metadata "ghost" area;
- overviews by decreasing size, their IFDs after the main IFD in that order;
- image data after all IFDs, the smallest overview's first and the full resolution's last;
- ``full=True``: every tile's 4-byte size leader and repeated 4-byte trailer, and tiles in row-major
  order, where the ghost area declares them (GDAL's COG driver does).
"""

from __future__ import annotations

import struct
from pathlib import Path

import rasterio

_GHOST_PREFIX = b"GDAL_STRUCTURAL_METADATA_SIZE="


def _structural_metadata(path: Path) -> tuple[int, str]:
    """Where the main IFD should be, and GDAL's structural metadata text ("" without one)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
        bigtiff = head in (b"II+\x00", b"MM\x00+")
        expected = 16 if bigtiff else 8
        fh.seek(expected)
        line = fh.read(len(_GHOST_PREFIX) + 13)  # "%06d bytes\n"
        if not line.startswith(_GHOST_PREFIX):
            return expected, ""
        size = int(line[len(_GHOST_PREFIX) : len(_GHOST_PREFIX) + 6])
        text = fh.read(size).decode("latin-1")
    expected += len(line) + size
    return expected + expected % 2, text


def _tag(ds, item: str, ovr: int | None = None) -> int | None:
    value = ds.get_tag_item(item, "TIFF", bidx=1, ovr=ovr)
    return int(value) if value not in (None, "") else None


def cog_layout_errors(path: str | Path, full: bool = False) -> list[str]:
    """Every way ``path`` departs from the Cloud-Optimized GeoTIFF layout (empty: it is a COG).

    Args:
        path: A local GeoTIFF.
        full: Also read every tile's leader and trailer bytes (reads the tile index of the file).

    Returns:
        One message per problem found.
    """
    path = Path(path)
    errors: list[str] = []
    with rasterio.open(path) as ds:
        if ds.driver != "GTiff":
            return [f"{path}: not a GeoTIFF ({ds.driver})"]
        if any(str(f).endswith(".ovr") for f in ds.files):
            errors.append("overviews are in an external .ovr file, not internal")
        height, width = ds.height, ds.width
        factors = ds.overviews(1)
        if height > 512 or width > 512:
            if not ds.profile.get("tiled", False):
                errors.append("larger than 512 px but not tiled")
            if not factors:
                errors.append("larger than 512 px but without internal overviews")
        expected_ifd, ghost = _structural_metadata(path)
        ifds = [_tag(ds, "IFD_OFFSET")]
        data = [_tag(ds, "BLOCK_OFFSET_0_0")]
        if ifds[0] != expected_ifd:
            errors.append(f"main IFD at byte {ifds[0]}, expected {expected_ifd}")
        sizes = [(height, width)]
        for i, f in enumerate(factors):
            sizes.append((-(-height // f), -(-width // f)))
            if sizes[-1][0] > sizes[-2][0] or sizes[-1][1] > sizes[-2][1]:
                errors.append(f"overview {i} is larger than the level before it")
            ifds.append(_tag(ds, "IFD_OFFSET", ovr=i))
            data.append(_tag(ds, "BLOCK_OFFSET_0_0", ovr=i))
            if ifds[-1] is None or ifds[-1] < ifds[-2]:
                errors.append(f"IFD of overview {i} at byte {ifds[-1]}, before the previous IFD")
        if None in data:
            errors.append("a level has no first block offset")
            return errors
        if data[-1] < max(i for i in ifds if i is not None):
            errors.append("image data starts before the last IFD")
        for i in range(len(data) - 1):
            if data[i] < data[i + 1]:
                what = "full-resolution data" if i == 0 else f"overview {i - 1} data"
                errors.append(f"{what} comes before the data of overview {i}")
        if full and ghost:
            errors += _check_blocks(path, ds, len(factors), ghost)
    return errors


def _check_blocks(path: Path, ds, n_overviews: int, ghost: str) -> list[str]:
    """Leader/trailer bytes and row-major order of every tile of every level."""
    leader = "BLOCK_LEADER=SIZE_AS_UINT4" in ghost
    trailer = "BLOCK_TRAILER=LAST_4_BYTES_REPEATED" in ghost
    row_major = "BLOCK_ORDER=ROW_MAJOR" in ghost
    errors: list[str] = []
    with open(path, "rb") as fh:
        for level in [None, *range(n_overviews)]:
            name = "full resolution" if level is None else f"overview {level}"
            f = 1 if level is None else ds.overviews(1)[level]
            h, w = -(-ds.height // f), -(-ds.width // f)
            bh, bw = ds.block_shapes[0]
            last = 0
            for y in range(-(-h // bh)):
                for x in range(-(-w // bw)):
                    offset = _tag(ds, f"BLOCK_OFFSET_{x}_{y}", level)
                    size = _tag(ds, f"BLOCK_SIZE_{x}_{y}", level)
                    if offset is None or size is None:
                        errors.append(f"{name}: tile ({x}, {y}) has no offset/size")
                        continue
                    if row_major and offset < last:
                        errors.append(f"{name}: tile ({x}, {y}) is before the previous tile")
                    last = offset
                    if leader:
                        fh.seek(offset - 4)
                        if struct.unpack("<I", fh.read(4))[0] != size:
                            errors.append(f"{name}: tile ({x}, {y}) has a wrong size leader")
                    if trailer and size >= 4:
                        fh.seek(offset + size - 4)
                        tail = fh.read(8)
                        if tail[:4] != tail[4:]:
                            errors.append(f"{name}: tile ({x}, {y}) has a wrong trailer")
    return errors
