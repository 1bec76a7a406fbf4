"""The embedded sample data set: synthetic aerial scenes in the extracted Potsdam archive layout.

Generated from a seed in seconds, read by the very same :class:`glcnet.data.isprs.Potsdam` loader::

    <root>/4_Ortho_RGBIR/top_potsdam_{r}_{c}_RGBIR.tif                       R, G, B, IR (uint8)
    <root>/5_Labels_all/top_potsdam_{r}_{c}_label.tif                        colour-coded labels
    <root>/5_Labels_all_noBoundary/top_potsdam_{r}_{c}_label_noBoundary.tif  boundaries in black
    <root>/sample_manifest.json, <root>/README.txt                           seed, size, fractions

All 38 official scene ids are written (24 train, 14 test), ``scene_size`` px square, as tiled,
deflate-compressed GeoTIFFs in EPSG:32633 with 5 cm pixels. Each scene is a small town: a (possibly
rotated) road grid with sidewalks, lane marks and parked cars; blocks of houses with gardens,
large buildings with parking lots, parks, and yards full of clutter; tree canopies, shadows, sensor
noise, blur and illumination changes. Each scene has its own look
(:class:`glcnet.data.sample_look.SceneLook`): season (green or dry grass, leafy or bare trees),
dark or pale asphalt, sun elevation and shadow depth, exposure, band gains and haze, so that colour
alone transfers between scenes about as poorly as between real Potsdam tiles
(``scripts/realism.py`` measures it). Scene ``r_c`` is drawn from ``default_rng([seed, r, c])``, so
any subset of scenes is generated identically.

Example:
    >>> from glcnet.data.sample import ensure_sample_dataset
    >>> root = ensure_sample_dataset("data/sample", seed=0)  # no-op when already there
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np
import rasterio
from rasterio.transform import Affine

from glcnet.data.classes import BOUNDARY_COLOR, ISPRS_CLASSES, encode_palette
from glcnet.data.isprs import POTSDAM_TEST_SCENES, POTSDAM_TRAIN_SCENES
from glcnet.data.sample_look import GRASS_GREEN, SceneLook

#: Version of the generated content; bump it whenever the output of a seed changes.
SAMPLE_VERSION: int = 2
SCENES: tuple[str, ...] = POTSDAM_TRAIN_SCENES + POTSDAM_TEST_SCENES
MANIFEST, GENERATOR, BANDS = "sample_manifest.json", "glcnet.data.sample", ("R", "G", "B", "IR")
PRODUCTS = MappingProxyType(
    {  # product -> (folder, file name template)
        "image": ("4_Ortho_RGBIR", "top_potsdam_{id}_RGBIR.tif"),
        "label": ("5_Labels_all", "top_potsdam_{id}_label.tif"),
        "eroded": ("5_Labels_all_noBoundary", "top_potsdam_{id}_label_noBoundary.tif"),
    }
)
CRS_EPSG, PIXEL_M, ORIGIN = 32633, 0.05, (366000.0, 5808000.0)
ERODE_RADIUS = 3

# Base colours (R, G, B, IR) at exposure 1. Grass, trees, asphalt and paving come from the scene's
# look (glcnet/data/sample_look.py): season and materials change from scene to scene.
# fmt: off
HEDGE, CONCRETE = (62, 84, 54, 134), (132, 130, 124, 118)
MARK, POOL = (220, 220, 214, 196), (90, 170, 200, 40)
ROOFS = ((168, 88, 72, 118), (128, 84, 66, 96),  # red and brown tiles: striped gable roofs
         (136, 134, 130, 120), (66, 66, 74, 56), (196, 194, 188, 170))  # grey, dark, light
CARS = ((212, 212, 210, 190), (38, 38, 42, 36), (150, 152, 156, 138), (165, 35, 32, 92),
        (40, 62, 135, 58), (82, 82, 88, 72), (95, 130, 160, 120))
PATCHES = ((132, 106, 80, 124), (42, 74, 80, 16),  # clutter patches: soil, water,
           (170, 165, 156, 150), (90, 70, 55, 70))  # gravel, debris
BOXES = ((200, 90, 40, 110), (60, 92, 165, 84), (225, 222, 215, 205))  # containers, tarps, skips
# fmt: on
_CORNERS = ((-1, -1), (1, -1), (1, 1), (-1, 1))
HALF_PI = math.pi / 2


class _Frame:
    """A rectangle of the layout: ``a`` in [0, A] along direction ``ang``, ``b`` in [0, B] across."""

    def __init__(self, origin, ang: float, A: float, B: float) -> None:
        self.o, self.ang, self.A, self.B = np.asarray(origin, float), ang, A, B
        self.av = np.array([math.cos(ang), math.sin(ang)])
        self.bv = np.array([-self.av[1], self.av[0]])

    @classmethod
    def of_box(cls, u0, v0, u1, v1) -> _Frame:
        """The box (u0, v0, u1, v1) with ``a`` along its longer side."""
        if u1 - u0 >= v1 - v0:
            return cls((u0, v0), 0.0, u1 - u0, v1 - v0)
        return cls((u1, v0), HALF_PI, v1 - v0, u1 - u0)

    def pt(self, a, b) -> np.ndarray:
        return self.o + a * self.av + b * self.bv

    def rect(self, a0, b0, a1, b1) -> list[np.ndarray]:
        return [self.pt(a0, b0), self.pt(a1, b0), self.pt(a1, b1), self.pt(a0, b1)]

    def sub(self, a0, b0, a1, b1) -> _Frame:
        return _Frame(self.pt(a0, b0), self.ang, a1 - a0, b1 - b0)

    def flipped(self) -> _Frame:
        """The same rectangle seen from its opposite side."""
        return _Frame(self.pt(self.A, self.B), self.ang + math.pi, self.A, self.B)

    def anywhere(self, rng) -> np.ndarray:
        return self.pt(rng.uniform(0, self.A), rng.uniform(0, self.B))


class _Painter:
    """Paints objects into an object-id map; shapes are given in a layout frame (u, v).

    The layout frame is the scene rotated by ``angle`` about its centre and enlarged to a square of
    side ``extent`` covering the whole scene: a street grid drawn axis-aligned in (u, v) appears
    rotated in the image. Each object has a class, a base colour and texture parameters.
    """

    def __init__(self, rng: np.random.Generator, size: int, angle: float, look: SceneLook) -> None:
        c, s = math.cos(angle), math.sin(angle)
        self.rng, self.look, self.size, self.extent = rng, look, size, size * (abs(c) + abs(s))
        self.rot = np.array([[c, -s], [s, c]])  # pixel = rot @ (u, v) + shift
        self.shift = size / 2 - self.rot @ np.full(2, self.extent / 2)
        self.obj = np.zeros((size, size), np.int32)
        self.shade = np.ones((size, size), np.float32)
        self.attrs: list[tuple] = []  # class, R, G, B, IR, texture %, stripes %, stripe direction
        sun = rng.uniform(0, 2 * math.pi)
        self.sun = np.array([math.cos(sun), math.sin(sun)])  # towards the sun, pixel frame
        self.sun_uv = self.rot.T @ self.sun
        self.roofs = rng.dirichlet([2.0, 1.0, 1.5, 1.2, 1.5])  # the scene's roof palette
        self.trees, self.parked = rng.uniform(0.9, 2.0), rng.uniform(0.05, 0.25)
        self.street_trees = rng.uniform(0.2, 0.7)
        self.paving, self.asphalt = self.new(0, look.paving, 5.0), self.new(0, look.asphalt, 4.0)
        self.mark = self.new(0, MARK, 2.0, 0.04, 3.0)

    def new(self, cls, color, tex=3.0, rel=0.07, ab=5.0, stripe=0.0, axis=0.0) -> int:
        """Register an object of a jittered colour; returns its id."""
        c = np.asarray(color, float) * (1 + self.rng.normal(0, rel)) + self.rng.normal(0, ab, 4)
        self.attrs.append((cls, *np.clip(c, 4, 250), tex, stripe, axis))
        return len(self.attrs) - 1

    def poly(self, polys, oid: int, shade: float = 1.0) -> None:
        xy = [
            np.round((np.asarray(q) @ self.rot.T + self.shift) * 16).astype(np.int32) for q in polys
        ]
        cv2.fillPoly(self.obj, xy, int(oid), shift=4)
        cv2.fillPoly(self.shade, xy, float(shade), shift=4)

    def quad(self, centre, length, width, ang, oid, shade=1.0) -> None:
        d = np.array([math.cos(ang), math.sin(ang)])
        n = np.array([-d[1], d[0]])
        self.poly(
            [[centre + (a * length * d + b * width * n) / 2 for a, b in _CORNERS]], oid, shade
        )

    def blob(self, centre, r, oid, jitter=0.2, n=14) -> None:
        t = np.linspace(0, 2 * np.pi, n, endpoint=False) + self.rng.uniform(0, 2 * np.pi / n)
        rad = r * (1 + self.rng.uniform(-jitter, jitter, n))
        self.poly([centre + np.stack([rad * np.cos(t), rad * np.sin(t)], 1)], oid)

    def tree(self, centre, r) -> None:
        self.blob(centre, r, self.new(3, self.look.tree(self.rng), 5.0, 0.1, 6.0), 0.18)

    def car(self, centre, ang) -> None:
        """A car (~8x16 px) with dark windshield and rear window, facing either way."""
        rng = self.rng
        oid = self.new(4, CARS[rng.integers(len(CARS))], 2.0, 0.05, 4.0)
        ang += rng.choice([0, math.pi]) + rng.normal(0, 0.04)
        length, width = rng.uniform(14, 17), rng.uniform(7, 8.5)
        d = np.array([math.cos(ang), math.sin(ang)])
        self.quad(centre, length, width, ang, oid)
        for off, frac, shade in ((0.17, 0.2, 0.42), (-0.32, 0.12, 0.6)):
            self.quad(centre + d * off * length, frac * length, 0.84 * width, ang, oid, shade)

    def clutter(self, centre, size, ang, box: bool) -> None:
        """A box (container, tarp, skip) or an irregular patch (soil, water, gravel, debris)."""
        rng = self.rng
        if box:
            oid = self.new(5, BOXES[rng.integers(len(BOXES))], rng.uniform(3, 8), 0.1, 8.0)
            self.quad(centre, 1.6 * size, 0.7 * size, ang + rng.choice([0, HALF_PI]), oid)
        else:
            oid = self.new(5, PATCHES[rng.integers(len(PATCHES))], rng.uniform(4, 12), 0.1, 8.0)
            self.blob(centre, size, oid, 0.35, 10)


def _roof(p: _Painter, fr: _Frame, box, wing=None, flat=False) -> None:
    """A building: gable roof (two halves lit by the sun, ridge along the long side) or flat roof.

    ``box`` is (a0, b0, a1, b1) in ``fr``; ``wing`` = (a0, a1, b1) adds a wing behind it.
    """
    rng, (a0, b0, a1, b1) = p.rng, box
    k = rng.choice(len(ROOFS), p=p.roofs)
    flat = flat or (k >= 2 and rng.random() < 0.5)
    tiles = 0.0 if flat or k >= 2 else 9.0
    ridge = fr.ang + (HALF_PI if a1 - a0 >= b1 - b0 else 0.0)
    oid = p.new(1, ROOFS[k], 3.0 if flat else 2.0, stripe=tiles, axis=ridge)
    for x0, y0, x1, y1 in [box] + ([(wing[0], b1 - 2, wing[1], wing[2])] if wing else []):
        if flat:
            p.poly([fr.rect(x0, y0, x1, y1)], oid)
            continue
        if x1 - x0 >= y1 - y0:  # ridge along a: halves split in b
            ym, lit = (y0 + y1) / 2, 0.22 * float(fr.bv @ p.sun_uv)
            p.poly([fr.rect(x0, y0, x1, ym)], oid, 0.9 - lit)
            p.poly([fr.rect(x0, ym, x1, y1)], oid, 0.9 + lit)
        else:
            xm, lit = (x0 + x1) / 2, 0.22 * float(fr.av @ p.sun_uv)
            p.poly([fr.rect(x0, y0, xm, y1)], oid, 0.9 - lit)
            p.poly([fr.rect(xm, y0, x1, y1)], oid, 0.9 + lit)
    for _ in range(rng.poisson(0.00035 * (a1 - a0) * (b1 - b0)) if flat else 0):  # rooftop boxes
        w, h = rng.uniform(3, 9, 2)
        x, y = a0 + rng.random() * max(a1 - a0 - w, 0), b0 + rng.random() * max(b1 - b0 - h, 0)
        p.poly([fr.rect(x, y, x + w, y + h)], oid, rng.choice([0.72, 1.2]))


def _lot(p: _Painter, lot: _Frame) -> None:
    """A house lot facing its road at b = 0: house, driveway, garden with trees, hedge, pool."""
    rng, A, B = p.rng, lot.A, lot.B
    if rng.random() < 0.09:  # construction site: bare soil (clutter) and a container
        p.poly([lot.rect(3, 3, A - 3, B - 3)], p.new(5, PATCHES[0], 9.0, 0.1, 8.0))
        p.clutter(lot.pt(A / 2, B / 2), rng.uniform(4, 6), lot.ang, True)
        return
    w, d, sb = A * rng.uniform(0.6, 0.85), min(rng.uniform(30, 50), B - 12), rng.uniform(5, 11)
    h0, back = (A - w) / 2, B - sb - d
    if rng.random() < 0.6:  # driveway, sometimes with a car on it
        x = h0 - 9 if rng.random() < 0.5 else h0 + w + 1
        p.poly([lot.rect(x, -1, x + 8, sb + 0.7 * d)], p.new(0, p.look.paving, 4.0))
        if rng.random() < 0.25:
            p.car(lot.pt(x + 4, sb + 8), lot.ang + HALF_PI)
    ww = w * rng.uniform(0.35, 0.5)
    wx = h0 if rng.random() < 0.5 else h0 + w - ww
    wing = (wx, wx + ww, sb + d + rng.uniform(10, 18)) if rng.random() < 0.3 and back > 22 else None
    _roof(p, lot, (h0, sb, h0 + w, sb + d), wing)
    if rng.random() < 0.3:  # hedge along the lot boundary
        p.poly([lot.rect(0, sb + d + 4, rng.uniform(3, 5), B - 2)], p.new(2, HEDGE, 10.0))
    if rng.random() < 0.07:  # swimming pool
        p.poly([lot.rect(6, B - 22, 20, B - 8)], p.new(5, POOL, 2.0))
    if rng.random() < 0.4:  # shed, bins, compost
        where = lot.pt(rng.uniform(4, A - 4), B - rng.uniform(6, 14))
        p.clutter(where, rng.uniform(3, 6), lot.ang, rng.random() < 0.4)
    for _ in range(rng.poisson(1.3 * p.trees)):
        p.tree(lot.pt(rng.uniform(0, A), B - rng.random() * max(back - 2, 0)), rng.uniform(6, 13))


def _residential(p: _Painter, fr: _Frame) -> None:
    """Rows of house lots along the block's long sides."""
    if fr.B < 40:
        return _park(p, fr)
    rows = (fr, fr.flipped()) if fr.B > 75 else (fr.flipped() if p.rng.random() < 0.5 else fr,)
    for row in rows:
        a = p.rng.uniform(-10, 4)
        while a < fr.A - 20:
            lw = p.rng.uniform(40, 64)
            _lot(p, row.sub(a, 0, a + lw, fr.B / len(rows)))
            a += lw


