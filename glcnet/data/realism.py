"""How far colour alone carries between scenes: the colour-only realism measurement of a data set.

A per-pixel Gaussian classifier sees only the band values of one pixel (R, G, B, IR for Potsdam):
one mean and one full covariance per class, class priors from the training pixels, prediction by
the largest log posterior (quadratic discriminant analysis). It is trained on one scene and tested
on another. On real aerial imagery such a classifier transfers poorly, because illumination, season,
sensor gain and haze change from scene to scene and the classes overlap in colour; a synthetic data
set on which it transfers well teaches colour rules that real data would not reward.

Only the four classes that every real Potsdam tile holds take part: impervious surfaces, low
vegetation, tree and clutter (:data:`CLASSES`). Pixels of other classes (building, car) and ignored
pixels are neither used for training nor counted.

Definitions (all of :func:`measure_realism`):

* Pixels: from each scene, ``pixels`` pixels are drawn uniformly without replacement from the pixels
  whose label is one of the four classes (all of them when the scene has fewer), with
  ``numpy.random.default_rng([seed, i])`` for the i-th scene, so the draw is fixed by ``seed``.
* Accuracy of a classifier on a set of pixels: the number of pixels whose predicted class equals
  their label, divided by the number of pixels (pixel accuracy over the four classes' pixels).
  Because the pixels are a uniform draw, this estimates the pixel accuracy over the whole scene.
* Cross-scene accuracy: the classifier fitted on all drawn pixels of scene i is tested on all drawn
  pixels of scene j; the figure is the unweighted mean over all N·(N−1) ordered pairs (i ≠ j).
* Within-scene accuracy: the drawn pixels of a scene are split into two disjoint halves (the draw
  is random, so its first and second half); the classifier fitted on the first half is tested on the
  second; the figure is the unweighted mean over the N scenes.
* A class with fewer than ``min_pixels`` training pixels is absent for that classifier: it has no
  Gaussian and is never predicted, so test pixels of that class count as errors. Such cases are
  listed in :attr:`RealismReport.absent`; nothing is dropped silently.
* Each covariance gets ``ridge`` (in squared digital numbers) added to its diagonal, so a class of
  near-constant colour still has an invertible covariance.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glcnet.data.classes import BOUNDARY_COLOR, ISPRS_CLASSES, ISPRS_PALETTE, decode_palette
from glcnet.data.raster import open_raster

#: Class indices (ISPRS order) the measurement uses: the classes every real Potsdam tile holds.
CLASSES: tuple[int, ...] = (0, 2, 3, 5)
#: Targets of issue 12 for the sample set, (low, high), and the figures of two real Potsdam tiles.
CROSS_TARGET, WITHIN_TARGET = (0.45, 0.65), (0.75, 0.95)
REAL_POTSDAM = "real Potsdam (two tiles): cross 0.466, within 0.85-0.88"


@dataclass(frozen=True)
class ScenePixels:
    """The pixels of one scene that take part, and the scene's class means.

    Attributes:
        scene: Scene id.
        values: Band values of the drawn pixels, (n, bands) float64, in random order.
        labels: Their class indices, (n,) int64, each one of :data:`CLASSES`.
        means: Class index -> mean band values over all of the scene's pixels of that class
            (bands,), for the classes of :data:`CLASSES` present in the scene.
    """

    scene: str
    values: np.ndarray
    labels: np.ndarray
    means: dict[int, np.ndarray]


def sample_scene(
    scene: str,
    image: np.ndarray,
    mask: np.ndarray,
    pixels: int,
    rng: np.random.Generator,
    classes: Sequence[int] = CLASSES,
) -> ScenePixels:
    """Draw ``pixels`` pixels of the given classes from one scene.

    Args:
        scene: Scene id (for the report).
        image: Band values, (bands, H, W), any numeric dtype.
        mask: Class indices, (H, W) integer; values outside ``classes`` are left out.
        pixels: How many pixels to draw (all of them when there are fewer).
        rng: Random generator of the draw.
        classes: Class indices that take part.

    Returns:
        The drawn pixels and the class means of the whole scene.
    """
    if image.ndim != 3 or image.shape[1:] != mask.shape:
        raise ValueError(f"scene {scene}: image {image.shape} does not match mask {mask.shape}")
    flat_x, flat_y = image.reshape(image.shape[0], -1), mask.ravel()
    where = np.flatnonzero(np.isin(flat_y, classes))
    chosen = rng.choice(where, size=min(int(pixels), len(where)), replace=False)
    means = {}
    for c in classes:
        sel = flat_y == c
        if sel.any():
            means[c] = flat_x[:, sel].mean(1, dtype=np.float64)
    return ScenePixels(
        scene, flat_x[:, chosen].T.astype(np.float64), flat_y[chosen].astype(np.int64), means
    )


class GaussianColourClassifier:
    """Per-pixel Gaussian classifier: a full-covariance Gaussian per class and class priors.

    Args:
        classes: Class indices it may predict.
        min_pixels: Fewest training pixels for a class to be modelled (otherwise it is absent).
        ridge: Added to the diagonal of every covariance.
    """

    def __init__(self, classes: Sequence[int], min_pixels: int = 50, ridge: float = 1e-3) -> None:
        if min_pixels < 2:
            raise ValueError(f"min_pixels must be >= 2, got {min_pixels}")
        self.classes, self.min_pixels, self.ridge = tuple(classes), int(min_pixels), float(ridge)
        self.modelled: list[int] = []
        self.absent: list[int] = []
        self._params: list[tuple[np.ndarray, np.ndarray, float]] = []

    def fit(self, values: np.ndarray, labels: np.ndarray) -> GaussianColourClassifier:
        """Fit on (n, bands) values with (n,) labels; returns ``self``."""
        self.modelled, self.absent, self._params = [], [], []
        eye = np.eye(values.shape[1])
        for c in self.classes:
            z = values[labels == c]
            if len(z) < self.min_pixels:
                self.absent.append(c)
                continue
            cov = np.cov(z.T) + self.ridge * eye
            log_prior = np.log(len(z) / len(values))
            self.modelled.append(c)
            self._params.append(
                (z.mean(0), np.linalg.inv(cov), log_prior - 0.5 * np.linalg.slogdet(cov)[1])
            )
        if not self.modelled:
            raise ValueError(f"no class has {self.min_pixels} training pixels")
        return self

    def predict(self, values: np.ndarray) -> np.ndarray:
        """Class index of the largest log posterior for each of (n, bands) values, (n,) int64."""
        scores = np.empty((len(self._params), len(values)))
        for k, (mean, inv, offset) in enumerate(self._params):
            d = values - mean
            scores[k] = offset - 0.5 * np.einsum("ij,jk,ik->i", d, inv, d)
        return np.asarray(self.modelled, np.int64)[np.argmax(scores, 0)]

    def accuracy(self, values: np.ndarray, labels: np.ndarray) -> float:
        """Pixel accuracy: share of the pixels predicted as their label."""
        return float(np.mean(self.predict(values) == labels))


@dataclass
class RealismReport:
    """Result of :func:`measure_realism` (see the module docstring for the definitions).

    Attributes:
        scenes: Scene ids, in order.
        cross_pairs: (N, N) accuracy of the classifier of scene i on scene j; NaN on the diagonal.
        within: (N,) within-scene accuracy per scene.
        class_recall: Class index -> mean over ordered pairs of the share of its test pixels
            predicted correctly (pairs whose test scene lacks the class left out).
        class_means: Scene -> class index -> mean band values over the whole scene.
        absent: (training scene, class index, "cross" or "within") for classes not modelled.
        pixels: Pixels drawn per scene; seed: the draw's seed.
    """

    scenes: list[str]
    cross_pairs: np.ndarray
    within: np.ndarray
    class_recall: dict[int, float]
    class_means: dict[str, dict[int, np.ndarray]]
    absent: list[tuple[str, int, str]] = field(default_factory=list)
    pixels: int = 0
    seed: int = 0

    @property
    def cross(self) -> float:
        """Cross-scene accuracy: mean over the N·(N−1) ordered pairs."""
        return float(np.nanmean(self.cross_pairs))

    @property
    def within_mean(self) -> float:
        """Within-scene accuracy: mean over the N scenes."""
        return float(np.mean(self.within))

    def to_dict(self) -> dict:
        """Plain JSON-ready content (class names as keys)."""
        names = {c: ISPRS_CLASSES[c] for c in CLASSES}
        return {
            "classes": [names[c] for c in CLASSES],
            "scenes": self.scenes,
            "pixels_per_scene": self.pixels,
            "seed": self.seed,
            "cross_scene_accuracy": self.cross,
            "within_scene_accuracy": self.within_mean,
            "cross_pairs": [
                [None if np.isnan(v) else float(v) for v in r] for r in self.cross_pairs
            ],
            "within_per_scene": [float(v) for v in self.within],
            "class_recall_cross": {names[c]: v for c, v in self.class_recall.items()},
            "class_means": {
                s: {names[c]: [round(float(v), 2) for v in m] for c, m in cm.items()}
                for s, cm in self.class_means.items()
            },
            "absent": [[s, names[c], k] for s, c, k in self.absent],
        }

    def format(self) -> str:
        """A human-readable summary with the per-class means of every scene."""
        n, pairs = len(self.scenes), self.cross_pairs[~np.eye(len(self.scenes), dtype=bool)]
        lines = [
            f"cross-scene accuracy:  {self.cross:.3f}  (mean of {n * (n - 1)} ordered pairs of "
            f"{n} scenes; min {pairs.min():.3f}, max {pairs.max():.3f}; "
            f"sample-set target {CROSS_TARGET[0]}-{CROSS_TARGET[1]})",
            f"within-scene accuracy: {self.within_mean:.3f}  (mean of {n} scenes; min "
            f"{self.within.min():.3f}, max {self.within.max():.3f}; "
            f"sample-set target {WITHIN_TARGET[0]}-{WITHIN_TARGET[1]})",
            f"reference: {REAL_POTSDAM}",
            "cross-scene recall per class: "
            + ", ".join(f"{ISPRS_CLASSES[c]} {v:.3f}" for c, v in self.class_recall.items()),
            "",
            "class means per scene (R, G, B, IR):",
            f"{'scene':<8}" + "".join(f"{ISPRS_CLASSES[c]:>24}" for c in CLASSES),
        ]
        for s in self.scenes:
            cells = []
            for c in CLASSES:
                m = self.class_means[s].get(c)
                cells.append("-" if m is None else "(" + ", ".join(f"{v:.0f}" for v in m) + ")")
            lines.append(f"{s:<8}" + "".join(f"{cell:>24}" for cell in cells))
        for s, c, kind in self.absent:
            lines.append(f"note: {ISPRS_CLASSES[c]} not modelled ({kind}, trained on {s})")
        return "\n".join(lines)


def measure_realism(
    scenes: Iterable[tuple[str, np.ndarray, np.ndarray]],
    pixels: int = 20000,
    seed: int = 0,
    min_pixels: int = 50,
    ridge: float = 1e-3,
) -> RealismReport:
    """Cross-scene and within-scene accuracy of the colour-only Gaussian classifier.

    Args:
        scenes: (scene id, image (bands, H, W), mask (H, W) class indices) per scene; at least two.
            Consumed one at a time, so a generator keeps only the drawn pixels in memory.
        pixels: Pixels drawn per scene (see the module docstring).
        seed: Seed of the pixel draw.
        min_pixels: Fewest training pixels for a class to be modelled.
        ridge: Added to every covariance's diagonal.

    Returns:
        The report; ``report.cross`` and ``report.within_mean`` are the two figures.
    """
    drawn = [
        sample_scene(s, img, m, pixels, np.random.default_rng([seed, i]))
        for i, (s, img, m) in enumerate(scenes)
    ]
    n = len(drawn)
    if n < 2:
        raise ValueError(f"the measurement needs at least two scenes, got {n}")
    absent: list[tuple[str, int, str]] = []

    def fit(d: ScenePixels, x: np.ndarray, y: np.ndarray, kind: str) -> GaussianColourClassifier:
        clf = GaussianColourClassifier(CLASSES, min_pixels, ridge).fit(x, y)
        absent.extend((d.scene, c, kind) for c in clf.absent)
        return clf

    within = np.empty(n)
    for i, d in enumerate(drawn):
        half = len(d.labels) // 2
        clf = fit(d, d.values[:half], d.labels[:half], "within")
        within[i] = clf.accuracy(d.values[half:], d.labels[half:])
    models = [fit(d, d.values, d.labels, "cross") for d in drawn]
    cross = np.full((n, n), np.nan)
    hits = {c: [] for c in CLASSES}
    for i, j in itertools.permutations(range(n), 2):
        pred, y = models[i].predict(drawn[j].values), drawn[j].labels
        cross[i, j] = float(np.mean(pred == y))
        for c in CLASSES:
            if (y == c).any():
                hits[c].append(float(np.mean(pred[y == c] == c)))
    return RealismReport(
        scenes=[d.scene for d in drawn],
        cross_pairs=cross,
        within=within,
        class_recall={c: float(np.mean(v)) for c, v in hits.items() if v},
        class_means={d.scene: d.means for d in drawn},
        absent=absent,
        pixels=int(pixels),
        seed=int(seed),
    )


def read_potsdam_scenes(
    root: str | Path, scenes: Sequence[str], eroded: bool = False
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Read whole Potsdam scenes (RGBIR and labels) from a root in the Potsdam layout.

    Files are found by the :class:`glcnet.data.isprs.Potsdam` loader (archives or folders); every
    scene must be there. Labels are decoded strictly: an off-palette colour is an error naming the
    file; with ``eroded`` the black boundaries are ignored (they fall outside :data:`CLASSES`).

    Args:
        root: Data set root (real Potsdam or the sample set).
        scenes: Scene ids, e.g. ``["2_10", "2_11"]``.
        eroded: Read the eroded (no-boundary) labels.

    Yields:
        (scene id, image (4, H, W) uint8, mask (H, W) int64), one scene at a time.
    """
    from glcnet.data.isprs import Potsdam

    ds = Potsdam(root, bands="RGBIR", tile_size=16, eroded=eroded, scenes=list(scenes))
    for scene in ds.scenes:
        with open_raster(ds.image_path(scene)) as src:
            image = src.read(list(ds.band_indexes))
        with open_raster(ds.label_path(scene)) as src:
            raw = src.read([1, 2, 3])
        ignore = (BOUNDARY_COLOR,) if eroded else ()
        mask = decode_palette(
            raw, ISPRS_PALETTE, ignore_colors=ignore, source=ds.label_path(scene)
        ).astype(np.int64)
        yield scene, image, mask
