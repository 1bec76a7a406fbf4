"""Fine-tuning augmentation (configs/train_augment/): albumentations pipelines on (image, mask) tiles."""

from __future__ import annotations

from collections import Counter

import albumentations as A
import numpy as np
import pytest
import torch
from cli import run_script
from conftest import compose_config, tiny_overrides
from torch.utils.data import DataLoader, Dataset

from glcnet.data.seg_augment import (
    AugmentConfigError,
    AugmentedTiles,
    RGBOnly,
    TileAugment,
    build_augment,
)
from glcnet.utils.config import CONFIG_DIR

OPTIONS = sorted(p.stem for p in (CONFIG_DIR / "train_augment").glob("*.yaml"))


def augment_of(option: str, *extra: str) -> TileAugment:
    return build_augment(
        compose_config("finetune", [f"train_augment={option}", *extra]).train_augment
    )


class SameTile(Dataset):
    """``count`` copies of one labeled tile (so differences between items come from augmentation)."""

    def __init__(self, count: int = 8, bands: int = 4, size: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.image = torch.rand(bands, size, size, generator=g)
        self.mask = torch.randint(0, 6, (size, size), generator=g)
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        return {"image": self.image.clone(), "mask": self.mask.clone()}


def test_options_are_flips_strong_none_and_flips_is_the_default():
    assert OPTIONS == ["flips", "none", "strong"]
    cfg = compose_config("finetune", [])
    assert [t._target_ for t in cfg.train_augment.transforms] == [
        "albumentations.HorizontalFlip",
        "albumentations.VerticalFlip",
        "albumentations.RandomRotate90",
    ]


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("bands", [1, 3, 4, 7])
def test_every_option_runs_on_any_band_count(option, bands):
    aug = augment_of(option, f"data.bands=[{','.join(str(b + 1) for b in range(bands))}]")
    tile = SameTile(bands=bands)
    torch.manual_seed(0)
    for _ in range(4):
        image, mask = aug(tile.image, tile.mask)
        assert image.shape == tile.image.shape and image.dtype == torch.float32
        assert mask.shape == tile.mask.shape and mask.dtype == torch.int64
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0


def _dihedral_probabilities_of_flip_rotate(flip_p: float = 0.5, rotate_p: float = 0.5) -> dict:
    """The former FlipRotate's law over the 8 tile symmetries, by enumerating its draws."""
    probe = np.arange(9).reshape(3, 3)
    law: Counter = Counter()
    for h in (0, 1):
        for v in (0, 1):
            for k in range(4):
                p_k = (1 - rotate_p) if k == 0 else rotate_p / 3
                p = (flip_p if h else 1 - flip_p) * (flip_p if v else 1 - flip_p) * p_k
                x = probe[:, ::-1] if h else probe
                x = x[::-1] if v else x
                law[tuple(np.rot90(x, k).ravel())] += p
    return law


def test_flips_has_the_probabilities_of_the_former_flip_rotate():
    aug = augment_of("flips")
    probe = torch.arange(9.0).reshape(1, 3, 3) / 8
    mask = torch.arange(9).reshape(3, 3)
    torch.manual_seed(0)
    n = 6000
    seen: Counter = Counter()
    for _ in range(n):
        image, out = aug(probe, mask)
        assert torch.equal((image[0] * 8).round().long(), out)  # image and mask move together
        seen[tuple(out.flatten().tolist())] += 1
    law = _dihedral_probabilities_of_flip_rotate()
    assert set(seen) == set(law) and len(law) == 8
    for element, p in law.items():  # 4.5 binomial standard deviations
        assert abs(seen[element] / n - p) < 4.5 * np.sqrt(p * (1 - p) / n), (element, p)


def _epoch(dataset: Dataset, seed: int, workers: int) -> list[dict]:
    torch.manual_seed(seed)
    loader = DataLoader(dataset, batch_size=None, num_workers=workers)
    return list(loader)


@pytest.mark.parametrize("workers", [0, 2])
def test_strong_repeats_exactly_for_a_seed_and_differs_between_items(workers):
    tiles = AugmentedTiles(SameTile(count=6), augment_of("strong"))
    first, again, other = (
        _epoch(tiles, 3, workers),
        _epoch(tiles, 3, workers),
        _epoch(tiles, 4, workers),
    )
    for a, b in zip(first, again):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    images = [item["image"] for item in first]
    assert all(not torch.equal(images[i], images[j]) for i in range(6) for j in range(i))
    assert any(not torch.equal(a["image"], b["image"]) for a, b in zip(first, other))


def test_strong_fills_outside_areas_with_ignore_index_and_keeps_class_values():
    aug = augment_of("strong")
    image = torch.full((4, 32, 32), 0.5)
    mask = torch.zeros(32, 32, dtype=torch.int64)
    mask[:, 16:] = 5  # only classes 0 and 5: nearest sampling creates no other value
    torch.manual_seed(0)
    filled = 0
    for _ in range(40):
        _, out = aug(image, mask)
        assert set(out.unique().tolist()) <= {0, 5, 255}
        filled += int((out == 255).any())
    assert filled >= 5  # the Affine (p = 0.5) moved areas in from outside the tile


def test_rgb_only_ops_leave_further_bands_and_the_mask_alone():
    rgb_op = A.HueSaturationValue(hue_shift_limit=40, sat_shift_limit=40, val_shift_limit=0, p=1)
    aug = TileAugment([RGBOnly(rgb_op)], ignore_index=255, bands=4)
    tile = SameTile(bands=4)
    torch.manual_seed(0)
    image, mask = aug(tile.image, tile.mask)
    assert torch.equal(image[3], tile.image[3]) and torch.equal(mask, tile.mask)
    assert not torch.allclose(image[:3], tile.image[:3], atol=1e-3)
    three = TileAugment([RGBOnly(rgb_op)], ignore_index=255, bands=3)
    assert three(tile.image[:3], tile.mask)[0].shape == (3, 32, 32)


def test_refusals_name_the_transform_and_the_setting():
    with pytest.raises(AugmentConfigError, match="HueSaturationValue fails on 4-band.*RGBOnly"):
        TileAugment([A.HueSaturationValue(p=1)], ignore_index=255, bands=4)
    with pytest.raises(AugmentConfigError, match=r"Affine fills the mask with 0.*fill_mask"):
        TileAugment([A.Affine(rotate=(-10, 10), border_mode=0, fill_mask=0)], ignore_index=255)
    with pytest.raises(AugmentConfigError, match="mask_interpolation=1"):
        TileAugment([A.Affine(rotate=(-10, 10), fill_mask=255, mask_interpolation=1)])
    # a reflecting border fills nothing, so its (default) fill_mask is irrelevant
    TileAugment([A.Affine(rotate=(-10, 10), border_mode=4)], ignore_index=255)


def test_cli_finetune_with_strong_augmentation_runs(tiny_sample_root, tmp_path):
    res = run_script(
        "finetune.py",
        *tiny_overrides(tiny_sample_root, tmp_path / "out"),
        "data=sample",
        f"data.root={tiny_sample_root}",
        "train_augment=strong",
        "trainer.max_steps=2",
        "trainer.limit_val_batches=1",
        "samples_per_epoch=8",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    saved = (tmp_path / "run" / ".hydra" / "config.yaml").read_text()
    assert "albumentations.Affine" in saved and "fill_mask: ${data.ignore_index}" in saved
    assert "best checkpoint:" in res.stdout


def test_cli_refuses_a_mask_fill_of_class_zero_in_one_line(tiny_sample_root, tmp_path):
    res = run_script(
        "finetune.py",
        *tiny_overrides(tiny_sample_root, tmp_path / "out"),
        "train_augment=strong",
        "train_augment.transforms.3.fill_mask=0",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 2, res.stderr[-3000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Affine fills the mask with 0" in lines[0], res.stderr