def _parking(p: _Painter, lot: _Frame) -> None:
    """An asphalt parking lot with rows of marked slots, partly occupied."""
    if lot.A < 24 or lot.B < 20:
        return
    p.poly([lot.rect(0, 0, lot.A, lot.B)], p.new(0, p.look.lot_asphalt(p.rng), 4.0, 0.05))
    marks, occ = p.new(0, MARK, 2.0, 0.04, 3.0), p.rng.uniform(0.2, 0.6)
    for b in np.arange(2, lot.B - 17, 32):
        slots = np.arange(4, lot.A - 14, 11.0)
        p.poly([lot.rect(s, b, s + 1, b + 18) for s in slots], marks)
        for s in slots[:-1][p.rng.random(len(slots) - 1) < occ]:
            p.car(lot.pt(s + 6, b + 9), lot.ang + HALF_PI)


def _large(p: _Painter, fr: _Frame) -> None:
    """A large building (block, L-shape or courtyard ring) with a parking lot and trees."""
    rng, m = p.rng, p.rng.uniform(6, 14)
    if fr.A < 60 or fr.B < 60:
        return _roof(p, fr, (m, m, fr.A - m, fr.B - m), flat=True)
    bd, shape = fr.B * rng.uniform(0.5, 0.75), rng.random()
    wa = rng.uniform(0.25, 0.4) * (fr.A - 2 * m)
    w0 = m if rng.random() < 0.5 else fr.A - m - wa
    wing = (w0, w0 + wa, fr.B - m) if 0.3 <= shape < 0.6 else None
    _roof(p, fr, (m, m, fr.A - m, m + bd), wing, flat=shape < 0.3 or rng.random() < 0.6)
    if shape < 0.3:  # courtyard
        r = min(rng.uniform(18, 28), (min(fr.A - 2 * m, bd) - 8) / 2)  # the yard is >= 8 px wide
        yard = fr.sub(m + r, m + r, fr.A - m - r, m + bd - r)
        p.poly([yard.rect(0, 0, yard.A, yard.B)], p.new(2, GRASS_GREEN, 4.0))
        for _ in range(rng.poisson(2 * p.trees)):
            p.tree(yard.anywhere(rng), rng.uniform(6, 11))
    else:
        lo, hi = (w0 + wa + 4, fr.A - m) if wing and w0 == m else (m, w0 - 4 if wing else fr.A - m)
        _parking(p, fr.sub(lo, m + bd + rng.uniform(4, 10), hi, fr.B - m))
    for _ in range(rng.poisson(1.5 * p.trees)):  # trees along the margin
        p.tree(fr.pt(rng.uniform(0, fr.A), rng.choice([m / 2, fr.B - m / 2])), rng.uniform(5, 9))


