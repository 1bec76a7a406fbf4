"""Pretraining health: embedding statistics against loop references, the k-NN probe, logging."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from glcnet.training.diagnostics import KnnProbe, embedding_health, majority_labels


def _loop_health(z_a: torch.Tensor, z_b: torch.Tensor) -> dict[str, float]:
    """Every statistic written from its formula with Python loops (float64)."""
    a = [v / v.norm() for v in z_a.double()]
    b = [v / v.norm() for v in z_b.double()]
    z = a + b
    n, d = len(a), a[0].numel()
    stds = []
    for j in range(d):
        col = [float(v[j]) for v in z]
        mean = sum(col) / len(col)
        stds.append(math.sqrt(sum((x - mean) ** 2 for x in col) / (len(col) - 1)))
    std = sum(stds) / d
    align = sum(float((a[i] - b[i]).pow(2).sum()) for i in range(n)) / n

    def uniform(x):
        terms = [
            math.exp(-2 * float((x[i] - x[j]).pow(2).sum()))
            for i in range(n)
            for j in range(i + 1, n)
        ]
        return math.log(sum(terms) / len(terms))

    hardest = []
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        hardest.append(max(float(z[i] @ z[j]) for j in range(2 * n) if j not in (i, partner)))
    return {
        "std": std,
        "std_x_sqrt_d": std * math.sqrt(d),
        "align": align,
        "uniform": (uniform(a) + uniform(b)) / 2,
        "pos_sim": sum(float(a[i] @ b[i]) for i in range(n)) / n,
        "hardest_neg_sim": sum(hardest) / len(hardest),
    }


def test_embedding_health_matches_loop_reference():
    g = torch.Generator().manual_seed(0)
    z_a = torch.randn(6, 5, generator=g) * 3
    z_b = z_a + 0.5 * torch.randn(6, 5, generator=g)
    got = embedding_health(z_a, z_b)
    want = _loop_health(z_a, z_b)
    assert set(got) == set(want)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key


def test_embedding_health_of_a_collapsed_and_of_an_even_spread():
    same = torch.ones(4, 8)
    h = embedding_health(same, same)
    assert h["std"] == pytest.approx(0.0, abs=1e-7) and h["align"] == pytest.approx(0.0, abs=1e-7)
    assert h["uniform"] == pytest.approx(0.0, abs=1e-6)  # log E exp(0)
    assert h["pos_sim"] == pytest.approx(1.0) and h["hardest_neg_sim"] == pytest.approx(1.0)
    # +-e_k for every axis: unit vectors evenly spread; positives identical
    d = 8
    spread = torch.cat([torch.eye(d), -torch.eye(d)])
    h = embedding_health(spread, spread)
    # both views together: each dimension holds +1 twice, -1 twice and 28 zeros (mean 0), so its
    # sample std is sqrt(4 / 31), close to 1 / sqrt(d) = 0.354
    assert h["std"] == pytest.approx(math.sqrt(4 / 31))
    assert h["hardest_neg_sim"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        embedding_health(torch.ones(1, 4), torch.ones(1, 4))


def test_majority_labels_by_hand():
    mask = torch.tensor(
        [[[0, 0, 1, 1], [0, 2, 1, 255], [255, 255, 3, 3], [255, 255, 3, 1]]], dtype=torch.long
    )
    got = majority_labels(mask, (2, 2), num_classes=4, ignore=255)
    assert got.tolist() == [[[0, 1], [255, 3]]]


class _ClassEncoder(nn.Module):
    """Encoder whose deepest features are the one-hot class map hidden in band 0 (and a BN)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.k = num_classes
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        self.bn(x[:, :1])  # updates running statistics in train mode
        cls = nn.functional.avg_pool2d(x[:, :1], 4).round().long().clamp(0, self.k - 1)[:, 0]
        return [nn.functional.one_hot(cls, self.k).permute(0, 3, 1, 2).float() + 0.01]


class _Model(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Module()
        self.net.encoder = _ClassEncoder(num_classes)


class _Tiles(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(1)
        self.masks = torch.randint(0, 3, (n, 4, 4), generator=g).repeat_interleave(4, 1)
        self.masks = self.masks.repeat_interleave(4, 2)  # (n, 16, 16), constant 4x4 cells

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, i):
        return {"image": self.masks[i][None].float().expand(2, 16, 16), "mask": self.masks[i]}


def test_knn_probe_scores_perfect_features_as_one_and_leaves_the_model_as_it_was():
    model = _Model(3).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe = KnnProbe(_Tiles(10), count=6, num_classes=3, ignore_index=255, k=3)
    assert probe.images.shape == (6, 2, 16, 16)
    assert probe(model) == pytest.approx(1.0)
    assert model.training and model.net.encoder.bn.training  # modes restored
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # eval: BN stats untouched
    with pytest.raises(ValueError, match="wants 20 tiles"):
        KnnProbe(_Tiles(10), count=20)
