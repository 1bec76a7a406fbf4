"""The segmentation loss zoo against slow references written from the formulas.

The references loop over pixels and classes on 0-d float64 tensors (so autograd gives their
gradients too), with the softmax, the soft TP/FP/FN and every loss written out again from the
seed's / papers' formulas, independently of glcnet.losses.segmentation.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from glcnet.losses.segmentation import (
    AsymmetricUnifiedFocalLoss,
    BinaryCrossEntropyLoss,
    ComboLoss,
    CrossEntropyLoss,
    DiceFocalLoss,
    DiceLoss,
    FocalLoss,
    FocalTverskyLoss,
    HybridFocalLoss,
    SymmetricUnifiedFocalLoss,
    TverskyLoss,
)
from glcnet.utils.config import CONFIG_DIR, instantiate

IGNORE = 255
C = 4
WEIGHTS = [0.5, 2.0, 1.0, 3.0]
SMOOTH = 1e-3  # large enough that a misplaced smooth term shows in the comparisons


# ----------------------------------------------------------------------------- inputs


def make_inputs(absent_class: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (2, C, 3, 4) float64 and labels with ignored pixels (class 3 absent if asked)."""
    g = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(2, C, 3, 4, generator=g, dtype=torch.float64)
    target = torch.tensor(
        [
            [[0, 1, 2, 3], [IGNORE, 0, 1, 2], [3, 3, IGNORE, 0]],
            [[1, 1, 2, IGNORE], [0, 3, 2, 2], [IGNORE, 1, 0, 3]],
        ]
    )
    if absent_class:
        target = torch.where(target == 3, torch.full_like(target, 1), target)
    return logits, target


# ----------------------------------------------------------------------------- references


def ref_pixels(logits, target):
    """[(probabilities p_0..p_{C-1} as 0-d tensors, label g)] of the valid pixels."""
    out = []
    b_n, c_n, h_n, w_n = logits.shape
    for b in range(b_n):
        for h in range(h_n):
            for w in range(w_n):
                g = int(target[b, h, w])
                if g == IGNORE:
                    continue
                z = [logits[b, c, h, w] for c in range(c_n)]
                top = max(float(v.detach()) for v in z)
                e = [torch.exp(v - top) for v in z]
                total = sum(e)
                out.append(([v / total for v in e], g))
    return out


def ref_weight(w, c):
    return 1.0 if w is None else w[c]


def ref_focal_mean(pixels, w, exponent_of=lambda g: 0.0, scale_of=lambda g: 1.0):
    """sum_i w_g s_g (1 - p_g)^e_g (-log p_g) / sum_i w_g."""
    num, den = 0.0, 0.0
    for p, g in pixels:
        term = -torch.log(p[g]) * scale_of(g)
        e = exponent_of(g)
        if e != 0:
            term = term * (1.0 - p[g]) ** e
        num = num + ref_weight(w, g) * term
        den += ref_weight(w, g)
    return num / den


def ref_ce(pixels, w):
    return ref_focal_mean(pixels, w)


def ref_counts(pixels):
    """Soft TP, FP, FN per class (sums over all valid pixels) and class presence."""
    tp, fp, fn = [0.0] * C, [0.0] * C, [0.0] * C
    present = [False] * C
    for p, g in pixels:
        present[g] = True
        for c in range(C):
            if c == g:
                tp[c] = tp[c] + p[c]
                fn[c] = fn[c] + (1.0 - p[c])
            else:
                fp[c] = fp[c] + p[c]
    return tp, fp, fn, present


def ref_class_mean(values, present, w):
    num = sum(ref_weight(w, c) * values[c] for c in range(C) if present[c])
    den = sum(ref_weight(w, c) for c in range(C) if present[c])
    return num / den


def ref_dice_coefficient(pixels, w, s):
    tp, fp, fn, present = ref_counts(pixels)
    dsc = [(2 * tp[c] + s) / (2 * tp[c] + fp[c] + fn[c] + s) for c in range(C)]
    return ref_class_mean(dsc, present, w)


