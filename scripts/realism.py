"""Colour-only realism of a data set in the Potsdam layout: does pixel colour transfer across scenes?

Definitions: glcnet/data/realism.py.

python scripts/realism.py                       # the sample set (seed 0, 512 px), first 10 scenes
python scripts/realism.py --root data/potsdam --scenes 2_10 2_11 3_10  # real tiles
python scripts/realism.py --sample-seed 3 --n-scenes 6 --pixels 5000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import report_data_errors

from glcnet.data.realism import measure_realism, read_potsdam_scenes
from glcnet.data.sample import SCENES, ensure_sample_dataset

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "data" / "sample"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="data set in the Potsdam layout (default: the sample set of --sample-seed and "
        f"--sample-size, generated when missing at {DEFAULT_ROOT}, or at "
        "data/sample_seed<S>_<N>px for another seed or size)",
    )
    parser.add_argument("--sample-seed", type=int, default=0, help="sample set's seed (no --root)")
    parser.add_argument(
        "--sample-size", type=int, default=512, help="sample scene side (no --root)"
    )
    parser.add_argument("--scenes", nargs="+", default=None, help="scene ids (default: first N)")
    parser.add_argument("--n-scenes", type=int, default=10, help="N: the first N official scenes")
    parser.add_argument("--pixels", type=int, default=20000, help="pixels drawn per scene")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pixel draw")
    parser.add_argument("--eroded", action="store_true", help="use the eroded labels")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    if args.scenes is None and not 2 <= args.n_scenes <= len(SCENES):
        parser.error(f"--n-scenes must be between 2 and {len(SCENES)}, got {args.n_scenes}")
    if args.pixels < 4:
        parser.error(f"--pixels must be at least 4, got {args.pixels}")
    return args


def run(args: argparse.Namespace) -> dict:
    root = args.root
    if root is None:
        default = (args.sample_seed, args.sample_size) == (0, 512)
        name = "sample" if default else f"sample_seed{args.sample_seed}_{args.sample_size}px"
        root = ensure_sample_dataset(
            DEFAULT_ROOT.with_name(name), seed=args.sample_seed, scene_size=args.sample_size
        )
    scenes = args.scenes or list(SCENES[: args.n_scenes])
    t0 = time.perf_counter()
    report = measure_realism(
        read_potsdam_scenes(root, scenes, eroded=args.eroded), pixels=args.pixels, seed=args.seed
    )
    labels = "eroded labels" if args.eroded else "full labels"
    print(
        f"colour-only Gaussian classifier on {root}: {len(scenes)} scenes, {args.pixels} px each "
        f"(seed {args.seed}), {labels}, {time.perf_counter() - t0:.1f} s"
    )
    print(report.format())
    out = {"root": str(root), "eroded": args.eroded, **report.to_dict()}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    report_data_errors(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
