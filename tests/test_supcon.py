"""SupConLoss (L_out, L_in) against a loop reference written from seed 001 eqs. (3) and (4)."""

from __future__ import annotations

import math

import pytest
import torch

from glcnet.losses import NTXentLoss, SupConLoss


def _cos(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * v).sum() / (torch.sqrt((u * u).sum()) * torch.sqrt((v * v).sum()))


def ref_supcon_terms(features, related, tau, variant, valid=None):
    """Per-anchor losses {(i, v): l} over anchors with a positive.

    features: (N, V, d); related(i, j) -> bool says whether sample j is a positive of sample i
    (the own sample's other views are always positives).
    """
    n, n_views, _ = features.shape
    ok = [True] * n if valid is None else [bool(x) for x in valid]
    items = [(i, v) for i in range(n) for v in range(n_views) if ok[i]]
    terms = {}
    for a in items:
        others = [b for b in items if b != a]
        positives = [b for b in others if b[0] == a[0] or related(a[0], b[0])]
        if not positives:
            continue
        z_i = features[a]

        def e(b, z_i=z_i):
            return torch.exp(_cos(z_i, features[b]) / tau)

        denominator = sum(e(b) for b in others)
        if variant == "out":  # eq. (3)
            terms[a] = -sum(torch.log(e(p) / denominator) for p in positives) / len(positives)
        else:  # eq. (4)
            terms[a] = -torch.log(sum(e(p) / denominator for p in positives) / len(positives))
    return terms


def ref_supcon(features, related, tau, variant, valid=None):
    terms = ref_supcon_terms(features, related, tau, variant, valid)
    return sum(terms.values()) / len(terms)


def _features(n, v, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, v, d, generator=g, dtype=dtype).requires_grad_()


def _same_label(labels):
    return lambda i, j: bool(labels[i] == labels[j])


@pytest.mark.parametrize("variant", ["out", "in"])
@pytest.mark.parametrize("n_views", [1, 2, 3])
def test_supcon_matches_reference(variant, n_views):
    feats = _features(6, n_views, 5, seed=n_views)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    valid = torch.tensor([True, True, True, False, True, True])
    loss = SupConLoss(0.2, variant)(feats, labels=labels, valid=valid)
    (grad,) = torch.autograd.grad(loss, feats)
    ref = ref_supcon(feats, _same_label(labels), 0.2, variant, valid)
    (ref_grad,) = torch.autograd.grad(ref, feats)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(grad, ref_grad, rtol=1e-8, atol=1e-12)
    assert (grad[3] == 0).all()
    # fp32 agrees to fp32 precision
    loss32 = SupConLoss(0.2, variant)(feats.detach().float(), labels=labels, valid=valid)
    assert loss32.dtype == torch.float32
    assert loss32.item() == pytest.approx(ref.item(), rel=1e-5)


def test_multi_hot_labels_and_custom_mask_match_reference():
    feats = _features(5, 2, 4, seed=10)
    multi_hot = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0], [0, 0, 0]])

    def shares_class(i, j):
        return any(multi_hot[i, c] and multi_hot[j, c] for c in range(3))

    mask = torch.tensor([[shares_class(i, j) for j in range(5)] for i in range(5)])
    for variant in ("out", "in"):
        ref = ref_supcon(feats, shares_class, 0.3, variant).item()
        by_labels = SupConLoss(0.3, variant)(feats, labels=multi_hot)
        by_mask = SupConLoss(0.3, variant)(feats, mask=mask)
        assert by_labels.item() == pytest.approx(ref, rel=1e-10)
        assert by_mask.item() == pytest.approx(ref, rel=1e-10)


def test_l_in_is_at_most_l_out():
    for seed in range(5):
        feats = _features(8, 2, 6, seed=seed)
        labels = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(seed))
        out = SupConLoss(0.1, "out")(feats, labels=labels).item()
        inn = SupConLoss(0.1, "in")(feats, labels=labels).item()
        assert inn <= out + 1e-12
        assert inn < out  # strict unless all positives are equally similar


def test_anchor_without_positive_is_left_out_of_the_mean():
    feats = _features(5, 1, 4, seed=11)[:, 0].detach()  # (N, d): V = 1
    labels = torch.tensor([0, 0, 1, 1, 2])  # sample 4 is alone in its class
    loss = SupConLoss(0.5)(feats, labels=labels).item()
    terms = ref_supcon_terms(feats[:, None], _same_label(labels), 0.5, "out")
    assert (4, 0) not in terms and len(terms) == 4  # sample 4 is still a negative of the others
    assert loss == pytest.approx(sum(t.item() for t in terms.values()) / 4, rel=1e-10)
    assert loss != pytest.approx(sum(t.item() for t in terms.values()) / 5, rel=1e-3)
    # no positive anywhere: 0, finite
    assert SupConLoss(0.5)(feats, labels=torch.arange(5)).item() == 0.0