def ref_focal_tversky(pixels, w, a, b, s, exponent_of=lambda c: 1.0):
    tp, fp, fn, present = ref_counts(pixels)
    terms = []
    for c in range(C):
        ti = (tp[c] + s) / (tp[c] + a * fp[c] + b * fn[c] + s)
        terms.append((1.0 - ti) ** exponent_of(c))
    return ref_class_mean(terms, present, w)


def ref_unified(pixels, w, lam, delta, gamma, rare, s, asymmetric):
    def focal_exponent(g):
        return 0.0 if (asymmetric and g in rare) else 1.0 - gamma

    def tversky_exponent(c):
        return gamma if (not asymmetric or c in rare) else 1.0

    m_f = ref_focal_mean(pixels, w, focal_exponent, lambda g: delta if g in rare else 1.0 - delta)
    m_ft = ref_focal_tversky(pixels, w, delta, 1.0 - delta, s, tversky_exponent)
    return lam * m_f + (1.0 - lam) * m_ft


# (name, factory(class_weights) -> our loss, reference(pixels, class_weights) -> value)
CASES = [
    ("ce", lambda w: CrossEntropyLoss(class_weights=w), ref_ce),
    (
        "focal",
        lambda w: FocalLoss(gamma=2.0, class_weights=w),
        lambda px, w: ref_focal_mean(px, w, lambda g: 2.0),
    ),
    (
        "focal_gamma_half",
        lambda w: FocalLoss(gamma=0.5, class_weights=w),
        lambda px, w: ref_focal_mean(px, w, lambda g: 0.5),
    ),
    (
        "dice",
        lambda w: DiceLoss(smooth=SMOOTH, class_weights=w),
        lambda px, w: 1.0 - ref_dice_coefficient(px, w, SMOOTH),
    ),
    (
        "tversky",
        lambda w: TverskyLoss(alpha=0.3, beta=0.7, smooth=SMOOTH, class_weights=w),
        lambda px, w: ref_focal_tversky(px, w, 0.3, 0.7, SMOOTH),
    ),
    (
        "focal_tversky",
        lambda w: FocalTverskyLoss(
            alpha=0.3, beta=0.7, gamma=4 / 3, smooth=SMOOTH, class_weights=w
        ),
        lambda px, w: ref_focal_tversky(px, w, 0.3, 0.7, SMOOTH, lambda c: 0.75),
    ),
    (
        "combo",
        lambda w: ComboLoss(alpha=0.3, smooth=SMOOTH, class_weights=w),
        lambda px, w: 0.3 * ref_ce(px, w) - 0.7 * ref_dice_coefficient(px, w, SMOOTH),
    ),
    (
        "dice_focal",
        lambda w: DiceFocalLoss(gamma=2.0, lambda_=0.4, smooth=SMOOTH, class_weights=w),
        lambda px, w: (
            0.4 * ref_focal_mean(px, w, lambda g: 2.0)
            + 0.6 * (1.0 - ref_dice_coefficient(px, w, SMOOTH))
        ),
    ),
    (
        "hybrid_focal",
        lambda w: HybridFocalLoss(
            lambda_=0.4,
            focal_gamma=2.0,
            alpha=0.3,
            beta=0.7,
            gamma=4 / 3,
            smooth=SMOOTH,
            class_weights=w,
        ),
        lambda px, w: (
            0.4 * ref_focal_mean(px, w, lambda g: 2.0)
            + 0.6 * ref_focal_tversky(px, w, 0.3, 0.7, SMOOTH, lambda c: 0.75)
        ),
    ),
    (
        "unified_sym",
        lambda w: SymmetricUnifiedFocalLoss(
            lambda_=0.4, delta=0.6, gamma=0.3, rare_classes=[1, 3], smooth=SMOOTH, class_weights=w
        ),
        lambda px, w: ref_unified(px, w, 0.4, 0.6, 0.3, {1, 3}, SMOOTH, asymmetric=False),
    ),
    (
        "unified_asym",
        lambda w: AsymmetricUnifiedFocalLoss(
            lambda_=0.4, delta=0.6, gamma=0.3, rare_classes=[1, 3], smooth=SMOOTH, class_weights=w
        ),
        lambda px, w: ref_unified(px, w, 0.4, 0.6, 0.3, {1, 3}, SMOOTH, asymmetric=True),
    ),
    (
        "unified_asym_default_rare",
        lambda w: AsymmetricUnifiedFocalLoss(lambda_=0.5, delta=0.7, gamma=0.5, class_weights=w),
        lambda px, w: ref_unified(px, w, 0.5, 0.7, 0.5, {1, 2, 3}, 1e-6, asymmetric=True),
    ),
]
ALL_LOSSES = [
    CrossEntropyLoss,
    FocalLoss,
    DiceLoss,
    TverskyLoss,
    FocalTverskyLoss,
    ComboLoss,
    DiceFocalLoss,
    HybridFocalLoss,
    SymmetricUnifiedFocalLoss,
    AsymmetricUnifiedFocalLoss,
]


