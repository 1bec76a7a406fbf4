"""Every option of every config group composes and instantiates; the real CLI runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from conftest import compose_config, tiny_overrides
from omegaconf import OmegaConf

from glcnet.training.checkpoints import load_torch_file
from glcnet.utils.config import CONFIG_DIR, PROJECT_ROOT, band_count, instantiate


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def test_every_group_has_options():
    for group in (
        "data",
        "model",
        "method",
        "loss",
        "augment",
        "trainer",
        "optimizer",
        "experiment",
    ):
        assert options(group), f"configs/{group}/ is empty"


@pytest.mark.parametrize("name", ["pretrain", "finetune", "evaluate", "protocol"])
def test_entry_configs_compose(name, tmp_path):
    extra = ["checkpoint=x.ckpt"] if name == "evaluate" else []
    cfg = compose_config(name, [f"paths.output_dir={tmp_path}", *extra])
    OmegaConf.resolve(cfg)
    assert cfg.paths.output_dir == str(tmp_path)


@pytest.mark.parametrize("data", ["sample", "potsdam", "vaihingen"])
def test_data_options_instantiate(data, tmp_path):
    cfg = compose_config("pretrain", [f"data={data}", f"paths.output_dir={tmp_path}"])
    tile_data = instantiate(cfg.data)
    assert tile_data.tile_size == cfg.data.tile_size
    assert cfg.model.in_channels == band_count(cfg.data.bands)


def test_folder_data_requires_root(tmp_path):
    cfg = compose_config("pretrain", ["data=folder", f"paths.output_dir={tmp_path}"])
    with pytest.raises(Exception, match="root"):
        instantiate(cfg.data)


@pytest.mark.parametrize("method", options("method"))
def test_method_options_instantiate_and_run(method, tmp_path):
    cfg = compose_config(
        "pretrain", [f"method={method}", "model.encoder=resnet18", f"paths.output_dir={tmp_path}"]
    )
    cls = hydra.utils.get_class(cfg.method._target_)
    extra = {"num_samples": 10} if cls.requires_num_samples else {}
    m = instantiate(cfg.method, **extra)
    views = instantiate(cfg.augment, size=64, region_size=16)
    rng = np.random.default_rng(0)
    items = []
    for i in range(3):
        item = views(torch.rand(4, 80, 80), rng)
        item["index"] = torch.tensor(i)
        if cls.requires_labels:
            item["mask"] = torch.from_numpy(rng.integers(0, 6, (80, 80)))
        items.append(item)
    batch = torch.utils.data.default_collate(items)
    out = m(batch)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()


def test_swav_trains_on_multicrop_batches_from_the_loader(tiny_sample_root, tmp_path):
    from glcnet.training.pretrain import run_pretrain

    cfg = compose_config(
        "pretrain",
        [
            *tiny_overrides(tiny_sample_root, tmp_path),
            "method=swav",
            "augment=multicrop",
            "augment.size=64",
            "augment.small_size=32",
            "augment.small_crops=2",
            "trainer.max_steps=2",
        ],
    )
    seen = []
    swav_cls = hydra.utils.get_class(cfg.method._target_)
    original = swav_cls.forward

    def spy(self, batch):
        seen.append(tuple(batch["crops"].shape))
        return original(self, batch)

    swav_cls.forward = spy
    try:
        result = run_pretrain(cfg)
    finally:
        swav_cls.forward = original
    assert seen and all(shape == (4, 2, 4, 32, 32) for shape in seen)
    assert result["export"].exists()


@pytest.mark.parametrize("augment", options("augment"))
def test_augment_options_instantiate(augment, tmp_path):
    cfg = compose_config("pretrain", [f"augment={augment}", f"paths.output_dir={tmp_path}"])
    views = instantiate(cfg.augment)
    pair = views(torch.rand(4, 256, 256), np.random.default_rng(0))
    assert pair["view_a"].shape == pair["view_b"].shape


@pytest.mark.parametrize("loss", options("loss"))
def test_loss_options_instantiate(loss, tmp_path):
    cfg = compose_config("finetune", [f"loss={loss}", f"paths.output_dir={tmp_path}"])
    fn = instantiate(cfg.loss)
    classes = 2 if loss == "bce" else 6
    logits = torch.randn(2, classes, 8, 8, requires_grad=True)
    target = torch.randint(0, classes, (2, 8, 8))
    value = fn(logits, target)
    assert torch.isfinite(value)


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_optimizer_options(optimizer, tmp_path):
    cfg = compose_config("pretrain", [f"optimizer={optimizer}", f"paths.output_dir={tmp_path}"])
    opt = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(3))])
    assert isinstance(opt, torch.optim.Optimizer)


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_options_compose(trainer, tmp_path):
    cfg = compose_config("pretrain", [f"trainer={trainer}", f"paths.output_dir={tmp_path}"])
    assert cfg.trainer._target_ == "lightning.Trainer"


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_options_compose(experiment, tmp_path):
    first = (CONFIG_DIR / "experiment" / f"{experiment}.yaml").read_text().splitlines()[0]
    assert first.strip() == "# @package _global_"
    name = (
        "protocol"
        if "protocol:" in (CONFIG_DIR / "experiment" / f"{experiment}.yaml").read_text()
        else "pretrain"
    )
    cfg = compose_config(name, [f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    OmegaConf.resolve(cfg)


def _script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "scripts" / args[0]), *args[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "script",
    [
        "pretrain.py",
        "finetune.py",
        # every README command of these two is composed by test_readme_commands.py
        pytest.param("evaluate.py", marks=pytest.mark.slow),
        pytest.param("protocol.py", marks=pytest.mark.slow),
    ],
)
def test_cli_help_and_cfg_job(script, tmp_path):
    res = _script(script, "--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Configuration groups" in res.stdout or "== Config ==" in res.stdout
    extra = ["checkpoint=x.ckpt"] if script == "evaluate.py" else []
    res = _script(script, "--cfg", "job", "seed=7", *extra, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    cfg = OmegaConf.create(res.stdout)
    assert cfg.seed == 7


def test_cli_overrides_are_applied_not_overwritten(tmp_path):
    res = _script(
        "pretrain.py",
        "--cfg",
        "job",
        "data=vaihingen",
        "trainer.max_epochs=50",
        "model.encoder=resnet50",
        "data.tile_size=512",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    cfg = OmegaConf.create(res.stdout)
    assert cfg.trainer.max_epochs == 50
    assert cfg.model.encoder == "resnet50"
    assert cfg.data.tile_size == 512
    assert cfg.data.bands == "IRRG"


def test_cli_pretrain_runs_and_writes_checkpoint_and_events(tiny_sample_root, tmp_path):
    res = _script(
        "pretrain.py",
        f"data.root={tiny_sample_root}",
        "data.sample_seed=null",
        "data.tile_size=64",
        "data.batch_size=4",
        "data.num_workers=0",
        "augment.size=64",
        "augment.region_size=16",
        "trainer=cpu",
        "trainer.max_steps=2",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "run"
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["last.ckpt"]  # one checkpoint, written atomically (no link, no copy)
    assert (run / "pretrained.safetensors").exists()
    assert any((run / "tensorboard").rglob("events.out.tfevents*"))
    assert (run / ".hydra" / "config.yaml").exists()
    assert "pretrained weights:" in res.stdout


def test_cli_ddp_on_two_cpu_processes_shares_the_queue(tiny_sample_root, tmp_path):
    """Lightning DDP (2 gloo processes) through Hydra: the MoCo queue receives every rank's keys."""
    steps, per_rank, world, queue = 3, 4, 2, 20  # 24 keys into 20 slots: not a multiple
    res = _script(
        "pretrain.py",
        "method=moco",
        f"method.queue_size={queue}",
        f"data.root={tiny_sample_root}",
        "data.sample_seed=null",
        "data.tile_size=64",
        f"data.batch_size={per_rank}",
        "data.num_workers=0",
        "augment.size=64",
        "augment.region_size=16",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        f"trainer.devices={world}",
        f"trainer.max_steps={steps}",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("pretrained weights:") == 1  # printed by rank 0 only
    assert "sync_batchnorm needs GPUs" in res.stdout + res.stderr
    state = load_torch_file(tmp_path / "run" / "checkpoints" / "last.ckpt")["state_dict"]
    assert int(state["method.queue.ptr"]) == (steps * per_rank * world) % queue
    assert torch.isfinite(state["method.queue.keys"]).all()


def test_cli_reports_input_errors_in_one_line(tiny_sample_root, tmp_path):
    res = _script(
        "finetune.py",
        f"data.root={tiny_sample_root}",
        "data.sample_seed=null",
        "data.tile_size=64",
        "data.label_fraction=0.001",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
    )
    assert res.returncode == 2
    assert (
        res.stderr.strip().splitlines()[-1].startswith("error: data.label_fraction=0.001 selects")
    )
    assert "Traceback" not in res.stderr
    res = _script("pretrain.py", "data=potsdam", f"data.root={tmp_path / 'nope'}", cwd=tmp_path)
    assert res.returncode == 2 and "root folder not found" in res.stderr
