"""info_nce and NTXentLoss against loop references and closed forms; the loss benchmark."""

from __future__ import annotations

import math

import pytest
import torch

from glcnet.bench import bench_contrastive_losses
from glcnet.bench.losses import naive_ntxent, peak_memory_mb
from glcnet.losses import NTXentLoss, info_nce

# ----------------------------------------------------------------------------------------------
# Reference: NT-Xent written pair by pair from the formula (seed 000), float64 scalars, no logsumexp.
# ----------------------------------------------------------------------------------------------


def _cos(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * v).sum() / (torch.sqrt((u * u).sum()) * torch.sqrt((v * v).sum()))


def ref_ntxent(z_a, z_b, tau, positive_in_denominator=True, valid=None):
    """Mean over valid anchors i of -log(exp(s_ij/tau) / sum_{k != i [, k != j], k valid} ...)."""
    n = z_a.shape[0]
    zs = [z_a[i] for i in range(n)] + [z_b[i] for i in range(n)]
    ok = [True] * n if valid is None else [bool(x) for x in valid]
    ok = ok + ok
    terms = []
    for i in range(2 * n):
        if not ok[i]:
            continue
        j = (i + n) % (2 * n)
        numerator = torch.exp(_cos(zs[i], zs[j]) / tau)
        denominator = 0.0
        n_neg = 0
        for k in range(2 * n):
            if k == i or not ok[k] or (k == j and not positive_in_denominator):
                continue
            denominator = denominator + torch.exp(_cos(zs[i], zs[k]) / tau)
            n_neg += k != j
        if not positive_in_denominator and n_neg == 0:
            continue  # no negative: the official variant is undefined, the anchor is left out
        terms.append(-torch.log(numerator / denominator))
    if not terms:
        return z_a.sum() * 0.0
    return sum(terms) / len(terms)


def _pair(n, d, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z_a = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    z_b = torch.randn(n, d, generator=g, dtype=dtype).requires_grad_()
    return z_a, z_b


def _value_and_grads(loss_fn, z_a, z_b, *args):
    loss = loss_fn(z_a, z_b, *args)
    grads = torch.autograd.grad(loss, (z_a, z_b))
    return loss.detach(), [g.detach() for g in grads]


# ----------------------------------------------------------------------------------------------
# info_nce core
# ----------------------------------------------------------------------------------------------


def test_info_nce_hand_computed():
    logits = torch.tensor([[1.0, 2.0, 3.0]]).log()  # exp(logits) = 1, 2, 3
    pos = torch.tensor([[False, True, False]])
    # standard: -log(2 / (1 + 2 + 3)) = log 3; negatives only: -log(2 / (1 + 3)) = log 2
    assert info_nce(logits, pos, None).item() == pytest.approx(math.log(3.0))
    assert info_nce(logits, pos, None, positive_in_denominator=False).item() == pytest.approx(
        math.log(2.0)
    )
    # an excluded entry does not count, however large: -log(2 / (1 + 2)) = log 1.5
    big = torch.tensor([[0.0, math.log(2.0), 1e4]], requires_grad=True)
    excl = torch.tensor([[False, False, True]])
    loss = info_nce(big, pos, excl)
    assert loss.item() == pytest.approx(math.log(1.5))
    (grad,) = torch.autograd.grad(loss, big)
    assert torch.isfinite(grad).all() and grad[0, 2] == 0
    # the gradient is softmax minus the one-hot positive
    assert torch.allclose(grad[0, :2], torch.tensor([1 / 3, 2 / 3 - 1]))


def test_info_nce_several_positives_out_and_in():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]]).log()  # total 10
    pos = torch.tensor([[False, True, True, False]])
    out = info_nce(logits, pos, None, variant="out")
    inn = info_nce(logits, pos, None, variant="in")
    assert out.item() == pytest.approx(-(math.log(0.2) + math.log(0.3)) / 2)
    assert inn.item() == pytest.approx(-math.log((0.2 + 0.3) / 2))
    assert inn.item() < out.item()
    # positive left out of the denominator (all positives): -(log(2/5) + log(3/5)) / 2
    out_neg = info_nce(logits, pos, None, positive_in_denominator=False)
    assert out_neg.item() == pytest.approx(-(math.log(2 / 5) + math.log(3 / 5)) / 2)