def value_and_grad(fn, logits, target):
    x = logits.clone().requires_grad_()
    value = fn(x, target)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


def reference_value_and_grad(ref, logits, target, w):
    x = logits.clone().requires_grad_()
    value = ref(ref_pixels(x, target), w)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


# ----------------------------------------------------------------------------- reference tests


@pytest.mark.parametrize("absent_class", [False, True], ids=["all_present", "class3_absent"])
@pytest.mark.parametrize("weighted", [False, True], ids=["uniform", "weighted"])
@pytest.mark.parametrize("name,factory,ref", CASES, ids=[c[0] for c in CASES])
def test_loss_matches_reference_values_and_gradients(name, factory, ref, weighted, absent_class):
    logits, target = make_inputs(absent_class)
    w = WEIGHTS if weighted else None
    value, grad = value_and_grad(factory(w), logits, target)
    ref_value, ref_grad = reference_value_and_grad(ref, logits, target, w)
    assert value.dtype == torch.float64
    assert value.item() == pytest.approx(ref_value.item(), rel=1e-12, abs=1e-14)
    assert torch.allclose(grad, ref_grad, rtol=1e-9, atol=1e-13)
    # ignored pixels get no gradient at all
    assert torch.all(grad.permute(1, 0, 2, 3)[:, target == IGNORE] == 0)


def test_bce_single_channel_matches_reference():
    g = torch.Generator().manual_seed(1)
    logits = 3.0 * torch.randn(2, 1, 3, 4, generator=g, dtype=torch.float64)
    target = torch.randint(0, 2, (2, 3, 4), generator=g)
    target[0, 1, 2] = target[1, 0, 0] = IGNORE
    w = [0.7, 2.5]
    x = logits.clone().requires_grad_()
    value = BinaryCrossEntropyLoss(class_weights=w)(x, target)
    (grad,) = torch.autograd.grad(value, x)
    xr = logits.clone().requires_grad_()
    num, den = 0.0, 0.0
    for b in range(2):
        for h in range(3):
            for k in range(4):
                t = int(target[b, h, k])
                if t == IGNORE:
                    continue
                p = 1.0 / (1.0 + torch.exp(-xr[b, 0, h, k]))
                term = -(t * torch.log(p) + (1 - t) * torch.log(1.0 - p))
                num, den = num + w[t] * term, den + w[t]
    (ref_grad,) = torch.autograd.grad(num / den, xr)
    assert value.item() == pytest.approx((num / den).item(), rel=1e-12)
    assert torch.allclose(grad, ref_grad, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("w", [None, [0.3, 1.7]])
def test_bce_two_channels_equals_two_class_cross_entropy(w):
    g = torch.Generator().manual_seed(2)
    logits = 3.0 * torch.randn(3, 2, 5, 5, generator=g, dtype=torch.float64)
    target = torch.randint(0, 2, (3, 5, 5), generator=g)
    target[:, 0, :2] = IGNORE
    bce, bce_grad = value_and_grad(BinaryCrossEntropyLoss(class_weights=w), logits, target)
    ce, ce_grad = value_and_grad(CrossEntropyLoss(class_weights=w), logits, target)
    assert bce.item() == pytest.approx(ce.item(), rel=1e-12)
    assert torch.allclose(bce_grad, ce_grad, rtol=1e-9, atol=1e-13)
    # and the single-channel form with z = z_1 - z_0 gives the same value
    single = BinaryCrossEntropyLoss(class_weights=w)(logits[:, 1:] - logits[:, :1], target)
    assert single.item() == pytest.approx(ce.item(), rel=1e-12)


@pytest.mark.parametrize("w", [None, WEIGHTS])
def test_cross_entropy_is_torch_cross_entropy(w):
    logits, target = make_inputs(absent_class=False)
    weight = None if w is None else torch.tensor(w, dtype=torch.float64)
    expected = torch.nn.CrossEntropyLoss(weight=weight, ignore_index=IGNORE)(logits, target)
    assert CrossEntropyLoss(class_weights=w)(logits, target).item() == pytest.approx(
        expected.item(), rel=1e-13
    )


# ----------------------------------------------------------------------------- smp cross-checks


@pytest.mark.parametrize("w", [None, WEIGHTS])
def test_dice_equals_smp_when_every_class_is_present(w):
    logits, target = make_inputs(absent_class=False)
    ours = DiceLoss(smooth=0.0, class_weights=w)(logits, target)
    theirs = smp.losses.DiceLoss("multiclass", smooth=0.0, ignore_index=IGNORE, class_weights=w)(
        logits, target
    )
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)