def _park(p: _Painter, fr: _Frame) -> None:
    """Lawn with clusters of trees, a footpath and maybe a pond."""
    rng = p.rng
    q0, q1 = fr.pt(0, rng.uniform(0, fr.B)), fr.pt(fr.A, rng.uniform(0, fr.B))
    ang = math.atan2(*(q1 - q0)[::-1])
    p.quad((q0 + q1) / 2, np.hypot(*(q1 - q0)), rng.uniform(5, 7), ang, p.new(0, p.look.paving))
    if rng.random() < 0.35:  # pond
        where = fr.sub(fr.A / 4, fr.B / 4, fr.A * 0.75, fr.B * 0.75).anywhere(rng)
        p.blob(where, rng.uniform(10, 20), p.new(5, PATCHES[1], 3.0, 0.1, 5.0), 0.3)
    for _ in range(rng.integers(2, 5)):
        centre = fr.anywhere(rng)
        for _ in range(rng.poisson(6 * p.trees)):
            p.tree(centre + rng.normal(0, 14, 2), rng.uniform(7, 15))


def _yard(p: _Painter, fr: _Frame) -> None:
    """Concrete yard with a hall, heaps and pits, containers and a car or two."""
    rng, A, B = p.rng, fr.A, fr.B
    p.poly([fr.rect(0, 0, A, B)], p.new(0, CONCRETE, 6.0, 0.1))
    if A > 70 and B > 50:
        a0 = rng.uniform(4, A / 2)
        _roof(p, fr, (a0, 5, a0 + rng.uniform(30, A / 2), 5 + rng.uniform(22, B / 2)), flat=True)
    for _ in range(rng.poisson(A * B / 5000) + 1):
        p.clutter(fr.anywhere(rng), rng.uniform(8, 20), fr.ang, False)
    for _ in range(rng.poisson(A * B / 2500)):
        p.clutter(fr.anywhere(rng), rng.uniform(4, 7), fr.ang, True)
    for _ in range(rng.poisson(1.0)):
        p.car(fr.anywhere(rng), fr.ang)