def test_info_nce_anchors_without_positive_are_left_out():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, generator=g, requires_grad=True)
    pos = torch.zeros(4, 6, dtype=torch.bool)
    pos[0, 1] = pos[2, 5] = pos[3, 0] = True
    self_mask = torch.zeros(4, 6, dtype=torch.bool)
    self_mask[3, 0] = True  # its only positive is excluded: no positive left
    per = info_nce(logits, pos, self_mask, reduction="none")
    assert torch.isnan(per[1]) and torch.isnan(per[3])
    expected = [
        -(logits[i, j] - torch.logsumexp(logits[i][~self_mask[i]], 0)) for i, j in [(0, 1), (2, 5)]
    ]
    assert torch.allclose(per[[0, 2]], torch.stack(expected))
    mean = info_nce(logits, pos, self_mask)
    assert mean.item() == pytest.approx(per[[0, 2]].mean().item())
    assert info_nce(logits, pos, self_mask, reduction="sum").item() == pytest.approx(
        per[[0, 2]].sum().item()
    )
    (grad,) = torch.autograd.grad(mean, logits)
    assert torch.isfinite(grad).all() and (grad[[1, 3]] == 0).all()
    # no anchor at all: 0, not NaN
    none = torch.zeros(4, 6, dtype=torch.bool)
    assert info_nce(logits, none, None).item() == 0.0


def test_info_nce_rejects_bad_input():
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="shape"):
        info_nce(logits, torch.zeros(2, 4, dtype=torch.bool), None)
    with pytest.raises(TypeError, match="bool"):
        info_nce(logits, torch.zeros(2, 3), None)
    with pytest.raises(ValueError, match="reduction"):
        info_nce(logits, torch.zeros(2, 3, dtype=torch.bool), None, reduction="avg")
    with pytest.raises(ValueError, match="logits"):
        info_nce(torch.zeros(3), torch.zeros(3, dtype=torch.bool), None)


# ----------------------------------------------------------------------------------------------
# NTXentLoss vs. reference
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pid", [True, False])
@pytest.mark.parametrize("tau", [0.5, 0.1])
def test_ntxent_matches_reference_values_and_grads(pid, tau):
    z_a, z_b = _pair(6, 5, seed=1)
    loss, grads = _value_and_grads(NTXentLoss(tau, pid), z_a, z_b)
    ref, ref_grads = _value_and_grads(lambda a, b: ref_ntxent(a, b, tau, pid), z_a, z_b)
    assert loss.dtype == torch.float64
    assert torch.allclose(loss, ref, rtol=1e-10, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-8, atol=1e-12)
    # fp32 inputs: fp32 result, same numbers to fp32 precision
    a32, b32 = (t.detach().float().requires_grad_() for t in (z_a, z_b))
    loss32, grads32 = _value_and_grads(NTXentLoss(tau, pid), a32, b32)
    assert loss32.dtype == torch.float32
    assert loss32.item() == pytest.approx(ref.item(), rel=1e-5)
    for g, r in zip(grads32, ref_grads):
        assert torch.allclose(g.double(), r, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("pid", [True, False])
def test_ntxent_valid_mask_matches_reference(pid):
    z_a, z_b = _pair(7, 4, seed=2)
    valid = torch.tensor([True, False, True, True, False, True, True])
    loss, grads = _value_and_grads(NTXentLoss(0.3, pid), z_a, z_b, valid)
    ref, ref_grads = _value_and_grads(lambda a, b: ref_ntxent(a, b, 0.3, pid, valid), z_a, z_b)
    assert torch.allclose(loss, ref, rtol=1e-10)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-8, atol=1e-12)
        assert (g[~valid] == 0).all()  # invalid pairs are neither anchors nor candidates
    # dropping the invalid rows gives the same loss
    dropped = NTXentLoss(0.3, pid)(z_a[valid], z_b[valid])
    assert torch.allclose(loss, dropped.detach(), rtol=1e-12)