def test_dice_with_absent_class_differs_from_smp_by_the_present_fraction():
    # smp scores the absent class 0 and still divides by C; we average over present classes
    logits, target = make_inputs(absent_class=True)
    ours = DiceLoss(smooth=0.0)(logits, target)
    theirs = smp.losses.DiceLoss("multiclass", smooth=0.0, ignore_index=IGNORE)(logits, target)
    assert theirs.item() == pytest.approx(ours.item() * 3 / 4, rel=1e-9)


def test_tversky_equals_smp_when_every_class_is_present():
    logits, target = make_inputs(absent_class=False)
    ours = TverskyLoss(alpha=0.3, beta=0.7, smooth=0.0)(logits, target)
    theirs = smp.losses.TverskyLoss(
        "multiclass", alpha=0.3, beta=0.7, gamma=1.0, smooth=0.0, ignore_index=IGNORE
    )(logits, target)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-9)


# ----------------------------------------------------------------------------- special cases


@pytest.fixture
def inputs():
    return make_inputs(absent_class=False, seed=3)


def assert_same(a, b, logits, target):
    va, ga = value_and_grad(a, logits, target)
    vb, gb = value_and_grad(b, logits, target)
    assert va.item() == pytest.approx(vb.item(), rel=1e-12, abs=1e-14)
    assert torch.allclose(ga, gb, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("w", [None, WEIGHTS])
def test_tversky_with_equal_halves_is_dice(inputs, w):
    # (TP + s) / (TP + FP/2 + FN/2 + s) = (2TP + 2s) / (2TP + FP + FN + 2s): Dice with smooth 2s
    assert_same(
        TverskyLoss(alpha=0.5, beta=0.5, smooth=SMOOTH / 2, class_weights=w),
        DiceLoss(smooth=SMOOTH, class_weights=w),
        *inputs,
    )


@pytest.mark.parametrize("w", [None, WEIGHTS])
def test_focal_with_gamma_zero_is_cross_entropy(inputs, w):
    assert_same(FocalLoss(gamma=0.0, class_weights=w), CrossEntropyLoss(class_weights=w), *inputs)


def test_focal_tversky_with_gamma_one_is_tversky(inputs):
    assert_same(
        FocalTverskyLoss(alpha=0.2, beta=0.8, gamma=1.0, smooth=SMOOTH, class_weights=WEIGHTS),
        TverskyLoss(alpha=0.2, beta=0.8, smooth=SMOOTH, class_weights=WEIGHTS),
        *inputs,
    )


@pytest.mark.parametrize("w", [None, WEIGHTS])
def test_combo_extremes(inputs, w):
    logits, target = inputs
    assert_same(ComboLoss(alpha=1.0, class_weights=w), CrossEntropyLoss(class_weights=w), *inputs)
    combo0 = ComboLoss(alpha=0.0, smooth=SMOOTH, class_weights=w)(logits, target)
    dice = DiceLoss(smooth=SMOOTH, class_weights=w)(logits, target)
    assert combo0.item() == pytest.approx(dice.item() - 1.0, rel=1e-12)


def test_dice_focal_and_hybrid_extremes(inputs):
    w = WEIGHTS
    assert_same(DiceFocalLoss(gamma=1.5, lambda_=1.0, class_weights=w), FocalLoss(1.5, w), *inputs)
    assert_same(DiceFocalLoss(lambda_=0.0, smooth=SMOOTH), DiceLoss(smooth=SMOOTH), *inputs)
    assert_same(
        HybridFocalLoss(lambda_=1.0, focal_gamma=1.5, class_weights=w), FocalLoss(1.5, w), *inputs
    )
    assert_same(
        HybridFocalLoss(lambda_=0.0, alpha=0.4, beta=0.6, gamma=2.0, smooth=SMOOTH),
        FocalTverskyLoss(alpha=0.4, beta=0.6, gamma=2.0, smooth=SMOOTH),
        *inputs,
    )


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_unified_without_focal_modification_is_symmetric_and_asymmetric_alike(inputs, lam):
    kwargs = {"lambda_": lam, "delta": 0.7, "gamma": 1.0, "rare_classes": [2], "smooth": SMOOTH}
    assert_same(
        SymmetricUnifiedFocalLoss(**kwargs, class_weights=WEIGHTS),
        AsymmetricUnifiedFocalLoss(**kwargs, class_weights=WEIGHTS),
        *inputs,
    )


@pytest.mark.parametrize("cls", [SymmetricUnifiedFocalLoss, AsymmetricUnifiedFocalLoss])
def test_unified_gamma_one_delta_half_is_dice_plus_cross_entropy(inputs, cls):
    logits, target = inputs
    lam = 0.3
    uf = cls(lambda_=lam, delta=0.5, gamma=1.0, smooth=SMOOTH / 2, class_weights=WEIGHTS)
    ce = CrossEntropyLoss(class_weights=WEIGHTS)(logits, target)
    dice = DiceLoss(smooth=SMOOTH, class_weights=WEIGHTS)(logits, target)
    expected = lam / 2 * ce + (1 - lam) * dice
    assert uf(logits, target).item() == pytest.approx(expected.item(), rel=1e-12)


@pytest.mark.parametrize("gamma", [0.2, 0.5, 0.9])
def test_symmetric_unified_with_delta_half_is_grouped_hybrid_focal(inputs, gamma):
    # lambda = 2/3: lambda/2 = 1 - lambda = 1/3, i.e. 2/3 of the hybrid focal loss with lambda 1/2
    logits, target = inputs
    suf = SymmetricUnifiedFocalLoss(lambda_=2 / 3, delta=0.5, gamma=gamma, smooth=SMOOTH)
    hybrid = HybridFocalLoss(
        lambda_=0.5, focal_gamma=1 - gamma, alpha=0.5, beta=0.5, gamma=1 / gamma, smooth=SMOOTH
    )
    assert suf(logits, target).item() == pytest.approx(
        2 / 3 * hybrid(logits, target).item(), rel=1e-12
    )


def test_unified_lambda_extremes_and_rare_conventions(inputs):
    logits, target = inputs
    # lambda = 1: the modified focal term; with every class rare (asymmetric) it is delta * CE
    asym = AsymmetricUnifiedFocalLoss(lambda_=1.0, delta=0.7, gamma=0.4, rare_classes=[0, 1, 2, 3])
    ce = CrossEntropyLoss()(logits, target)
    assert asym(logits, target).item() == pytest.approx(0.7 * ce.item(), rel=1e-12)
    # lambda = 0: the modified focal Tversky term, delta on FP and 1 - delta on FN
    sym = SymmetricUnifiedFocalLoss(lambda_=0.0, delta=0.7, gamma=0.4, smooth=SMOOTH)
    ft = FocalTverskyLoss(alpha=0.7, beta=0.3, gamma=1 / 0.4, smooth=SMOOTH)
    assert sym(logits, target).item() == pytest.approx(ft(logits, target).item(), rel=1e-12)
    # rare_classes=None is "every class but 0"
    for cls in (SymmetricUnifiedFocalLoss, AsymmetricUnifiedFocalLoss):
        a = cls(delta=0.8, gamma=0.3)(logits, target)
        b = cls(delta=0.8, gamma=0.3, rare_classes=[1, 2, 3])(logits, target)
        assert a.item() == b.item()


def test_focal_downweights_easy_pixels_more_than_hard_ones():
    # one confident-correct and one wrong pixel: the focal factor shrinks the easy one the most
    logits = torch.tensor([[[[4.0, -1.0]], [[0.0, 0.0]]]], dtype=torch.float64)  # (1, 2, 1, 2)
    target = torch.tensor([[[0, 0]]])
    x = logits.clone().requires_grad_()
    torch.nn.functional.cross_entropy(x, target, reduction="sum").backward()
    y = logits.clone().requires_grad_()
    (FocalLoss(gamma=2.0)(y, target) * 2).backward()
    ratio = (y.grad[0, 0, 0] / x.grad[0, 0, 0]).abs()
    assert ratio[0] < 0.01 < 0.5 < ratio[1]


# ----------------------------------------------------------------------------- numerics, edge cases


def make_loss(cls, num_classes=6):
    return cls() if cls is not BinaryCrossEntropyLoss else cls()


@pytest.mark.parametrize("cls", [*ALL_LOSSES, BinaryCrossEntropyLoss], ids=lambda c: c.__name__)
def test_extreme_logits_give_finite_values_and_gradients(cls):
    g = torch.Generator().manual_seed(4)
    classes = 2 if cls is BinaryCrossEntropyLoss else 6
    target = torch.randint(0, classes, (2, 8, 8), generator=g)
    target[0, :2] = IGNORE
    one_hot = torch.nn.functional.one_hot(target.clamp(max=classes - 1), classes).permute(
        0, 3, 1, 2
    )
    cases = {
        "huge_random": 1e4 * torch.randn(2, classes, 8, 8, generator=g),
        "perfect": 200.0 * one_hot.float(),  # p = 1 exactly in float32
        "perfectly_wrong": -200.0 * one_hot.float(),
    }
    loss = cls()
    for name, logits in cases.items():
        x = logits.clone().requires_grad_()
        value = loss(x, target)
        value.backward()
        assert torch.isfinite(value), (name, value)
        assert torch.isfinite(x.grad).all(), name


@pytest.mark.parametrize("cls", [*ALL_LOSSES, BinaryCrossEntropyLoss], ids=lambda c: c.__name__)
def test_all_ignored_batch_gives_zero_and_zero_gradient(cls):
    classes = 2 if cls is BinaryCrossEntropyLoss else 5
    x = torch.randn(2, classes, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), IGNORE)
    value = cls()(x, target)
    value.backward()
    assert value.item() == 0.0
    assert torch.all(x.grad == 0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits_are_computed_in_float32(dtype):
    logits, target = make_inputs(absent_class=False)
    for cls in ALL_LOSSES:
        low = cls()(logits.to(dtype), target)
        assert low.dtype == torch.float32
        full = cls()(logits.to(dtype).double(), target)
        assert low.item() == pytest.approx(full.item(), rel=1e-5, abs=1e-6)


def test_class_weights_follow_the_module_and_stay_out_of_the_state_dict():
    loss = DiceLoss(class_weights=WEIGHTS)
    assert loss.state_dict() == {}
    loss = loss.to(torch.float32)
    logits, target = make_inputs(absent_class=False)
    assert loss(logits.float(), target).dtype == torch.float32


def test_int32_and_uint8_targets_are_accepted():
    logits, target = make_inputs(absent_class=False)
    ref = DiceLoss()(logits, target)
    for dtype in (torch.int32, torch.uint8):
        assert DiceLoss()(logits, target.to(dtype)).item() == ref.item()


@pytest.mark.parametrize(
    "make",
    [
        lambda: FocalLoss(gamma=-1.0),
        lambda: FocalLoss(gamma=float("nan")),
        lambda: DiceLoss(smooth=-1e-3),
        lambda: TverskyLoss(alpha=-0.1),
        lambda: TverskyLoss(alpha=0.0, beta=0.0),
        lambda: FocalTverskyLoss(gamma=0.0),
        lambda: ComboLoss(alpha=1.5),
        lambda: DiceFocalLoss(lambda_=2.0),
        lambda: HybridFocalLoss(focal_gamma=-1.0),
        lambda: SymmetricUnifiedFocalLoss(delta=1.2),
        lambda: SymmetricUnifiedFocalLoss(gamma=0.0),
        lambda: AsymmetricUnifiedFocalLoss(gamma=1.5),
        lambda: AsymmetricUnifiedFocalLoss(rare_classes=[-1]),
        lambda: AsymmetricUnifiedFocalLoss(rare_classes=[1, 1]),
        lambda: CrossEntropyLoss(class_weights=[-1.0, 1.0]),
        lambda: CrossEntropyLoss(class_weights=[0.0, 0.0]),
        lambda: CrossEntropyLoss(class_weights="abc"),
        lambda: CrossEntropyLoss(ignore_index=2.5),
        lambda: BinaryCrossEntropyLoss(class_weights=[1.0, 1.0, 1.0]),
    ],
)
def test_bad_arguments_are_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_bad_inputs_are_rejected_with_clear_messages():
    logits, target = make_inputs(absent_class=False)
    with pytest.raises(ValueError, match="does not fit"):
        DiceLoss()(logits, target[:, :2])
    with pytest.raises(ValueError, match="integer"):
        DiceLoss()(logits, target.double())
    bad = target.clone()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"\[7\] outside \[0, 4\)"):
        FocalLoss()(logits, bad)
    with pytest.raises(ValueError, match="class_weights has 3 entries"):
        CrossEntropyLoss(class_weights=[1.0, 1.0, 1.0])(logits, target)
    with pytest.raises(ValueError, match="rare_classes"):
        AsymmetricUnifiedFocalLoss(rare_classes=[5])(logits, target)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\) or \(B, 2, H, W\)"):
        BinaryCrossEntropyLoss()(logits, target)
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        BinaryCrossEntropyLoss()(logits[:, :1], target)


