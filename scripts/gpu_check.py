"""One part of the GPU readiness check (scripts/gpu_check.sh runs all four in order).

python scripts/gpu_check.py step|loader|pretrain|protocol [--smoke] [--deadline UNIX_SECONDS]

Each part prints one summary line starting with 'gpu_check <part>:' and, when $OUT is set, writes
$OUT/gpu_check_<part>.json. Exit status 0 when the part ran, 1 when it failed or timed out;
'skipped' (the protocol_cpu experiment or its key is missing) exits 0. Data and run folders go under
$GLCNET_PROJECT_ROOT (gpu_check.sh points it to a scratch folder).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import CONFIG_DIR

from glcnet.utils.config import PROJECT_ROOT, register_resolvers

register_resolvers()
SCRIPTS = Path(__file__).resolve().parent
PRETRAIN_STEPS = 200
#: Overrides that shrink the sample data, the views and the batch to seconds (smoke mode).
SMOKE_DATA = [
    "data.sample_scene_size=128",
    "data.tile_size=64",
    "augment.size=64",
    "augment.region_size=16",
    "data.batch_size=4",
]


def workers() -> int:
    """All cores of the machine (the loader's and the pretraining's worker count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def report(part: str, line: str, record: dict) -> None:
    """Print the part's summary line and write its JSON into $OUT (when set)."""
    print(f"gpu_check {part}: {line}", flush=True)
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        path = Path(out) / f"gpu_check_{part}.json"
        path.write_text(json.dumps({"part": part, "summary": line, **record}, indent=1))


def compose(name: str, overrides: list[str]):
    """Compose one of the real configs (as the scripts do)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name=name, overrides=overrides)


def run_cli(args: list[str], timeout: float, log: Path) -> dict:
    """Run ``python scripts/<args>`` with its output in ``log``; kill its process group on timeout."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPTS / args[0]), *args[1:]],
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # DataLoader workers die with it on timeout
        )
        try:
            rc = proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    seconds = time.perf_counter() - t0
    if rc != 0:  # show what went wrong in the caller's output
        tail = log.read_text(errors="replace").splitlines()[-25:]
        print("\n".join(f"  | {line}" for line in tail), flush=True)
    return {
        "returncode": rc,
        "timed_out": rc is None,
        "seconds": round(seconds, 1),
        "log": str(log),
    }


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float, float]]:
    """(step, wall time, value) of one TensorBoard scalar of a run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows = []
    for events in sorted(run_dir.rglob("events.out.tfevents*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            rows += [(e.step, e.wall_time, e.value) for e in acc.Scalars(tag)]
    return sorted(rows)


def part_step(smoke: bool, deadline: float) -> bool:
    import torch

    from glcnet.bench.step_flops import bench_step_flops

    cuda = torch.cuda.is_available()
    kwargs = (
        {"encoder": "resnet18", "batch_size": 2, "tile_size": 64, "view_size": 64, "steps": 1}
        | {"warmup": 1, "matmul_size": 256}
        if smoke
        else {"encoder": "resnet50", "batch_size": int(os.environ.get("GPU_CHECK_BATCH", 128))}
    )
    peak = os.environ.get("GPU_PEAK_TFLOPS")  # override the datasheet table
    r = bench_step_flops(
        device="cuda" if cuda else "cpu",
        precision="bf16" if cuda else "32",
        peak_tflops=float(peak) if peak else None,
        **kwargs,
    )
    mfu = (
        f"MFU {r['mfu']:.1%} of the {r['peak_tflops']:.0f} TFLOP/s dense bf16 peak"
        if r["mfu"] is not None
        else "MFU n/a (no peak known for this device)"
    )
    line = (
        f"GLCNet step {r['encoder']}@{r['view_size']} px, {r['batch_pairs']} pairs, "
        f"{r['precision']} on {r['device']}: {r['images_per_s']:.1f} images/s "
        f"({r['images_per_s_cudnn_benchmark']:.1f} with cudnn.benchmark), "
        f"{r['flops_per_step'] / 1e12:.3g} TFLOP/step counted, {r['achieved_tflops']:.3g} TFLOP/s "
        f"achieved, {mfu}; matmul ceiling {r['matmul_tflops']:.3g} TFLOP/s"
    )
    report("step", line, {"status": "ok", **r})
    return True


def part_loader(smoke: bool, deadline: float) -> bool:
    from glcnet.bench.loader_rate import bench_loader

    n = 2 if smoke else workers()
    overrides = (
        [*SMOKE_DATA, f"data.num_workers={n}"]
        if smoke
        else ["data.stride=32", "data.batch_size=128", f"data.num_workers={n}"]
    )
    cfg = compose("pretrain", overrides)
    r = bench_loader(cfg, seconds=2.0 if smoke else 15.0, max_batches=3 if smoke else None)
    line = (
        f"{r['pairs_per_s']:.0f} pairs/s with {r['workers']} workers (batch {r['batch_size']}, "
        f"{r['tiles']} sample tiles read from GeoTIFF; first batch after {r['first_batch_s']:.1f} s)"
    )
    report("loader", line, {"status": "ok", "overrides": overrides, **r})
    return True


def part_pretrain(smoke: bool, deadline: float) -> bool:
    work = Path(os.environ.get("GLCNET_PROJECT_ROOT", PROJECT_ROOT))
    run_dir = work / "outputs" / "gpu_check_pretrain"
    steps = 2 if smoke else PRETRAIN_STEPS
    overrides = (
        [*SMOKE_DATA, "data.num_workers=0", "model.encoder=resnet18", "trainer=cpu"]
        + ["trainer.log_every_n_steps=1"]
        if smoke
        else ["model.encoder=resnet50", "data.stride=32", "data.batch_size=64"]
        + [f"data.num_workers={workers()}"]
    )
    overrides += [
        f"trainer.max_steps={steps}",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
    ]
    timeout = min(deadline - time.time(), 240)  # leave the rest to the protocol
    run = run_cli(["pretrain.py", *overrides], timeout, run_dir.parent / "pretrain.log")
    losses = scalars(run_dir, "train/loss") if run_dir.exists() else []
    rates = [v for _, _, v in scalars(run_dir, "train/pairs_per_s")] if losses else []
    record = {
        "status": "ok" if run["returncode"] == 0 else "failed",
        "command": "python scripts/pretrain.py " + " ".join(overrides),
        **run,
        "last_logged_step": losses[-1][0] if losses else None,
        "loss_first": losses[0][2] if losses else None,
        "loss_last": losses[-1][2] if losses else None,
        "pairs_per_s_median": statistics.median(rates) if rates else None,
    }
    if record["status"] == "ok":
        loss = (
            f"train/loss {record['loss_first']:.3f} -> {record['loss_last']:.3f}"
            if losses
            else "no train/loss logged"
        )
        rate = record["pairs_per_s_median"]
        line = (
            f"{steps}-step GLCNet pretraining through the CLI in {run['seconds']:.0f} s "
            f"(start-up included), median {rate or 0:.3g} pairs/s, {loss}"
        )
    else:
        line = f"FAILED ({'timed out' if run['timed_out'] else 'exit ' + str(run['returncode'])})"
    report("pretrain", line, record)
    return record["status"] == "ok"


def part_protocol(smoke: bool, deadline: float) -> bool:
    # configs/experiment/protocol_cpu.yaml and its protocol.pretrain_steps key come from the
    # `evidence` branch (issue 12 item 5); until they are merged this part reports 'skipped'.
    try:
        default = int(compose("protocol", ["experiment=protocol_cpu"]).protocol.pretrain_steps)
    except Exception as err:  # missing experiment file or key
        line = (
            f"skipped: experiment=protocol_cpu with protocol.pretrain_steps not available ({err})"
        )
        report("protocol", line.splitlines()[0], {"status": "skipped"})
        return True
    work = Path(os.environ.get("GLCNET_PROJECT_ROOT", PROJECT_ROOT))
    run_dir = work / "outputs" / "gpu_check_protocol"
    steps = 2 if smoke else 10 * default
    overrides = ["experiment=protocol_cpu", f"protocol.pretrain_steps={steps}"]
    if smoke:  # whole lists replaced: the tiny sample set, one fraction, one step per stage
        common = [*SMOKE_DATA[:2], "data.num_workers=0", "model.encoder=resnet18", "trainer=cpu"]
        overrides += [
            f"protocol.common_overrides=[{','.join(common)}]",
            "protocol.methods=[glcnet]",
            "protocol.label_fractions=[0.05]",
            "protocol.pretrain_overrides=[augment.size=64,augment.region_size=16,data.batch_size=4]",
            "protocol.finetune_overrides=[data.batch_size=4,samples_per_epoch=8,trainer.max_steps=1]",
            "protocol.evaluate_overrides=[batch_size=4]",
            "protocol.method_overrides={}",
        ]
    overrides.append(f"hydra.run.dir={run_dir}")
    run = run_cli(
        ["protocol.py", *overrides], deadline - time.time(), run_dir.parent / "protocol.log"
    )
    results = run_dir / "results.md"
    out = os.environ.get("OUT")
    if out and results.is_file():
        Path(out, "gpu_check_protocol_results.md").write_text(results.read_text())
    ok = run["returncode"] == 0
    record = {
        "status": "ok" if ok else "failed",
        "command": "python scripts/protocol.py " + " ".join(overrides),
        "pretrain_steps": steps,
        "pretrain_steps_default": default,
        **run,
        "results": str(results) if results.is_file() else None,
    }
    line = f"experiment=protocol_cpu at protocol.pretrain_steps={steps} (10x {default}) " + (
        f"in {run['seconds']:.0f} s; table {results}"
        if ok
        else f"FAILED ({'timed out' if run['timed_out'] else 'exit ' + str(run['returncode'])})"
        + " (protocol.resume=true with the same hydra.run.dir completes it)"
    )
    report("protocol", line, record)
    return ok


PARTS = {"step": part_step, "loader": part_loader, "pretrain": part_pretrain}
PARTS["protocol"] = part_protocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("part", choices=list(PARTS))
    parser.add_argument("--smoke", action="store_true", help="shrink the part to seconds on a CPU")
    parser.add_argument("--deadline", type=float, default=time.time() + 480, help="UNIX seconds")
    args = parser.parse_args()
    try:
        ok = PARTS[args.part](args.smoke, args.deadline)
    except Exception as err:  # report and go on with the next part
        report(
            args.part, f"FAILED: {type(err).__name__}: {err}".splitlines()[0], {"status": "failed"}
        )
        raise
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
