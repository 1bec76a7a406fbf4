"""The look of one synthetic sample scene: season, materials, sunlight, sensor and haze.

Real aerial scenes of one city differ more from each other in colour than the classes do within a
scene. Two real Potsdam tiles hold impervious surfaces at mean (R, G, B, IR) (85, 101, 101, 80) and
(186, 195, 195, 167); low vegetation at about (70, 78, 66, 88-110) and trees at
(80-92, 80-100, 71-94, 113), so the near-infrared contrast between grass and trees is small. A
:class:`SceneLook` is drawn once per scene and makes the sample set vary along the same axes:

* season: green or dry grass (mixed in patches over each lawn), leafy, autumn-coloured or bare
  trees;
* materials: dark new or pale old asphalt, grey or reddish paving;
* sunlight: sun elevation (shadow length), how dark shadows are (the share of diffuse sky light) and
  their blue tint;
* sensor: exposure, per-band gain (colour balance, a separately calibrated IR band);
* haze: a share of bright, bluish path radiance added to every pixel.

Colours here are at exposure 1, before the sensor; :meth:`SceneLook.expose` applies the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Material colours (R, G, B, IR) at exposure 1; a scene mixes between the two ends of each pair.
# fmt: off
GRASS_GREEN, GRASS_DRY = (72, 88, 60, 124), (116, 110, 82, 126)
TREE_LEAFY, TREE_BARE = (76, 92, 68, 166), (106, 98, 86, 134)
ASPHALT_DARK, ASPHALT_PALE = (56, 58, 62, 50), (146, 146, 142, 128)
PAVING_GREY, PAVING_RED = (150, 148, 142, 132), (158, 118, 102, 124)
AIRLIGHT = (205, 212, 228, 180)  # colour of the haze (path radiance)
# fmt: on


def _mix(a, b, t: float) -> np.ndarray:
    return (1 - t) * np.asarray(a, float) + t * np.asarray(b, float)


@dataclass(frozen=True)
class SceneLook:
    """Appearance parameters of one scene (see the module docstring).

    Attributes:
        season: 0 = lush (green grass, leafy trees) .. 1 = dry grass, bare or autumn trees.
        asphalt: The scene's road asphalt colour, (4,).
        paving: The scene's sidewalk and path paving colour, (4,).
        shadow_length: Length of building shadows in px (low sun: long shadows).
        shadow: Factor on each band in shadow, (4,) (diffuse sky light, bluish).
        exposure: Overall brightness factor of the sensor.
        gain: Per-band gain, (4,) (colour balance; IR calibrated separately).
        haze: Share of path radiance mixed into every pixel, in [0, 1).
    """

    season: float
    asphalt: np.ndarray
    paving: np.ndarray
    shadow_length: float
    shadow: np.ndarray
    exposure: float
    gain: np.ndarray
    haze: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> SceneLook:
        """Draw a scene's look from ``rng``."""
        season = float(rng.beta(0.9, 0.9))
        asphalt = _mix(ASPHALT_DARK, ASPHALT_PALE, float(rng.uniform(0, 1)))
        paving = _mix(PAVING_GREY, PAVING_RED, float(rng.uniform(0, 1) ** 2))
        elevation = rng.uniform(25, 65)  # degrees; shadows of ~9 px at 45 degrees
        diffuse = rng.uniform(0.3, 0.6)
        tint = np.array([0.92, 0.98, 1.1, 1.0]) * (1 + rng.normal(0, 0.04, 4))
        exposure = float(math.exp(rng.uniform(math.log(0.62), math.log(1.58))))
        balance = rng.normal(0, 0.03)  # warm (red up, blue down) or cool light
        gain = np.array([1 + balance, 1.0, 1 - balance, 1.0]) * (1 + rng.normal(0, 0.02, 4))
        gain[3] *= math.exp(rng.normal(0, 0.07))  # the IR band's own calibration
        return cls(
            season=season,
            asphalt=asphalt,
            paving=paving,
            shadow_length=float(9 / math.tan(math.radians(elevation))),
            shadow=np.clip(diffuse * tint, 0.2, 0.8).astype(np.float32),
            exposure=exposure,
            gain=gain.astype(np.float32),
            haze=float(rng.uniform(0, 0.1)),
        )

    def lot_asphalt(self, rng: np.random.Generator) -> np.ndarray:
        """Asphalt of a parking lot: any age, independent of the roads', (4,)."""
        return _mix(ASPHALT_DARK, ASPHALT_PALE, float(rng.uniform(0, 1)))

    def tree(self, rng: np.random.Generator) -> np.ndarray:
        """Colour of one tree: the scene's season, give or take each tree's own, (4,)."""
        return _mix(TREE_LEAFY, TREE_BARE, float(np.clip(self.season + rng.normal(0, 0.25), 0, 1)))

    def dryness(self, patches: np.ndarray) -> np.ndarray:
        """Dryness of the grass from smooth unit noise ``patches`` (H, W): (H, W) in [0, 1]."""
        return np.clip(np.float32(self.season) + np.float32(0.35) * patches, 0, 1)

    def grass_factor(self, dryness: np.ndarray) -> np.ndarray:
        """Per-band factor turning green grass into grass of the given dryness (H, W): (H, W, 4).

        Dryness 0 gives factor 1 (pixels that are no grass pass 0).
        """
        ratio = np.asarray(GRASS_DRY, np.float32) / np.asarray(GRASS_GREEN, np.float32)
        return 1 + dryness.astype(np.float32)[..., None] * (ratio - 1)

    def expose(self, radiance: np.ndarray, light: np.ndarray) -> np.ndarray:
        """Sensor values before blur and noise: exposure, band gains, haze.

        Args:
            radiance: Scene colours at exposure 1, (H, W, 4) float32.
            light: Smooth illumination factor over the scene, (H, W) float32.

        Returns:
            (H, W, 4) float32.
        """
        scale = (self.exposure * self.gain).astype(np.float32)
        haze = np.float32(self.haze) * np.asarray(AIRLIGHT, np.float32) * scale
        return (radiance * light[..., None]) * (scale * np.float32(1 - self.haze)) + haze
