"""MemoryBank and Queue against slow one-row-at-a-time references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from glcnet.losses.memory import MemoryBank, Queue


def _unit(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


# ------------------------------------------------------------------------------------------ bank


def test_bank_starts_with_unit_rows_and_is_a_buffer():
    torch.manual_seed(0)
    bank = MemoryBank(20, 5)
    assert bank.bank.shape == (20, 5)
    assert torch.allclose(bank.bank.norm(dim=1), torch.ones(20), atol=1e-6)
    assert "bank" in bank.state_dict()
    assert not list(bank.parameters())


def _reference_update(bank, feats, idx, m):
    out = bank.clone().double()
    groups = {}
    for f, i in zip(feats.double(), idx.tolist()):
        groups.setdefault(i, []).append(f)
    for i, fs in groups.items():
        mean = sum(fs) / len(fs)
        v = m * out[i] + (1 - m) * mean
        out[i] = v / v.norm()
    return out


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_bank_update_matches_reference_with_duplicates(momentum):
    torch.manual_seed(1)
    bank = MemoryBank(12, 4, momentum=momentum)
    before = bank.bank.clone()
    feats = _unit(7, 4, seed=2)
    idx = torch.tensor([3, 0, 3, 11, 5, 0, 3])  # duplicates (two views, padded samples)
    bank.update(feats, idx)
    want = _reference_update(before, feats, idx, momentum)
    assert torch.allclose(bank.bank.double(), want, atol=1e-6)
    untouched = [i for i in range(12) if i not in idx.tolist()]
    assert torch.equal(bank.bank[untouched], before[untouched])
    if momentum == 0.0:  # replaced by the normalised mean of the rows
        assert torch.allclose(bank.bank[11], feats[3], atol=1e-6)


def test_bank_update_detaches_and_copies():
    bank = MemoryBank(6, 3)
    feats = _unit(2, 3, seed=3).requires_grad_()
    bank.update(feats * 1.0, torch.tensor([1, 4]))
    assert bank.bank.grad_fn is None and not bank.bank.requires_grad
    stored = bank.bank.clone()
    with torch.no_grad():
        feats.mul_(-5)  # changing the source afterwards must not touch the bank
    assert torch.equal(bank.bank, stored)


def test_bank_snapshot_survives_the_update_before_backward():
    """Loss on a snapshot, update, then backward: no in-place error, gradient of the old bank."""
    bank = MemoryBank(8, 4, momentum=0.0)
    f = _unit(3, 4, seed=4).requires_grad_()
    snap = bank.snapshot()
    loss = (f @ snap.T).logsumexp(1).sum()
    bank.update(f.detach(), torch.tensor([0, 1, 2]))
    loss.backward()
    ref = f.detach().clone().requires_grad_()
    (ref @ snap.T).logsumexp(1).sum().backward()
    assert torch.allclose(f.grad, ref.grad)
    assert not torch.equal(bank.bank, snap)


def test_bank_validates_inputs():
    with pytest.raises(ValueError, match="num_samples"):
        MemoryBank(0, 3)
    with pytest.raises(ValueError, match="momentum"):
        MemoryBank(4, 3, momentum=1.0)
    bank = MemoryBank(4, 3)
    with pytest.raises(ValueError, match="in \\[0, 4\\)"):
        bank.update(_unit(1, 3), torch.tensor([4]))
    with pytest.raises(ValueError, match="features"):
        bank.update(_unit(1, 5), torch.tensor([0]))
    with pytest.raises(ValueError, match="indices"):
        bank.update(_unit(2, 3), torch.tensor([0]))


def test_bank_state_dict_roundtrip():
    a = MemoryBank(5, 3)
    a.update(_unit(2, 3, seed=5), torch.tensor([0, 2]))
    b = MemoryBank(5, 3)
    assert not torch.equal(a.bank, b.bank)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.bank, b.bank)


# ----------------------------------------------------------------------------------------- queue


class _ListQueue:
    """Reference: writes keys one at a time into a ring buffer."""

    def __init__(self, keys, labels):
        self.keys, self.labels, self.ptr, self.written = keys.clone(), labels.clone(), 0, 0

    def push(self, keys, labels):
        for k, lab in zip(keys, labels):
            self.keys[self.ptr] = k
            self.labels[self.ptr] = (lab != 0).to(torch.uint8)
            self.ptr = (self.ptr + 1) % len(self.keys)
            self.written += 1


@pytest.mark.parametrize("sizes", [(3, 3, 2, 4), (4, 4, 4), (5, 19, 1), (8,)])
def test_queue_wraps_like_sequential_writes(sizes):
    torch.manual_seed(0)
    q = Queue(8, 3, label_dim=2)
    ref = _ListQueue(q.keys, q.labels)
    assert len(q) == 8 and q.is_full  # random init counts as filled
    for step, n in enumerate(sizes):
        keys = _unit(n, 3, seed=10 + step)
        labels = torch.randint(0, 3, (n, 2), generator=torch.Generator().manual_seed(step))
        q.enqueue(keys, labels)
        ref.push(keys, labels)
        assert int(q.ptr) == ref.ptr
        assert torch.equal(q.keys, ref.keys)
        assert torch.equal(q.labels, ref.labels)


def test_empty_queue_returns_only_written_rows():
    q = Queue(5, 2, init="empty")
    assert len(q) == 0 and not q.is_full
    keys, labels = q.snapshot()
    assert keys.shape == (0, 2) and labels.shape == (0, 0)
    first = _unit(3, 2, seed=1)
    q.enqueue(first)
    keys, _ = q.snapshot()
    assert torch.equal(keys, first) and not q.is_full
    second = _unit(3, 2, seed=2)
    q.enqueue(second)
    assert q.is_full and len(q) == 5
    keys, _ = q.snapshot()
    # slots 3, 4 <- second[0:2]; slot 0 <- second[2]; slots 1, 2 keep first[1:]
    assert torch.equal(keys, torch.cat([second[2:], first[1:], second[:2]]))


def test_queue_snapshot_is_a_copy_and_enqueue_detaches():
    q = Queue(4, 2)
    snap, _ = q.snapshot()
    keys = _unit(2, 2, seed=3).requires_grad_()
    q.enqueue(keys * 2)
    assert q.keys.grad_fn is None
    assert not torch.equal(snap[:2], q.keys[:2])  # the snapshot kept the old values
    stored = q.keys.clone()
    with torch.no_grad():
        keys.add_(1.0)
    assert torch.equal(q.keys, stored)


def test_queue_state_dict_roundtrip():
    a = Queue(6, 2, label_dim=3)
    a.enqueue(_unit(4, 2), torch.ones(4, 3))
    b = Queue(6, 2, label_dim=3)
    b.load_state_dict(a.state_dict())
    for name in ("keys", "labels", "ptr", "filled"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert set(a.state_dict()) == {"keys", "labels", "ptr", "filled"}


def test_queue_validates_inputs():
    with pytest.raises(ValueError, match="size"):
        Queue(0, 2)
    with pytest.raises(ValueError, match="init"):
        Queue(3, 2, init="zeros")
    with pytest.raises(ValueError, match="labels must be given"):
        Queue(3, 2, label_dim=1).enqueue(_unit(1, 2))
    with pytest.raises(ValueError, match="labels must be given"):
        Queue(3, 2).enqueue(_unit(1, 2), torch.ones(1, 1))
    with pytest.raises(ValueError, match="keys"):
        Queue(3, 2).enqueue(_unit(1, 4))