def test_tiny_temperature_is_finite():
    """SupContrast multiplies a mask into log-probabilities and gets NaN at tau = 0.005."""
    feats = _features(6, 2, 8, seed=12, dtype=torch.float32)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    ref = ref_supcon(feats.detach().double(), _same_label(labels), 0.005, "out").item()
    for variant in ("out", "in"):
        loss = SupConLoss(0.005, variant)(feats, labels=labels)
        (grad,) = torch.autograd.grad(loss, feats)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        if variant == "out":
            assert loss.item() == pytest.approx(ref, rel=1e-4)


def test_without_labels_equals_ntxent():
    g = torch.Generator().manual_seed(13)
    z_a = torch.randn(7, 5, generator=g, dtype=torch.float64).requires_grad_()
    z_b = torch.randn(7, 5, generator=g, dtype=torch.float64).requires_grad_()
    valid = torch.tensor([True, True, False, True, True, True, False])
    for variant in ("out", "in"):  # one positive per anchor: both variants are NT-Xent
        sup = SupConLoss(0.3, variant)(torch.stack([z_a, z_b], dim=1), valid=valid)
        nt = NTXentLoss(0.3)(z_a, z_b, valid)
        assert sup.item() == pytest.approx(nt.item(), rel=1e-12)
        sup_grads = torch.autograd.grad(sup, (z_a, z_b))
        nt_grads = torch.autograd.grad(nt, (z_a, z_b))
        for s, t in zip(sup_grads, nt_grads):
            assert torch.allclose(s, t, rtol=1e-10, atol=1e-14)
    # all labels distinct is the same thing; an empty mask too (own views are always positives)
    feats = torch.stack([z_a, z_b], dim=1).detach()
    nt = NTXentLoss(0.3)(z_a, z_b).item()
    assert SupConLoss(0.3)(feats, labels=torch.arange(7)).item() == pytest.approx(nt, rel=1e-12)
    empty = torch.zeros(7, 7, dtype=torch.bool)
    assert SupConLoss(0.3)(feats, mask=empty).item() == pytest.approx(nt, rel=1e-12)


@pytest.mark.parametrize("variant", ["out", "in"])
def test_identical_embeddings_closed_form(variant):
    n, v = 4, 3
    feats = torch.randn(1, 1, 6).repeat(n, v, 1)
    labels = torch.tensor([0, 0, 1, 2])
    # every candidate equally similar: p = 1 / (NV - 1) for every positive, in both variants
    loss = SupConLoss(0.1, variant)(feats, labels=labels)
    assert loss.item() == pytest.approx(math.log(n * v - 1), abs=1e-5)


def test_base_temperature_scales_the_loss():
    feats = _features(4, 2, 3, seed=14)
    labels = torch.tensor([0, 1, 0, 1])
    plain = SupConLoss(0.1)(feats, labels=labels)
    scaled = SupConLoss(0.1, base_temperature=0.07)(feats, labels=labels)
    assert scaled.item() == pytest.approx(plain.item() * 0.1 / 0.07, rel=1e-12)


def test_autocast_bf16_is_computed_in_fp32():
    feats = _features(6, 2, 8, seed=15, dtype=torch.float32).detach().bfloat16()
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = SupConLoss(0.1)(feats, labels=labels)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(SupConLoss(0.1)(feats.float(), labels=labels).item())


def test_validation_errors():
    with pytest.raises(ValueError, match="temperature"):
        SupConLoss(-1.0)
    with pytest.raises(ValueError, match="variant"):
        SupConLoss(variant="mid")
    with pytest.raises(ValueError, match="base_temperature"):
        SupConLoss(base_temperature=0.0)
    loss = SupConLoss()
    feats = torch.randn(4, 2, 3)
    with pytest.raises(ValueError, match="not both"):
        loss(feats, labels=torch.zeros(4), mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="labels"):
        loss(feats, labels=torch.zeros(5))
    with pytest.raises(ValueError, match="mask"):
        loss(feats, mask=torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="features"):
        loss(torch.randn(4))
    with pytest.raises(ValueError, match="valid"):
        loss(feats, valid=torch.ones(4))
