"""Benchmarks (`make bench`): loss time/memory vs. a plain formulation, pretraining-step overhead,
data pipeline vs. model throughput, the views' colour ops (ours vs albumentations'), streamed
prediction memory vs. scene size, cost of the pretraining health diagnostics. Ratios are measured
in one run; results go to bench_results/.

python scripts/bench.py [--quick] [--device cuda] [--sizes 256 1024 8192] [--predict-size 12000]
"""

from __future__ import annotations

import os

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # keep the CPU memory profiler quiet

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from glcnet.bench.diagnostics import bench_diagnostics
from glcnet.bench.losses import bench_contrastive_losses
from glcnet.bench.method_losses import bench_method_losses
from glcnet.bench.predict_memory import bench_predict_memory
from glcnet.bench.pretrain_step import bench_pretrain_step
from glcnet.bench.view_ops import bench_view_ops, format_view_ops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "bench_results"))
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--batch", type=int, default=8, help="pairs per pretraining step")
    parser.add_argument("--predict-size", type=int, default=12000, help="side of the (c) scene")
    parser.add_argument("--diagnostics-every", type=int, default=50, help="as diagnostics_every")
    args = parser.parse_args()
    if args.quick:
        args.sizes = [256, 1024]
        args.predict_size = 2000
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(
        f"glcnet benchmarks on {args.device} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads), {stamp}\n"
    )

    print("(a) contrastive loss, forward+backward, d=128")
    loss_rows = bench_contrastive_losses(sizes=args.sizes, dim=128, device=args.device)
    print(f"{'N':>6} {'variant':<18} {'ms':>9} {'peak MB':>9} {'time/plain':>10} {'mem/plain':>9}")
    for r in loss_rows:
        print(
            f"{r['N']:>6} {r['variant']:<18} {r['ms']:>9.2f} {r['peak_MB']:>9.1f} "
            f"{r['ms_vs_plain']:>10.2f} {r['mem_vs_plain']:>9.2f}"
        )

    print("\n(a') every method's loss (forward+backward, incl. bank/queue write), d=128")
    method_rows = bench_method_losses(sizes=args.sizes, dim=128, device=args.device)
    print(f"{'N':>6} {'method':<18} {'ms':>9} {'peak MB':>9}")
    for r in method_rows:
        print(f"{r['N']:>6} {r['method']:<18} {r['ms']:>9.2f} {r['peak_MB']:>9.1f}")

    print("\n(b) pretraining step (GLCNet vs. two plain forward+backward passes, same batch)")
    view = 112 if args.quick else 224
    tile = 128 if args.quick else 256
    step = bench_pretrain_step(
        encoder=args.encoder,
        batch_size=args.batch,
        tile_size=tile,
        view_size=view,
        device=args.device,
        precision="bf16" if args.device == "cuda" else "32",
    )
    for key, value in step.items():
        print(f"  {key:<32} {value:.4g}" if isinstance(value, float) else f"  {key:<32} {value}")
    print(
        f"\nSSL overhead ratio (target <= 1.15): {step['ssl_overhead']:.3f} with both views in one "
        f"2B batch, {step['ssl_overhead_two_passes']:.3f} with two passes of B (concat_views=false)"
    )
    print(f"loader pairs/s / model pairs/s (must be > 1): {step['loader_vs_model']:.2f}")

    print(f"\n(c) view colour ops, one core, {view} px views of 4 bands: ours vs albumentations'")
    view_ops = bench_view_ops(size=view, tile_size=tile, calls=10 if args.quick else 50)
    print(format_view_ops(view_ops))
    n = args.predict_size
    print(f"\n(d) streamed prediction, 4-band uint8 scenes up to {n} px (trivial model, 1 thread)")
    shapes = [(n, n), (n // 4, n), (n, n // 4)]  # square, a quarter of the height, of the width
    pred = [bench_predict_memory(size=w, height=h) for h, w in shapes]
    print(f"{'H x W':>13} {'scene MB':>9} {'accum. MB':>9} {'peak MB':>8} {'added MB':>8} "
          f"{'added/scene':>11} {'added/accum.':>12} {'extra win.':>10} {'s':>5}")  # fmt: skip
    for r in pred:
        print(
            f"{r['height']:>6} x {r['size']:<6} {r['scene_MB']:>9.0f} "
            f"{r['whole_scene_accumulator_MB']:>9.0f} {r['peak_rss_MB']:>8.0f} {r['added_MB']:>8.0f} "
            f"{r['added_vs_scene']:>11.2f} {r['added_vs_accumulator']:>12.3f} "
            f"{r['extra_windows_pct']:>9.1f}% {r['seconds']:>5.0f}"
        )
    print("\n(e) pretraining health diagnostics (embedding statistics + k-NN probe on 8 tiles)")
    diag = bench_diagnostics(
        encoder=args.encoder,
        batch_size=8 if args.quick else 32,
        view_size=112,
        tile_size=128,
        every=args.diagnostics_every,
        device=args.device,
    )
    for key, value in diag.items():
        print(f"  {key:<32} {value:.4g}" if isinstance(value, float) else f"  {key:<32} {value}")
    print(
        f"diagnostics overhead at diagnostics_every={diag['every']} (target < 0.05): "
        f"{diag['overhead']:.4f}"
    )
    result = {
        "when": stamp,
        "device": args.device,
        "losses": loss_rows,
        "method_losses": method_rows,
        "pretrain_step": step,
        "view_ops": view_ops,
        "predict_memory": pred,
        "diagnostics": diag,
    }
    (out / f"bench_{args.device}.json").write_text(json.dumps(result, indent=1))
    print(f"\nwritten: {out / f'bench_{args.device}.json'}")


if __name__ == "__main__":
    main()