def test_ntxent_degenerate_valid_masks():
    z_a, z_b = _pair(4, 3, seed=3)
    nothing = torch.zeros(4, dtype=torch.bool)
    loss = NTXentLoss(0.5)(z_a, z_b, nothing)
    assert loss.item() == 0.0
    grads = torch.autograd.grad(loss, (z_a, z_b))
    assert all((g == 0).all() for g in grads)
    one = torch.tensor([False, False, True, False])
    # a single pair: its positive is the whole denominator -> exactly 0
    assert NTXentLoss(0.5)(z_a, z_b, one).item() == pytest.approx(0.0, abs=1e-12)
    # negatives-only variant without any negative: undefined, left out -> 0 (not -inf), no NaN
    loss = NTXentLoss(0.5, False)(z_a, z_b, one)
    assert loss.item() == 0.0
    grads = torch.autograd.grad(loss, (z_a, z_b))
    assert all((g == 0).all() for g in grads)


@pytest.mark.parametrize("chunk", [1, 3, 5, 8, 100])
@pytest.mark.parametrize("pid", [True, False])
def test_ntxent_chunked_equals_unchunked(chunk, pid):
    z_a, z_b = _pair(9, 6, seed=4)
    valid = torch.ones(9, dtype=torch.bool)
    valid[[2, 7]] = False
    full, full_grads = _value_and_grads(NTXentLoss(0.4, pid), z_a, z_b, valid)
    chunked, chunked_grads = _value_and_grads(
        NTXentLoss(0.4, pid, chunk_size=chunk), z_a, z_b, valid
    )
    assert torch.allclose(full, chunked, rtol=1e-12)
    for g, c in zip(full_grads, chunked_grads):
        assert torch.allclose(g, c, rtol=1e-10, atol=1e-14)
    with torch.no_grad():  # the no-grad path (no checkpointing) agrees too
        assert torch.allclose(NTXentLoss(0.4, pid, chunk_size=chunk)(z_a, z_b, valid), full)


def test_ntxent_chunked_keeps_peak_memory_low():
    """The chunk logits are not all kept for the backward pass (measured with the profiler)."""
    z_a, z_b = _pair(512, 32, seed=5, dtype=torch.float32)

    def step(loss_fn):
        def run():
            z_a.grad = z_b.grad = None
            loss_fn(z_a, z_b).backward()

        return run

    cpu = torch.device("cpu")
    full = peak_memory_mb(step(NTXentLoss(0.5)), cpu)
    chunked = peak_memory_mb(step(NTXentLoss(0.5, chunk_size=64)), cpu)
    one_logit_matrix = (2 * 512) ** 2 * 4 / 2**20
    assert full >= one_logit_matrix  # the measurement sees the (2N, 2N) buffers
    assert chunked < 0.35 * full, (chunked, full)


# ----------------------------------------------------------------------------------------------
# Closed forms and numerics
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("tau", [0.07, 0.5, 2.0])
def test_identical_embeddings_give_log_2n_minus_1(n, tau):
    v = torch.randn(1, 8)
    z = v.repeat(n, 1) * torch.rand(n, 1).add(0.5)  # scale does not matter after normalisation
    loss = NTXentLoss(tau)(z, z.clone())
    assert loss.item() == pytest.approx(math.log(2 * n - 1), abs=1e-5)
    if n > 1:
        assert NTXentLoss(tau, False)(z, z.clone()).item() == pytest.approx(
            math.log(2 * n - 2), abs=1e-5
        )