BLOCKS, BLOCK_P = (_residential, _large, _park, _yard), (0.44, 0.37, 0.07, 0.12)


def _road(p: _Painter, stage: str, fr: _Frame, hw, sw, dash, cross) -> None:
    """One drawing stage of a road: centre line b = 0, ``hw`` half width, ``sw`` sidewalk width."""
    rng, (d0, d1) = p.rng, dash
    if stage == "side":
        p.poly([fr.rect(0, -hw - sw, fr.A, hw + sw)], p.paving)
    elif stage == "asphalt":
        p.poly([fr.rect(0, -hw, fr.A, hw)], p.asphalt)
        xs = np.arange(d0 + 3, d1 - 9, 21)
        if len(xs):
            p.poly([fr.rect(x, -0.8, x + 9, 0.8) for x in xs], p.mark)
    for side in (-1, 1) if stage == "cars" else ():  # parked cars, none near crossings
        xs = np.arange(d0 + rng.uniform(8, 20), d1 - 8, rng.uniform(17, 20))
        free = ~np.any(np.abs(xs[:, None] - cross[None]) < 24, 1) & (rng.random(len(xs)) < p.parked)
        for x in xs[free]:
            p.car(fr.pt(x, side * (hw - 4.5)), fr.ang)
    for side in (-1, 1) if stage == "trees" else ():
        if rng.random() < p.street_trees:
            for x in np.arange(d0 + rng.uniform(0, 20), d1, rng.uniform(22, 34)):
                p.tree(fr.pt(x, side * (hw + sw + rng.uniform(-3, 4))), rng.uniform(7, 11))