# ----------------------------------------------------------------------------- configs

LOSS_CONFIGS = sorted(p.stem for p in (CONFIG_DIR / "loss").glob("*.yaml"))
EXPECTED_CONFIGS = {
    "ce": CrossEntropyLoss,
    "bce": BinaryCrossEntropyLoss,
    "focal": FocalLoss,
    "dice": DiceLoss,
    "tversky": TverskyLoss,
    "focal_tversky": FocalTverskyLoss,
    "combo": ComboLoss,
    "dice_focal": DiceFocalLoss,
    "hybrid_focal": HybridFocalLoss,
    "unified_focal_sym": SymmetricUnifiedFocalLoss,
    "unified_focal_asym": AsymmetricUnifiedFocalLoss,
}


def test_every_loss_has_a_config():
    assert set(EXPECTED_CONFIGS) <= set(LOSS_CONFIGS)


@pytest.mark.parametrize("name", LOSS_CONFIGS)
def test_loss_config_instantiates_with_every_default_and_runs(name, tmp_path):
    cfg = compose_config("finetune", [f"loss={name}", f"paths.output_dir={tmp_path}"])
    loss = instantiate(cfg.loss)
    cls = EXPECTED_CONFIGS[name]
    assert type(loss) is cls
    # every constructor argument is spelled out, with the class's default value
    entries = OmegaConf.to_container(cfg.loss, resolve=True)
    entries.pop("_target_")
    params = inspect.signature(cls.__init__).parameters
    expected = {k: p.default for k, p in params.items() if k != "self"}
    assert entries == expected
    classes = 2 if cls is BinaryCrossEntropyLoss else 6
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, classes, 16, 16, generator=g, requires_grad=True)
    target = torch.randint(0, classes, (2, 16, 16), generator=g)
    target[:, :3] = cfg.data.ignore_index
    value = loss(x, target)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


def test_config_comments_exist():
    # each entry is documented in its config (the style rule), checked on the raw files
    for path in Path(CONFIG_DIR / "loss").glob("*.yaml"):
        for line in path.read_text().splitlines():
            if line and not line.startswith("#") and not line.startswith("_target_"):
                assert "#" in line, f"{path.name}: undocumented entry {line!r}"
