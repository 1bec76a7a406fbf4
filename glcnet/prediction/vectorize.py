"""Polygons of connected class regions from a class raster, written as GeoPackage or GeoJSON.

Approach and memory: GDAL's polygonizer (``rasterio.features.shapes`` given the raster *band*,
not an array) reads the written class raster itself, scanline by scanline, and only keeps the
polygons still open at the current line. Regions that cross tile or window borders therefore come
out whole, without any merging, and the raster is never held in memory; what is held is the vector
result itself (every polygon's vertices), which the output file holds anyway.

Each polygon gets ``class`` (int), ``class_name`` and ``area_m2``. Areas are those of the exact
pixel regions (pixel count x pixel area), computed before any simplification:

- projected CRS: planar area, converted to m² with the CRS's linear unit (feet -> metres);
- geographic CRS (degrees): area on the ellipsoid, through a Lambert azimuthal equal-area
  projection centred on the raster;
- no CRS (e.g. a plain PNG): polygons are in pixel coordinates and ``area_m2`` is empty (a
  warning says so; ``min_area`` cannot be applied and is refused).

``simplify`` (tolerance in CRS units) simplifies each polygon on its own with shapely's
topology-preserving Douglas-Peucker: every polygon stays valid, but neighbouring polygons no longer
share their edges exactly (small gaps/overlaps of up to the tolerance). ``min_area`` (m²) drops
smaller regions (left as holes in their surroundings).
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.features import shapes
from rasterio.warp import transform_geom

from glcnet.data.raster import open_raster
from glcnet.prediction.errors import PredictOptionError, require

log = logging.getLogger(__name__)

#: ``vector=`` setting -> (OGR driver, file suffix).
VECTOR_FORMATS = {"gpkg": ("GPKG", ".gpkg"), "geojson": ("GeoJSON", ".geojson")}


@dataclass(frozen=True)
class VectorSummary:
    """What :func:`vectorize_classes` wrote.

    Attributes:
        path: The vector file.
        polygons: Polygons written.
        dropped: Polygons left out by ``min_area``.
        area_known: Whether ``area_m2`` holds areas (False without a CRS).
    """

    path: Path
    polygons: int
    dropped: int
    area_known: bool


def require_vector_libraries(purpose: str) -> None:
    """Fail early, with the install command, when pyogrio or shapely is missing."""
    require("pyogrio", purpose, "vector")
    require("shapely", purpose, "vector")


def _area_factor(crs: CRS) -> float:
    """Square metres per square CRS unit of a projected CRS."""
    _, factor = crs.linear_units_factor
    return float(factor) ** 2


def polygon_areas(polys: np.ndarray, crs: CRS | None, bounds) -> np.ndarray | None:
    """Areas in m² of shapely polygons in ``crs`` (see the module docstring).

    Args:
        polys: (N,) shapely polygons in ``crs``.
        crs: Their CRS, or None.
        bounds: ``(left, bottom, right, top)`` of the raster, for the equal-area centre.

    Returns:
        (N,) float64 areas, or None without a CRS.
    """
    shapely = require("shapely", "vector output", "vector")
    if crs is None:
        return None
    if not crs.is_geographic:
        return shapely.area(polys).astype(np.float64) * _area_factor(crs)
    if not len(polys):
        return np.zeros(0)
    lon = (bounds[0] + bounds[2]) / 2
    lat = (bounds[1] + bounds[3]) / 2
    laea = CRS.from_proj4(f"+proj=laea +lat_0={lat} +lon_0={lon} +ellps=WGS84 +units=m")
    projected = transform_geom(crs, laea, [shapely.geometry.mapping(p) for p in polys])
    return shapely.area(np.array([shapely.geometry.shape(g) for g in projected])).astype(np.float64)


def vectorize_classes(
    class_raster: str | Path,
    out_path: str | Path,
    class_names: list[str] | tuple[str, ...],
    nodata: int,
    fmt: str = "gpkg",
    simplify: float = 0.0,
    min_area: float = 0.0,
    connectivity: int = 4,
) -> VectorSummary:
    """Write the connected class regions of a class raster as polygons.

    Args:
        class_raster: Single-band uint8 class indices (e.g. the prediction GeoTIFF).
        out_path: The vector file (``.gpkg`` or ``.geojson``); an existing file is replaced.
        class_names: Name of each class index.
        nodata: Raster value of pixels without a class (no polygon).
        fmt: ``gpkg`` or ``geojson``.
        simplify: Simplification tolerance in CRS units; 0 keeps the pixel outlines.
        min_area: Smallest region kept, in m² (0 keeps all).
        connectivity: 4 or 8: which neighbouring pixels join a region.

    Returns:
        What was written.

    Raises:
        PredictOptionError: Unknown format, negative tolerance or area, bad connectivity, or a
            ``min_area`` on a raster without CRS.
        MissingDependencyError: pyogrio or shapely is not installed.
    """
    if fmt not in VECTOR_FORMATS:
        raise PredictOptionError(f"vector must be one of {sorted(VECTOR_FORMATS)}, got {fmt!r}")
    if simplify < 0 or min_area < 0:
        raise PredictOptionError(
            f"simplify and min_area must be >= 0, got simplify={simplify}, min_area={min_area}"
        )
    if connectivity not in (4, 8):
        raise PredictOptionError(f"connectivity must be 4 or 8, got {connectivity}")
    require_vector_libraries(f"vector={fmt}")
    import pyogrio.raw
    import shapely

    out = Path(out_path)
    with open_raster(str(class_raster)) as ds:
        crs, bounds = ds.crs, ds.bounds
        if crs is None and min_area > 0:
            raise PredictOptionError(
                f"{class_raster} has no CRS, so min_area={min_area} m² cannot be applied; set "
                f"min_area=0 or georeference the input"
            )
        geoms, values = [], []
        for geom, value in shapes(rasterio.band(ds, 1), connectivity=connectivity):
            if int(value) != nodata:
                geoms.append(geom)
                values.append(int(value))
    if crs is None:
        warnings.warn(
            f"{class_raster} has no CRS: polygons are in pixel coordinates and area_m2 is empty",
            stacklevel=2,
        )
    polys = np.array([shapely.geometry.shape(g) for g in geoms], dtype=object)
    areas = polygon_areas(polys, crs, bounds)
    classes = np.asarray(values, dtype=np.int32)
    keep = np.ones(len(polys), dtype=bool) if areas is None else areas >= min_area
    polys, classes = polys[keep], classes[keep]
    if simplify > 0 and len(polys):
        polys = shapely.simplify(polys, simplify, preserve_topology=True)
    names = np.array([class_names[c] if c < len(class_names) else str(c) for c in classes], object)
    area_col = np.full(len(polys), np.nan) if areas is None else areas[keep]
    driver, _ = VECTOR_FORMATS[fmt]
    if out.exists():
        out.unlink()
    with warnings.catch_warnings():  # pyogrio's "no crs" warning repeats ours
        warnings.filterwarnings("ignore", message="'crs' was not provided")
        pyogrio.raw.write(
            str(out),
            geometry=shapely.to_wkb(polys) if len(polys) else np.array([], dtype=object),
            field_data=[classes, names, area_col],
            fields=["class", "class_name", "area_m2"],
            layer=out.stem,
            driver=driver,
            geometry_type="Polygon",
            crs=crs.to_wkt() if crs is not None else None,
            promote_to_multi=False,
        )
    return VectorSummary(out, int(keep.sum()), int((~keep).sum()), areas is not None)