def _lines(rng, extent: float, spacing: float) -> np.ndarray:
    """Road centre lines across one axis, (n, 3): position, half asphalt width, sidewalk width."""
    pos = [-rng.uniform(0.3, 1.0) * spacing]
    while pos[-1] < extent + spacing:
        pos.append(pos[-1] + spacing * rng.uniform(0.75, 1.3))
    return np.stack([pos, rng.uniform(8, 12, len(pos)), rng.uniform(3, 6, len(pos))], 1)


def _layout(p: _Painter) -> None:
    """A town: a road grid (some crossings dropped) and blocks of several kinds, on a lawn."""
    rng, L = p.rng, p.extent
    p.poly([[(0, 0), (L, 0), (L, L), (0, L)]], p.new(2, GRASS_GREEN, 4.0, 0.04, 3.0))
    spacing = rng.uniform(150, 220)
    hr, vr = _lines(rng, L, spacing), _lines(rng, L, spacing)
    keep = rng.random((len(hr) - 1, len(vr))) < 0.8
    keep[:, [0, -1]] = True
    # Roads as (frame, half width, sidewalk, dashed stretch, crossings): horizontal ones first.
    roads = [(_Frame((-10, c), 0.0, L + 20, 0), h, s, (0, L + 20), vr[:, 0] + 10) for c, h, s in hr]
    for i, j in zip(*np.nonzero(keep)):  # vertical segments between two horizontal roads
        (c0, h0, _), (c1, h1, _), (c, h, s) = hr[i], hr[i + 1], vr[j]
        fr = _Frame((c, c0), HALF_PI, c1 - c0, 0)
        roads.append((fr, h, s, (h0 + 2, c1 - c0 - h1 - 2), np.zeros(0)))
    for stage in ("side", "asphalt"):
        for r in roads:
            _road(p, stage, *r)
    for i in range(len(hr) - 1):
        v0, v1 = hr[i, 0] + hr[i, 1:].sum(), hr[i + 1, 0] - hr[i + 1, 1:].sum()
        cuts = vr[keep[i]]
        for (c0, h0, s0), (c1, h1, s1) in zip(cuts[:-1], cuts[1:]):
            u0, u1 = c0 + h0 + s0, c1 - h1 - s1
            if min(u1 - u0, v1 - v0) >= 20 and min(u1, v1) > 0 and max(u0, v0) < L:
                BLOCKS[rng.choice(len(BLOCKS), p=BLOCK_P)](p, _Frame.of_box(u0, v0, u1, v1))
    for stage in ("cars", "trees"):
        for r in roads:
            _road(p, stage, *r)


