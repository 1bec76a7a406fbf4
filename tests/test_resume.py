"""Long runs survive being killed: step checkpoints, exact resume, signals, full disks.

Run A is uninterrupted (in this process). Run B is the real CLI, killed with SIGKILL as soon as its
first step checkpoint exists, then continued with ``ckpt_path=last`` (in this process). B's final
state must equal A's: same step count, same weights, same optimizer, queue and bank.
"""

from __future__ import annotations

import os
import resource
import signal
import sys

import pytest
import torch
from cli import error_line, run_many, run_script, start_script, tiny_args, wait_for
from conftest import compose_config

from glcnet.training.checkpoints import load_torch_file
from glcnet.training.finetune import run_finetune
from glcnet.training.pretrain import run_pretrain

STEPS, EVERY = 5, 2
#: Small and short: batches of 2 at 32 px, epochs of 3 batches (the resumed run crosses one).
SMALL = ["data.batch_size=2", "trainer.limit_train_batches=3"]
SMALL_VIEWS = [
    "augment.size=32",
    "augment.region_size=16",
    "augment.n_regions=2",
    "diagnostics_every=0",
]


def compose(stage: str, cli_args: list[str], out) -> object:
    """The in-process config of the same run the CLI gets with ``cli_args``."""
    return compose_config(stage, [*cli_args, f"paths.output_dir={out}"])


def state_of(run_dir) -> dict:
    return load_torch_file(run_dir / "checkpoints" / "last.ckpt")


def assert_same_state(a: dict, b: dict) -> float:
    """Equal step, weights/buffers and optimizer state; returns the largest weight difference."""
    assert a["global_step"] == b["global_step"] == STEPS
    assert a["state_dict"].keys() == b["state_dict"].keys()
    worst = 0.0
    for key, value in a["state_dict"].items():
        other = b["state_dict"][key]
        assert torch.allclose(value, other, rtol=1e-5, atol=1e-6, equal_nan=True), key
        if value.is_floating_point() and value.numel():
            worst = max(worst, float((value - other).nan_to_num(0).abs().max()))
    for sa, sb in zip(
        a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()
    ):
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(sa[name], sb[name], rtol=1e-5, atol=1e-6)
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"] == STEPS
    return worst


def kill_after_first_checkpoint(script: str, args: list[str], run_dir, tmp_path) -> int:
    """Start the CLI, SIGKILL it once ``last.ckpt`` exists; returns the step it holds."""
    env = {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = start_script(
        script, *args, f"hydra.run.dir={run_dir}", cwd=tmp_path, log=tmp_path / "b.log", env=env
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    try:
        wait_for(last.exists, proc, what="the first step checkpoint")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    step = state_of(run_dir)["global_step"]
    assert 0 < step < STEPS, step
    return step


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("glcnet", []),
        ("moco", ["method=moco", "method.queue_size=16"]),
        pytest.param(
            "npid",
            ["method=npid", "method.loss=nce", "method.nce_negatives=16"],
            marks=pytest.mark.slow,
        ),
    ],
)
def test_pretraining_killed_and_resumed_equals_uninterrupted(
    tiny_sample_root, tmp_path, method, extra
):
    args = [
        *tiny_args(tiny_sample_root),
        *SMALL,
        *SMALL_VIEWS,
        *extra,
        f"trainer.max_steps={STEPS}",
        f"checkpoint_every_n_steps={EVERY}",
    ]
    run_pretrain(compose("pretrain", args, tmp_path / "a"))
    step = kill_after_first_checkpoint("pretrain.py", args, tmp_path / "b", tmp_path)
    result = run_pretrain(compose("pretrain", [*args, "ckpt_path=last"], tmp_path / "b"))
    a, b = state_of(tmp_path / "a"), state_of(tmp_path / "b")
    worst = assert_same_state(a, b)
    print(f"{method}: killed at step {step}, resumed to {STEPS}; max |weight A - B| = {worst}")
    if method == "moco":  # the queue and the momentum encoder continue too
        assert torch.equal(a["state_dict"]["method.queue.ptr"], b["state_dict"]["method.queue.ptr"])
        assert int(b["state_dict"]["method.queue.ptr"]) == (STEPS * 2) % 16
    assert result["export"].exists()