@pytest.mark.parametrize("tau", [1.0, 0.5, 0.1, 0.01])
def test_orthogonal_aligned_pairs_closed_form(tau):
    n, d = 5, 8
    basis = torch.eye(d, dtype=torch.float64)[:n]
    z_a = basis * torch.rand(n, 1, dtype=torch.float64).add(0.5)
    z_b = basis * torch.rand(n, 1, dtype=torch.float64).add(0.5)
    # positive similarity 1, every negative 0, self excluded: l = log(1 + (2N-2) exp(-1/tau))
    expected = math.log1p((2 * n - 2) * math.exp(-1 / tau))
    official = math.log(2 * n - 2) - 1 / tau
    assert NTXentLoss(tau)(z_a, z_b).item() == pytest.approx(expected, rel=1e-9, abs=1e-14)
    assert NTXentLoss(tau, False)(z_a, z_b).item() == pytest.approx(official, rel=1e-12)
    # fp32: cancellation in logsumexp(...) - 1/tau costs about eps32 / tau absolute
    loss32 = NTXentLoss(tau)(z_a.float(), z_b.float()).item()
    assert loss32 == pytest.approx(expected, abs=2e-7 / tau)
    if tau == 0.01:
        assert 0 <= loss32 < 1e-30  # the limit tau -> 0 is 0


def test_small_temperature_is_finite_and_accurate_in_fp32():
    z_a, z_b = _pair(6, 4, seed=6)
    # strongly aligned pairs -> logits near +-100
    z_b = (z_a.detach() + 0.05 * z_b.detach()).requires_grad_()
    ref = ref_ntxent(z_a, z_b, 0.01).item()
    for pid in (True, False):
        a32, b32 = (t.detach().float().requires_grad_() for t in (z_a, z_b))
        loss = NTXentLoss(0.01, pid)(a32, b32)
        grads = torch.autograd.grad(loss, (a32, b32))
        assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
        if pid:
            assert loss.item() == pytest.approx(ref, rel=1e-3, abs=1e-3)
    # the plain formulation overflows there (why we use logsumexp)
    with torch.no_grad():
        same = torch.randn(4, 8)
        assert not torch.isfinite(naive_ntxent(same, same, 0.005))


def test_autocast_bf16_inputs_are_finite_and_close_to_fp32():
    g = torch.Generator().manual_seed(7)
    a = torch.randn(8, 16, generator=g).bfloat16().requires_grad_()
    b = torch.randn(8, 16, generator=g).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = NTXentLoss(0.1, chunk_size=5)(a, b)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    grads = torch.autograd.grad(loss, (a, b))
    assert all(gr.dtype == torch.bfloat16 and torch.isfinite(gr).all() for gr in grads)
    fp32 = NTXentLoss(0.1)(a.detach().float(), b.detach().float())
    assert loss.item() == pytest.approx(fp32.item(), rel=1e-6)
    ref = ref_ntxent(a.detach().double(), b.detach().double(), 0.1)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_matches_plain_formulation():
    z_a, z_b = _pair(32, 16, seed=8)
    assert torch.allclose(NTXentLoss(0.5)(z_a, z_b), naive_ntxent(z_a, z_b, 0.5), rtol=1e-12)


def test_constructor_and_input_validation():
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(0.0)
    with pytest.raises(ValueError, match="temperature"):
        NTXentLoss(float("nan"))
    with pytest.raises(ValueError, match="chunk_size"):
        NTXentLoss(chunk_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        NTXentLoss(chunk_size=2.5)
    loss = NTXentLoss()
    with pytest.raises(ValueError, match="z_a and z_b"):
        loss(torch.zeros(3, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match="valid"):
        loss(torch.zeros(3, 4), torch.zeros(3, 4), torch.ones(3))
    assert "chunk_size=None" in repr(loss)


# ----------------------------------------------------------------------------------------------
# Benchmark function
# ----------------------------------------------------------------------------------------------


def test_bench_contrastive_losses_runs():
    rows = bench_contrastive_losses(sizes=(64,), dim=16, repeats=1, chunk_size=32)
    assert [r["variant"] for r in rows] == ["plain", "ntxent", "ntxent_chunk32"]
    for r in rows:
        assert r["N"] == 64 and r["device"] == "cpu"
        assert r["ms"] > 0 and math.isfinite(r["peak_MB"]) and r["peak_MB"] > 0
        assert r["abs_diff_vs_plain"] < 1e-4
        assert r["ms_vs_plain"] == pytest.approx(r["ms"] / rows[0]["ms"])
        assert r["mem_vs_plain"] == pytest.approx(r["peak_MB"] / rows[0]["peak_MB"])
    assert rows[0]["loss"] > 0