def _noise(rng, size: int, sigma: float) -> np.ndarray:
    """Blurred white noise with unit standard deviation, (size, size) float32."""
    n = cv2.GaussianBlur(rng.standard_normal((size, size), dtype=np.float32), (0, 0), sigma)
    return n / max(float(n.std()), 1e-6)


def _smooth(rng, size: int, scale: float) -> np.ndarray:
    """Smooth noise of feature size ``scale`` px, about unit standard deviation, (size, size)."""
    g = int(size / scale) + 4
    grid = rng.standard_normal((g, g), dtype=np.float32)
    big = cv2.resize(grid, (int(g * scale), int(g * scale)), interpolation=cv2.INTER_CUBIC)
    return big[int(scale) : int(scale) + size, int(scale) : int(scale) + size]


def _edges(obj: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another object id, (H, W) bool."""
    cross, ids = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3)), obj.astype(np.float32)
    return cv2.dilate(ids, cross) != cv2.erode(ids, cross)


def _shadow(tall: np.ndarray, sun_xy: np.ndarray, length: float) -> np.ndarray:
    """Pixels shaded by ``tall`` objects: their footprint swept ``length`` px away from the sun."""
    k = int(math.ceil(length))
    kernel = np.zeros((2 * k + 1, 2 * k + 1), np.uint8)
    end = np.round(k + sun_xy * length).astype(int)
    cv2.line(kernel, (k, k), (int(end[0]), int(end[1])), 1, 1)
    return cv2.dilate(tall.astype(np.uint8), kernel).astype(bool)


def render_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic aerial scene and its labels.

    Args:
        rng: Random generator; the scene is a pure function of its state.
        size: Side of the square scene in pixels (5 cm each; a block is ~150-220 px).

    Returns:
        ``image`` (4, size, size) uint8 with bands R, G, B, IR, and ``mask`` (size, size) int64 with
        class indices 0..5 in :data:`glcnet.data.classes.ISPRS_CLASSES` order.
    """
    size = _check_int("size", size, 16)
    angle = rng.choice([0.0, HALF_PI]) if rng.random() < 0.45 else rng.uniform(0, math.pi)
    look = SceneLook.draw(rng)
    p = _Painter(rng, size, float(angle), look)
    _layout(p)
    attrs, obj = np.asarray(p.attrs, np.float32), p.obj
    mask = attrs[:, 0].astype(np.int64)[obj]
    tree, building, edge = mask == 3, mask == 1, _edges(obj)
    # Texture in percent: fine noise, roof-tile stripes across the ridge, leafy clumps, lawn patches.
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) - p.shift[::-1, None, None]
    u, v = x * p.rot[0, 0] + y * p.rot[1, 0], x * p.rot[0, 1] + y * p.rot[1, 1]
    phi = attrs[:, 7][obj]
    pct = attrs[:, 5][obj] * _noise(rng, size, 0.7)
    pct += attrs[:, 6][obj] * np.sin(2.0 * (u * np.cos(phi) + v * np.sin(phi)))
    lawn = np.where(mask == 2, 14 * _smooth(rng, size, 10), 0)
    pct += np.where(tree, 24 * _noise(rng, size, 1.4), lawn)
    crown = cv2.distanceTransform((tree & ~edge).astype(np.uint8), cv2.DIST_L2, 3)  # crown shading
    factor = (1 + pct / 100) * p.shade * np.where(tree, 0.75 + 0.3 * np.clip(crown / 5, 0, 1), 1)
    factor *= np.where(edge & building, 0.8, 1) * np.where(edge & (mask == 4), 0.7, 1)
    img = attrs[:, 1:5][obj] * factor[..., None]
    dry = look.dryness(_smooth(rng, size, 40))  # green and dry patches, the season on average
    img *= look.grass_factor(np.where(mask == 2, dry, np.float32(0)))
    length = look.shadow_length * rng.uniform(0.8, 1.2)
    shadow = _shadow(building, p.sun, length) | (_shadow(tree, p.sun, 0.6 * length) & ~tree)
    img[shadow & ~building] *= look.shadow
    img = look.expose(img, (1 + 0.07 * _smooth(rng, size, 90)).astype(np.float32))
    img = cv2.GaussianBlur(img, (0, 0), 0.7)
    img += 2.5 * rng.standard_normal(img.shape, dtype=np.float32)  # sensor noise
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8).transpose(2, 0, 1)
    return np.ascontiguousarray(image), mask