@pytest.mark.parametrize(
    "augment", [pytest.param("flips", marks=pytest.mark.slow), "strong"]
)  # strong holds flips' ops and more: the default run
def test_finetuning_killed_and_resumed_equals_uninterrupted(tiny_sample_root, tmp_path, augment):
    """train_augment=strong too: every albumentations op (flips, turns, affine, brightness and
    contrast, blur, noise) draws from generators seeded per item, so a resumed run augments alike."""
    args = [
        *tiny_args(tiny_sample_root),
        "data.tile_size=32",
        "data.batch_size=2",
        "data.label_count=6",
        "samples_per_epoch=6",  # 3 steps per epoch, drawn with replacement
        f"train_augment={augment}",
        f"trainer.max_steps={STEPS}",
        f"checkpoint_every_n_steps={EVERY}",
    ]
    run_finetune(compose("finetune", args, tmp_path / "a"))
    kill_after_first_checkpoint("finetune.py", args, tmp_path / "b", tmp_path)
    run_finetune(compose("finetune", [*args, "ckpt_path=last"], tmp_path / "b"))
    assert_same_state(state_of(tmp_path / "a"), state_of(tmp_path / "b"))
    best_a = load_torch_file(tmp_path / "a" / "checkpoints" / "best.ckpt")
    best_b = load_torch_file(tmp_path / "b" / "checkpoints" / "best.ckpt")
    assert best_a["global_step"] == best_b["global_step"]


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, pytest.param(signal.SIGUSR1, marks=pytest.mark.slow)]
)
def test_signal_writes_a_checkpoint_then_stops(tiny_sample_root, tmp_path, signum):
    """SIGTERM (pre-emption) and SIGUSR1 (SLURM's warning) stop after the step, with last.ckpt;
    with a SLURM job id, SIGUSR1 requeues the job once the checkpoint is written."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls"
    fake = bin_dir / "scontrol"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    run_dir = tmp_path / "run"
    args = [
        *tiny_args(tiny_sample_root),
        *SMALL_VIEWS,
        "data.batch_size=2",
        "trainer.max_steps=200",
        "checkpoint_every_n_steps=2",
    ]
    proc = start_script(
        "pretrain.py",
        *args,
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
        log=tmp_path / "log",
        env=env,
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    try:
        wait_for(last.exists, proc, what="the first step checkpoint")  # training is under way
        proc.send_signal(signum)
        proc.wait(timeout=300)
    finally:
        proc.kill()
    log = (tmp_path / "log").read_text()
    assert proc.returncode == 128 + signum, log[-3000:]
    step = state_of(run_dir)["global_step"]
    assert 2 <= step < 200
    name = signal.Signals(signum).name
    assert f"stopped: {name} at step {step}; checkpoint written: {last}" in log
    assert "Traceback" not in log
    if signum == signal.SIGUSR1:
        assert calls.read_text().split() == ["requeue", "4242"]
    else:
        assert not calls.exists()


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**22, 2**22))  # 4 MiB: logs fit, checkpoints not


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE semantics")
def test_full_disk_at_save_is_one_line_and_keeps_the_earlier_checkpoint(tiny_sample_root, tmp_path):
    args = [*tiny_args(tiny_sample_root), *SMALL_VIEWS, "data.batch_size=2"]
    run = tmp_path / "run"
    run_pretrain(compose("pretrain", [*args, "trainer.max_steps=2"], run))
    last = run / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    # the continued run cannot write files larger than 4 MiB: every checkpoint write fails
    res = run_script(
        "pretrain.py",
        *args,
        "trainer.max_steps=4",
        "checkpoint_every_n_steps=3",
        "ckpt_path=last",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
        preexec_fn=_limit_file_size,
    )
    assert res.returncode == 2, res.stderr[-3000:]
    line = error_line(res)
    assert line.startswith(f"error: cannot write {last}: File too large; earlier files"), line
    assert last.read_bytes() == before  # the earlier checkpoint is intact
    assert state_of(run)["global_step"] == 2
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # no temporary left


def test_unwritable_output_folder_fails_before_any_work(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the run folder should go")
    wheres = [
        [f"paths.output_dir={blocker}/run", f"hydra.run.dir={tmp_path / 'hydra'}"],
        [f"hydra.run.dir={blocker}/run"],
    ]
    runs = [["data.root=/nonexistent/data", *where] for where in wheres]
    for res in run_many("pretrain.py", runs, cwd=tmp_path):
        assert res["code"] == 2, res["stderr"][-3000:]
        line = res["stderr"].strip().splitlines()[-1]  # the folder is checked first: no data error
        assert line.startswith(f"error: cannot write to the run folder {blocker}/run"), line
        assert "Traceback" not in res["stderr"]
