"""Sinkhorn-Knopp codes and the SwAV loss against loop references from the formulas (float64)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from glcnet.losses.swav import SwAVLoss, sinkhorn_knopp


def _scores(n, k, d=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=1)
    c = F.normalize(torch.randn(k, d, generator=g, dtype=dtype), dim=1)
    return z @ c.T


def ref_sinkhorn(scores, eps, iters):
    """The official algorithm on Q = exp(scores / eps)^T (K x B), element by element."""
    b, k = scores.shape
    q = [[math.exp(float(scores[i, j]) / eps) for i in range(b)] for j in range(k)]
    total = sum(sum(row) for row in q)
    q = [[v / total for v in row] for row in q]
    for _ in range(iters):
        for j in range(k):  # each prototype totals 1/K
            s = sum(q[j])
            q[j] = [v / s / k for v in q[j]]
        for i in range(b):  # each sample totals 1/B
            s = sum(q[j][i] for j in range(k))
            for j in range(k):
                q[j][i] = q[j][i] / s / b
    return torch.tensor([[q[j][i] * b for j in range(k)] for i in range(b)], dtype=torch.float64)


@pytest.mark.parametrize(("eps", "iters"), [(0.05, 3), (0.5, 1), (0.01, 5)])
def test_sinkhorn_matches_loop_reference(eps, iters):
    s = _scores(9, 4, seed=1)
    got = sinkhorn_knopp(s, eps, iters)
    assert torch.allclose(got, ref_sinkhorn(s, eps, iters), rtol=1e-9, atol=1e-12)


def test_sinkhorn_shared_rows_count_like_batch_rows():
    s = _scores(10, 3, seed=2)
    got = sinkhorn_knopp(s[6:], 0.1, 3, shared_scores=s[:6])
    assert torch.allclose(got, ref_sinkhorn(s, 0.1, 3)[6:], rtol=1e-9, atol=1e-12)


def test_sinkhorn_marginals():
    s = _scores(12, 4, seed=3)
    q = sinkhorn_knopp(s, 0.05, 3)
    assert torch.allclose(q.sum(1), torch.ones(12, dtype=q.dtype), atol=1e-12)  # codes sum to 1
    assert (q >= 0).all()
    q = sinkhorn_knopp(s, 0.3, 500)  # prototype totals converge to B / K
    assert torch.allclose(q.sum(0), torch.full((4,), 3.0, dtype=q.dtype), atol=1e-6)
    assert torch.allclose(q.sum(1), torch.ones(12, dtype=q.dtype), atol=1e-12)


def test_sinkhorn_uniform_for_constant_scores():
    q = sinkhorn_knopp(torch.zeros(5, 7), 0.05, 3)
    assert torch.allclose(q, torch.full((5, 7), 1 / 7))


def test_sinkhorn_is_finite_at_small_epsilon_and_under_bf16():
    s = _scores(16, 5, seed=4, dtype=torch.float32)
    q = sinkhorn_knopp(s, 1e-3, 3)  # exp(2 / 1e-3) would overflow any float
    assert torch.isfinite(q).all()
    assert torch.allclose(q.sum(1), torch.ones(16), atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q16 = sinkhorn_knopp(s.bfloat16(), 0.05, 3)
    assert q16.dtype == torch.float32 and torch.isfinite(q16).all()
    assert torch.allclose(q16.sum(1), torch.ones(16), atol=1e-5)


def test_sinkhorn_has_no_gradient_and_validates():
    s = _scores(4, 3).requires_grad_()
    assert not sinkhorn_knopp(s).requires_grad
    with pytest.raises(ValueError, match="iterations"):
        sinkhorn_knopp(s, iterations=0)
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn_knopp(s, epsilon=0.0)
    with pytest.raises(ValueError, match="shared_scores"):
        sinkhorn_knopp(s, shared_scores=torch.zeros(2, 5))


def ref_swav_loss(scores, tau, eps, iters, queue=None):
    """1/2 sum_s 1/(V-1) sum_{t != s} mean_n [-sum_k q_s log softmax(scores_t / tau)]."""
    v, (n, k) = len(scores), scores[0].shape
    total = 0.0
    for s in (0, 1):
        full = scores[s].detach() if queue is None else torch.cat([queue[s], scores[s].detach()])
        q = ref_sinkhorn(full, eps, iters)[-n:]
        for t in range(v):
            if t == s:
                continue
            for i in range(n):
                lse = torch.log(sum(torch.exp(scores[t][i, j] / tau) for j in range(k)))
                for j in range(k):
                    total = total - q[i, j] * (scores[t][i, j] / tau - lse) / (n * (v - 1) * 2)
    return total


@pytest.mark.parametrize("views", [2, 4])
def test_swav_loss_and_gradient_match_reference(views):
    scores = [_scores(5, 3, seed=10 + i).requires_grad_() for i in range(views)]
    loss = SwAVLoss(0.1, 0.05, 3)(scores)
    grads = torch.autograd.grad(loss, scores)
    ref_in = [s.detach().clone().requires_grad_() for s in scores]
    ref = ref_swav_loss(ref_in, 0.1, 0.05, 3)
    ref_grads = torch.autograd.grad(ref, ref_in)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    for got, want in zip(grads, ref_grads):
        assert torch.allclose(got, want, rtol=1e-8, atol=1e-12)


def test_swav_loss_with_queue_matches_reference():
    scores = [_scores(4, 3, seed=20 + i) for i in range(3)]
    queue = [_scores(6, 3, seed=30), _scores(6, 3, seed=31)]
    loss = SwAVLoss(0.2, 0.1, 3)(scores, queue)
    assert loss.item() == pytest.approx(ref_swav_loss(scores, 0.2, 0.1, 3, queue).item(), rel=1e-10)
    no_queue = SwAVLoss(0.2, 0.1, 3)(scores)
    assert loss.item() != pytest.approx(no_queue.item())


def test_swav_loss_constant_scores_give_log_k():
    scores = [torch.zeros(6, 5), torch.zeros(6, 5)]
    assert SwAVLoss()(scores).item() == pytest.approx(math.log(5), rel=1e-6)


def test_swav_loss_finite_at_small_temperature_and_bf16():
    scores = [_scores(8, 4, seed=40 + i, dtype=torch.float32).requires_grad_() for i in range(2)]
    loss = SwAVLoss(temperature=1e-3, epsilon=1e-3)(scores)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(s.grad).all() for s in scores)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss16 = SwAVLoss()([s.detach().bfloat16().requires_grad_() for s in scores])
    assert loss16.dtype == torch.float32 and torch.isfinite(loss16)


def test_swav_loss_validates():
    with pytest.raises(ValueError, match="two views"):
        SwAVLoss()([torch.zeros(2, 3)])
    with pytest.raises(ValueError, match="same"):
        SwAVLoss()([torch.zeros(2, 3), torch.zeros(3, 3)])
    with pytest.raises(ValueError, match="temperature"):
        SwAVLoss(temperature=0)