def boundary_mask(mask: np.ndarray, radius: int = ERODE_RADIUS) -> np.ndarray:
    """Pixels within ``radius`` px (disc, Euclidean) of a pixel of another class.

    Args:
        mask: Class indices, (H, W) integer.
        radius: Disc radius; offsets with ``dy**2 + dx**2 <= radius**2`` are neighbours.

    Returns:
        (H, W) bool, True where the eroded labels are painted black. Pixels outside the image do
        not count, so the image border is no boundary.
    """
    r = int(radius)
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = (dy**2 + dx**2 <= r * r).astype(np.uint8)
    keep = np.zeros(mask.shape, bool)
    for c in np.unique(mask):
        keep |= cv2.erode((mask == c).astype(np.uint8), disc).astype(bool)
    return ~keep


def _scene_key(scene: str) -> tuple[int, int]:
    if scene not in SCENES:
        raise ValueError(f"unknown Potsdam scene id {scene!r}; expected one of {SCENES}")
    r, c = scene.split("_")
    return int(r), int(c)


def _write_tif(path: Path, data: np.ndarray, scene: str, photometric: str, names=None) -> None:
    """Write a (bands, H, W) uint8 array as a tiled, compressed, georeferenced GeoTIFF."""
    (r, c), (count, h, w) = _scene_key(scene), data.shape
    x0, y0 = ORIGIN[0] + c * w * PIXEL_M, ORIGIN[1] - r * h * PIXEL_M  # scenes side by side
    geo = dict(crs=f"EPSG:{CRS_EPSG}", transform=Affine(PIXEL_M, 0, x0, 0, -PIXEL_M, y0))
    block = min(256, -(-max(h, w) // 16) * 16)  # tiles for fast windowed reads
    tiff = dict(tiled=True, blockxsize=block, blockysize=block, compress="deflate", predictor=2)
    with rasterio.open(
        path, "w", driver="GTiff", width=w, height=h, count=count, dtype="uint8", **geo, **tiff,
        photometric=photometric,
    ) as ds:  # fmt: skip
        ds.write(data)
        if names:
            ds.descriptions = names


def _render_files(seed: int, size: int, scene: str) -> tuple[dict, np.ndarray]:
    """Image, labels and eroded labels of one scene (by product), and its class pixel counts."""
    image, mask = render_scene(np.random.default_rng([seed, *_scene_key(scene)]), size)
    label = encode_palette(mask)
    eroded = label.copy()
    eroded[:, boundary_mask(mask)] = np.asarray(BOUNDARY_COLOR, np.uint8)[:, None]
    counts = np.bincount(mask.ravel(), minlength=len(ISPRS_CLASSES))
    return {"image": image, "label": label, "eroded": eroded}, counts


def _write_scene(dest: Path, seed: int, size: int, scene: str) -> np.ndarray:
    """Render one scene and write its three GeoTIFFs; returns its class pixel counts."""
    arrays, counts = _render_files(seed, size, scene)
    for key, (folder, template) in PRODUCTS.items():
        photometric, names = ("minisblack", BANDS) if key == "image" else ("rgb", None)
        _write_tif(
            dest / folder / template.format(id=scene), arrays[key], scene, photometric, names
        )
    return counts


def _fractions(counts: np.ndarray) -> dict[str, float]:
    total = max(float(np.sum(counts)), 1.0)
    return {k: round(float(v) / total, 5) for k, v in zip(ISPRS_CLASSES, counts)}


def _write_dataset(dest: Path, seed: int, size: int, scenes: Sequence[str]) -> dict:
    """Render and write ``scenes`` into ``dest`` (two threads), then the manifest and README."""
    for folder, _ in PRODUCTS.values():
        (dest / folder).mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        counts = list(pool.map(lambda s: _write_scene(dest, seed, size, s), scenes))
    per_scene = {
        s: {
            "split": "train" if s in POTSDAM_TRAIN_SCENES else "test",
            "class_fractions": _fractions(n),
        }
        for s, n in zip(scenes, counts)
    }
    manifest = {**_identity(seed, size), "crs": f"EPSG:{CRS_EPSG}", "pixel_size_m": PIXEL_M}
    manifest.update(erode_radius_px=ERODE_RADIUS, class_fractions=_fractions(np.sum(counts, 0)))
    manifest["scenes"] = per_scene
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1))
    fr = ", ".join(f"{k} {v:.3f}" for k, v in manifest["class_fractions"].items())
    (dest / "README.txt").write_text(
        f"Synthetic sample data set in the ISPRS Potsdam layout, made by glcnet.data.sample "
        f"(version {SAMPLE_VERSION}) from seed {seed}: {len(scenes)} scene(s) of {size}x{size} px "
        f"(5 cm, EPSG:{CRS_EPSG}). Regenerate with `python -m glcnet.data.sample`.\n"
        f"Class pixel fractions: {fr}.\nNot real data: for tests, demos and smoke runs only.\n"
    )
    return manifest


