"""Benchmark of the pretraining views' colour ops: ours (glcnet.data.transforms) vs albumentations'.

For colour jitter, grayscale, Gaussian blur and noise, each implementation transforms the same
(C, S, S) float32 view in [0, 1] with the views' default parameters: ours in the package's (C, H, W)
layout, albumentations' in its native (H, W, C) layout (the conversion is timed separately, as
``layout_roundtrip``; a pipeline switching an op to albumentations pays it once per view). Ops
albumentations defines for RGB only (colour jitter, grayscale) run through
:class:`glcnet.data.seg_augment.RGBOnly`, so the IR band stays as it is, as ours leaves it.

Then the whole pair pipeline (:class:`glcnet.data.views.PairedViews`, the default GLCNet views) runs
with our colour ops and with albumentations' (:class:`AlbumentationsColourViews`), in pairs/s on one
core. Rounds of the two implementations alternate and the best round of each is kept, so that load
from other processes on a shared machine affects both alike.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import albumentations as A
import cv2
import numpy as np

from glcnet.data.seg_augment import RGBOnly
from glcnet.data.transforms import add_noise, color_jitter, gaussian_blur, to_grayscale
from glcnet.data.views import PairedViews

__all__ = ["AlbumentationsColourViews", "bench_view_ops"]


def _seeded(transform: A.BasicTransform | A.BaseCompose, seed: int):
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return transform


class AlbumentationsColourViews(PairedViews):
    """:class:`PairedViews` with view b's colour ops taken from albumentations (benchmark only).

    Same probabilities and strengths as the parent; colour jitter and grayscale act on the first
    three bands (albumentations refuses other band counts for them), blur and noise on every band.
    The view is converted to (H, W, C) and back once. Differences in semantics from ours are listed
    in :mod:`glcnet.data.transforms`.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        j = self.jitter
        self.colour = A.Compose(
            [
                RGBOnly(
                    A.ColorJitter(
                        brightness=j["brightness"],
                        contrast=j["contrast"],
                        saturation=j["saturation"],
                        hue=j["hue"],
                        p=self.color_p,
                    )
                ),
                RGBOnly(A.ToGray(p=self.grayscale_p)),
                A.GaussianBlur(
                    blur_limit=(min(self.blur_kernels), max(self.blur_kernels)),
                    sigma_limit=self.blur_sigma,
                    p=self.blur_p,
                ),
                A.GaussNoise(std_range=(self.noise_std, self.noise_std), p=self.noise_p),
            ],
            p=1.0,
        )

    def _photometric(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        _seeded(self.colour, int(rng.integers(0, 2**62)))
        hwc = np.ascontiguousarray(x.transpose(1, 2, 0))
        return np.ascontiguousarray(self.colour(image=hwc)["image"].transpose(2, 0, 1))


def _best_rate(fns: dict[str, Callable[[], None]], calls: int, rounds: int) -> dict[str, float]:
    """Calls per second of each function: best of ``rounds`` alternating rounds of ``calls`` calls."""
    best = dict.fromkeys(fns, 0.0)
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = max(best[name], calls / max(time.perf_counter() - t0, 1e-9))
    return best


def bench_view_ops(
    size: int = 224,
    tile_size: int = 256,
    bands: int = 4,
    calls: int = 50,
    pairs: int = 32,
    rounds: int = 3,
    seed: int = 0,
) -> dict:
    """Views per second of each colour op, ours vs albumentations', and pairs/s of both pipelines.

    Args:
        size: View side.
        tile_size: Source tile side (pipeline measurement).
        bands: Bands per view (4: RGBIR).
        calls: Op calls per round.
        pairs: Pairs per round of the pipeline measurement.
        rounds: Alternating rounds (the best of each implementation is kept).
        seed: Seed of the inputs and of both implementations' randomness.

    Returns:
        ``ops``: one row per op with ``ours_per_s``, ``albumentations_per_s`` and their ratio
        ``albumentations_vs_ours`` (views/s, one core, layout conversion excluded);
        ``layout_roundtrip_per_s``: (C, H, W) -> (H, W, C) -> (C, H, W) copies per second;
        ``pipeline``: ``ours_pairs_per_s`` (the views as shipped), ``albumentations_pairs_per_s``
        and their ratio.
    """
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # one core, as in one loader worker
    try:
        return _bench(size, tile_size, bands, calls, pairs, rounds, seed)
    finally:
        cv2.setNumThreads(threads)


def _bench(
    size: int, tile_size: int, bands: int, calls: int, pairs: int, rounds: int, seed: int
) -> dict:
    rng = np.random.default_rng(seed)
    chw = rng.random((bands, size, size), dtype=np.float32)
    hwc = np.ascontiguousarray(chw.transpose(1, 2, 0))
    views = PairedViews(size=size)
    j, blur_kernels, sigma = views.jitter, views.blur_kernels, views.blur_sigma
    ours_rng = np.random.default_rng(seed)

    def ours_blur() -> None:
        k = blur_kernels[int(ours_rng.integers(len(blur_kernels)))]
        gaussian_blur(chw, k, ours_rng.uniform(*sigma))

    candidates = {
        "color_jitter": (
            lambda: color_jitter(chw, ours_rng, **j),
            RGBOnly(A.ColorJitter(j["brightness"], j["contrast"], j["saturation"], j["hue"], p=1)),
        ),
        "grayscale": (lambda: to_grayscale(chw), RGBOnly(A.ToGray(p=1))),
        "gaussian_blur": (
            ours_blur,
            A.GaussianBlur(
                blur_limit=(min(blur_kernels), max(blur_kernels)), sigma_limit=sigma, p=1
            ),
        ),
        "noise": (
            lambda: add_noise(chw, views.noise_std, ours_rng),
            A.GaussNoise(std_range=(views.noise_std, views.noise_std), p=1),
        ),
    }
    rows = []
    for op, (ours, theirs) in candidates.items():
        _seeded(theirs, seed)
        rate = _best_rate(
            {"ours": ours, "albumentations": lambda t=theirs: t(image=hwc)}, calls, rounds
        )
        rows.append(
            {
                "op": op,
                "ours_per_s": rate["ours"],
                "albumentations_per_s": rate["albumentations"],
                "albumentations_vs_ours": rate["albumentations"] / rate["ours"],
            }
        )
    roundtrip = _best_rate(
        {
            "copy": lambda: np.ascontiguousarray(
                np.ascontiguousarray(chw.transpose(1, 2, 0)).transpose(2, 0, 1)
            )
        },
        calls,
        rounds,
    )["copy"]

    tiles = rng.random((pairs, bands, tile_size, tile_size), dtype=np.float32)
    shipped, alternative = PairedViews(size=size), AlbumentationsColourViews(size=size)

    def pipeline(v: PairedViews) -> Callable[[], None]:
        pair_rng = np.random.default_rng(seed)
        counter = iter(range(10**12))
        return lambda: v(tiles[next(counter) % pairs], pair_rng)

    rate = _best_rate(
        {"ours": pipeline(shipped), "albumentations": pipeline(alternative)}, pairs, rounds
    )
    return {
        "view_size": size,
        "bands": bands,
        "ops": rows,
        "layout_roundtrip_per_s": roundtrip,
        "pipeline": {
            "ours_pairs_per_s": rate["ours"],
            "albumentations_pairs_per_s": rate["albumentations"],
            "albumentations_vs_ours": rate["albumentations"] / rate["ours"],
        },
    }


def format_view_ops(result: dict) -> str:
    """The :func:`bench_view_ops` result as the table ``make bench`` prints."""
    lines = [f"{'op':<14} {'ours /s':>9} {'albumentations /s':>18} {'ratio':>6}"]
    for r in result["ops"]:
        lines.append(
            f"{r['op']:<14} {r['ours_per_s']:>9.0f} {r['albumentations_per_s']:>18.0f} "
            f"{r['albumentations_vs_ours']:>6.2f}"
        )
    p = result["pipeline"]
    lines += [
        f"(C,H,W) -> (H,W,C) -> (C,H,W) copies: {result['layout_roundtrip_per_s']:.0f} /s",
        f"view pipeline pairs/s, one core: ours (shipped) {p['ours_pairs_per_s']:.1f}, with "
        f"albumentations' colour ops {p['albumentations_pairs_per_s']:.1f} "
        f"(ratio {p['albumentations_vs_ours']:.2f})",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_view_ops(bench_view_ops()))
