"""Shared fixtures: tiny sample data sets and config composition against the real configs/."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from glcnet.utils.config import CONFIG_DIR, register_resolvers

register_resolvers()
torch.set_num_threads(2)


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one torch thread is faster, and much faster on a loaded machine.

    Test modules of small inputs use it with ``pytestmark = pytest.mark.usefixtures(...)``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_sample_root(tmp_path_factory) -> Path:
    """The sample data set with 128 px scenes in the Potsdam layout (generated once per session)."""
    from glcnet.data.sample import generate_sample_dataset

    root = tmp_path_factory.mktemp("tiny_sample")
    generate_sample_dataset(root, seed=0, scene_size=128)
    return root


def compose_config(name: str, overrides: list[str]):
    """Compose ``configs/<name>.yaml`` with overrides (Hydra state cleared before and after)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name=name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def tiny_stage_overrides(root: Path, train: bool = True) -> list[str]:
    """Trainer (``train``) and data overrides that shrink any stage to seconds on the tiny sample set."""
    trainer = (
        ["trainer=cpu", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false"]
        if train
        else []
    )
    return [
        *trainer,
        f"data.root={root}",
        "data.sample_seed=null",
        "data.tile_size=64",
        "data.batch_size=4",
        "data.num_workers=0",
    ]


def tiny_overrides(root: Path, out: Path, train: bool = True) -> list[str]:
    """:func:`tiny_stage_overrides` with ResNet-18 and the run folder ``out``."""
    return [*tiny_stage_overrides(root, train), "model.encoder=resnet18", f"paths.output_dir={out}"]