def _identity(seed: int, size: int) -> dict:
    """The manifest entries that decide whether a data set on disk is current."""
    return {"generator": GENERATOR, "version": SAMPLE_VERSION, "seed": seed, "scene_size": size}


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _install(tmp: Path, root: Path) -> None:
    """Move the finished ``tmp`` folder to ``root`` (each step an atomic rename)."""
    old = None
    if root.exists() and any(root.iterdir()):
        old = root.with_name(f".{root.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(root, old)
    elif root.exists():
        root.rmdir()
    os.replace(tmp, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def generate_sample_dataset(
    root: str | Path,
    *,
    seed: int = 0,
    scene_size: int = 512,
    scenes: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Generate the sample data set into ``root`` (written aside, then renamed into place).

    Args:
        root: Target folder; must be absent or empty unless ``overwrite``.
        seed: Non-negative seed; scene ``r_c`` is drawn from ``default_rng([seed, r, c])``.
        scene_size: Side of each square scene in pixels (at least 16).
        scenes: Scene ids to write (default: all 38 official Potsdam scenes).
        overwrite: Replace an existing sample data set at ``root``. A non-empty folder without a
            sample manifest is never replaced (it may hold real data).

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: Bad seed, size or scene id.
        FileExistsError: ``root`` is not empty and ``overwrite`` is off, or holds something else.
    """
    root = Path(root).expanduser()
    seed, scene_size = _check_int("seed", seed, 0), _check_int("scene_size", scene_size, 16)
    scenes = list(dict.fromkeys(SCENES if scenes is None else scenes))
    for s in scenes:
        _scene_key(s)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{root} is not empty; pass overwrite=True to replace it")
        if (_read_manifest(root) or {}).get("generator") != GENERATOR:
            raise FileExistsError(f"{root} holds no sample {MANIFEST}: refusing to replace it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(f".{root.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        _write_dataset(tmp, seed, scene_size, scenes)
        _install(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on a file next to ``root`` (POSIX ``flock``; elsewhere no lock)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.with_name(f".{root.name}.lock"), "a") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: the atomic rename still protects readers
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_current(root: str | Path, *, seed: int = 0, scene_size: int = 512) -> bool:
    """Whether ``root`` holds all 38 scenes of this seed, size and :data:`SAMPLE_VERSION`."""
    root, m = Path(root).expanduser(), _read_manifest(Path(root).expanduser())
    if m is None or any(m.get(k) != v for k, v in _identity(seed, scene_size).items()):
        return False
    files = [root / f / t.format(id=s) for f, t in PRODUCTS.values() for s in SCENES]
    return list(m.get("scenes", {})) == list(SCENES) and all(f.is_file() for f in files)


def ensure_sample_dataset(root: str | Path, *, seed: int = 0, scene_size: int = 512) -> Path:
    """Generate the full sample data set at ``root`` unless it is already there and current.

    Regenerates when the manifest's seed, size or generator version differ or a file is missing.
    Safe to call from several processes at once: a lock file next to ``root`` serialises them,
    and the data set appears through an atomic rename.

    Args:
        root: Target folder.
        seed: Generator seed.
        scene_size: Side of each scene in pixels.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    root = Path(root).expanduser()
    with _locked(root):
        if not is_current(root, seed=seed, scene_size=scene_size):
            generate_sample_dataset(root, seed=seed, scene_size=scene_size, overwrite=True)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m glcnet.data.sample [--root R] [--seed S] [--size N] [--force]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_root = Path(__file__).resolve().parents[2] / "data" / "sample"
    parser.add_argument("--root", type=Path, default=default_root, help=f"default: {default_root}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=512, help="scene side in pixels")
    parser.add_argument("--force", action="store_true", help="regenerate even when current")
    args = parser.parse_args(argv)
    if not args.force and is_current(args.root, seed=args.seed, scene_size=args.size):
        print(f"{args.root}: sample data set (seed {args.seed}, {args.size} px) is current")
        return
    t0 = time.perf_counter()
    try:
        with _locked(args.root):
            generate_sample_dataset(args.root, seed=args.seed, scene_size=args.size, overwrite=True)
    except (ValueError, FileExistsError) as err:
        parser.error(str(err))
    m = _read_manifest(args.root) or {}
    print(
        f"wrote {len(SCENES)} scenes of {args.size} px (seed {args.seed}) to {args.root} in ",
        end="",
    )
    print(f"{time.perf_counter() - t0:.1f} s:")
    for folder, template in PRODUCTS.values():
        print(f"  {folder}/{template.format(id='{r}_{c}')}")
    print(f"  {MANIFEST}, README.txt")
    fr = ", ".join(f"{k} {v:.3f}" for k, v in m.get("class_fractions", {}).items())
    print(f"class pixel fractions: {fr}")


if __name__ == "__main__":
    main()
