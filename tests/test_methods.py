"""SimCLR, SupCon, NPID, MoCo and SwAV: losses against loop references (float64), closed forms,
end-to-end runs on a tiny DeepLabV3+ and the state each method must keep in its checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glcnet.methods.moco import MoCo, MoCoSupCon, moco_loss, moco_supcon_loss
from glcnet.methods.npid import NPID, estimate_log_z, npid_nce_loss, npid_softmax_loss
from glcnet.methods.simclr import SimCLR
from glcnet.methods.supcon import SupCon, box_class_histogram, class_histogram, histogram_labels
from glcnet.methods.swav import SwAV
from glcnet.models.segmenter import Segmenter, SegmenterFeatures

B, S = 4, 64


def _unit(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


def _leaf(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()


def _grad(fn, *inputs):
    inputs = [x.detach().clone().requires_grad_() for x in inputs]
    value = fn(*inputs)
    return value, torch.autograd.grad(value, inputs)


# --------------------------------------------------------------------------- loop references


def _cos(u, v):
    return float((u @ v) / (u.norm() * v.norm()))


def ref_ntxent(z_a, z_b, tau):
    z = torch.cat([z_a, z_b])
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        j = (i + n2 // 2) % n2
        den = sum(
            torch.exp(z[i] @ z[k] / (z[i].norm() * z[k].norm()) / tau) for k in range(n2) if k != i
        )
        total = total - torch.log(torch.exp(z[i] @ z[j] / (z[i].norm() * z[j].norm()) / tau) / den)
    return total / n2


def ref_supcon(feats, labels, valid, tau):
    """L_out; feats (N, V, d), labels (N, C) bool multi-hot; invalid samples fully left out."""
    n, v, _ = feats.shape
    rows = [(i, a) for i in range(n) for a in range(v) if valid[i]]
    total, count = 0.0, 0
    for i, a in rows:
        x = feats[i, a] / feats[i, a].norm()
        others = [(j, b) for j, b in rows if (j, b) != (i, a)]
        sims = {o: x @ feats[o] / feats[o].norm() / tau for o in others}
        log_den = torch.log(sum(torch.exp(s) for s in sims.values()))
        pos = [o for o in others if o[0] == i or bool((labels[i] & labels[o[0]]).any())]
        if not pos:
            continue
        total = total - sum(sims[o] - log_den for o in pos) / len(pos)
        count += 1
    return total / max(count, 1)


def ref_npid_softmax(f, bank, idx, tau):
    total = 0.0
    for a in range(len(f)):
        fa = f[a] / f[a].norm()
        den = sum(torch.exp(fa @ bank[j] / tau) for j in range(len(bank)))
        total = total - torch.log(torch.exp(fa @ bank[idx[a]] / tau) / den)
    return total / len(f)


def ref_npid_nce(f, bank, idx, noise, log_z, tau):
    n, m = len(bank), len(noise)
    z = math.exp(log_z)
    total = 0.0
    for a in range(len(f)):
        fa = f[a] / f[a].norm()
        p = torch.exp(fa @ bank[idx[a]] / tau) / z
        total = total - torch.log(p / (p + m / n))
        for j in noise.tolist():
            pj = torch.exp(fa @ bank[j] / tau) / z
            total = total - torch.log(1 - pj / (pj + m / n))
    return total / len(f)


def ref_moco(q, k, queue, tau):
    total = 0.0
    for a in range(len(q)):
        qa, ka = q[a] / q[a].norm(), k[a] / k[a].norm()
        pos = torch.exp(qa @ ka / tau)
        total = total - torch.log(pos / (pos + sum(torch.exp(qa @ u / tau) for u in queue)))
    return total / len(q)


def ref_moco_supcon(q, labels, cands, cand_labels, own, tau, variant, valid):
    total, count = 0.0, 0
    for a in range(len(q)):
        if not valid[a]:
            continue
        qa = q[a] / q[a].norm()
        logits = [qa @ c / c.norm() / tau for c in cands]
        log_den = torch.log(sum(torch.exp(x) for x in logits))
        pos = [
            j for j in range(len(cands)) if j == own[a] or bool((labels[a] & cand_labels[j]).any())
        ]
        if variant == "out":
            total = total - sum(logits[j] - log_den for j in pos) / len(pos)
        else:
            total = total - torch.log(sum(torch.exp(logits[j] - log_den) for j in pos) / len(pos))
        count += 1
    return total / count


def ref_swav(z_views, protos, tau, eps, iters):
    from test_swav import ref_swav_loss

    c = protos / protos.norm(dim=1, keepdim=True)
    scores = [(zv / zv.norm(dim=1, keepdim=True)) @ c.T for zv in z_views]
    return ref_swav_loss(scores, tau, eps, iters)


# ------------------------------------------------------------------------ embedding-level losses


def test_ntxent_identical_embeddings_give_log_2n_minus_1():
    n = 5
    method_loss = SimCLR(_tiny_model(), temperature=0.3).loss
    z = torch.ones(n, 8, dtype=torch.float64)
    assert method_loss(z, z).item() == pytest.approx(math.log(2 * n - 1), rel=1e-12)
    z_a, z_b = _leaf(n, 8, seed=1), _leaf(n, 8, seed=2)
    loss, grads = _grad(method_loss, z_a, z_b)
    ref, ref_grads = _grad(lambda a, b: ref_ntxent(a, b, 0.3), z_a, z_b)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-8, atol=1e-12)


def test_npid_softmax_loss_and_gradient():
    f, bank = _leaf(6, 5, seed=3), _unit(11, 5, seed=4)
    idx = torch.tensor([0, 3, 3, 10, 7, 1])
    loss, (g,) = _grad(lambda x: npid_softmax_loss(x, bank, idx, 0.2), f)
    ref, (rg,) = _grad(lambda x: ref_npid_softmax(x, bank, idx, 0.2), f)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(g, rg, rtol=1e-8, atol=1e-12)


def test_npid_softmax_identical_bank_gives_log_n():
    f = _unit(3, 4, seed=5)
    bank = f[0].expand(9, 4).clone()  # K = 8 negatives + the positive, all equal to f
    loss = npid_softmax_loss(f[:1].expand(3, 4), bank, torch.tensor([0, 4, 8]), 0.07)
    assert loss.item() == pytest.approx(math.log(9), rel=1e-12)


def test_npid_nce_loss_and_gradient():
    f, bank = _leaf(5, 4, seed=6), _unit(13, 4, seed=7)
    idx, noise = torch.tensor([0, 12, 5, 5, 2]), torch.tensor([1, 2, 2, 9, 12, 0, 4])
    log_z = 2.3
    loss, (g,) = _grad(lambda x: npid_nce_loss(x, bank, idx, noise, log_z, 0.5), f)
    ref, (rg,) = _grad(lambda x: ref_npid_nce(x, bank, idx, noise, log_z, 0.5), f)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(g, rg, rtol=1e-8, atol=1e-12)


def test_npid_log_z_estimate():
    logits = torch.randn(4, 6, dtype=torch.float64)
    want = math.log(50 * float(logits.exp().mean()))  # Z = n * mean exp
    assert estimate_log_z(logits, 50).item() == pytest.approx(want, rel=1e-12)
    huge = torch.full((2, 3), 500.0)  # exp overflows; the log-domain estimate does not
    assert estimate_log_z(huge, 10).item() == pytest.approx(500 + math.log(10), rel=1e-6)


def test_npid_losses_finite_at_small_tau_and_bf16():
    f, bank = _leaf(4, 8, seed=8, dtype=torch.float32), _unit(20, 8, seed=9, dtype=torch.float32)
    idx = torch.tensor([0, 1, 2, 3])
    noise = torch.arange(20)
    for loss in (
        npid_softmax_loss(f, bank, idx, 0.005),
        npid_nce_loss(f, bank, idx, noise, estimate_log_z(f @ bank.T / 0.005, 20), 0.005),
    ):
        (g,) = torch.autograd.grad(loss, f)
        assert torch.isfinite(loss) and torch.isfinite(g).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = npid_softmax_loss(f.bfloat16(), bank, idx, 0.07)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_moco_loss_and_gradient():
    q, k, queue = _leaf(5, 6, seed=10), _leaf(5, 6, seed=11), _unit(9, 6, seed=12)
    loss, (gq,) = _grad(lambda x: moco_loss(x, k, queue, 0.2), q)
    ref, (rq,) = _grad(lambda x: ref_moco(x, k, queue, 0.2), q)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(gq, rq, rtol=1e-8, atol=1e-12)
    k_leaf = k.detach().clone().requires_grad_()
    moco_loss(q, k_leaf, queue).backward()
    assert k_leaf.grad is None  # keys carry no gradient


def test_moco_identical_keys_give_log_queue_plus_one():
    q = _unit(1, 4, seed=13).expand(3, 4)
    assert moco_loss(q, q, q[:1].expand(7, 4), 0.2).item() == pytest.approx(math.log(8), rel=1e-12)


@pytest.mark.parametrize("variant", ["out", "in"])
def test_moco_supcon_loss_and_gradient(variant):
    q, cands = _leaf(4, 5, seed=14), _unit(9, 5, seed=15)
    labels = torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 0]]).bool()
    cand_labels = torch.randint(0, 2, (9, 3), generator=torch.Generator().manual_seed(0)).bool()
    own, valid = torch.tensor([0, 1, 2, 3]), labels.any(1)
    loss, (g,) = _grad(
        lambda x: moco_supcon_loss(x, labels, cands, cand_labels, own, 0.3, variant, valid), q
    )
    ref, (rg,) = _grad(
        lambda x: ref_moco_supcon(x, labels, cands, cand_labels, own, 0.3, variant, valid), q
    )
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    assert torch.allclose(g, rg, rtol=1e-8, atol=1e-12)


def test_moco_losses_finite_at_small_tau_and_bf16():
    q, k, queue = _leaf(4, 8, seed=16, dtype=torch.float32), _unit(4, 8), _unit(6, 8, seed=17)
    labels = torch.eye(4, 3, dtype=torch.bool)
    cands, cand_labels = torch.cat([k, queue]).float(), torch.cat([labels, labels[:2].repeat(3, 1)])
    for tau in (0.005, 0.2):
        for loss in (
            moco_loss(q, k.float(), queue.float(), tau),
            moco_supcon_loss(q, labels, cands, cand_labels, torch.arange(4), tau, "in"),
        ):
            (g,) = torch.autograd.grad(loss, q)
            assert torch.isfinite(loss) and torch.isfinite(g).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = moco_loss(q.bfloat16(), k.bfloat16(), queue.bfloat16(), 0.2)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


# ------------------------------------------------------------------------------- SupCon labels


def test_class_histograms_and_labels_match_loops():
    g = torch.Generator().manual_seed(1)
    mask = torch.randint(0, 4, (3, 9, 7), generator=g)
    mask[mask == 3] = 255
    mask[2] = 255
    boxes = torch.tensor(
        [[[0, 0, 9, 7], [2, 1, 5, 4]], [[3, 3, 3, 6], [8, 0, 9, 7]], [[0, 0, 2, 2]] * 2]
    )
    hist = class_histogram(mask, 3)
    box = box_class_histogram(mask, boxes, 3)
    for b in range(3):
        for c in range(3):
            assert hist[b, c] == int((mask[b] == c).sum())
            for r in range(2):
                r0, c0, r1, c1 = boxes[b, r].tolist()
                assert box[b, r, c] == int((mask[b, r0:r1, c0:c1] == c).sum())
    counts = torch.tensor([[5, 5, 1], [0, 2, 9], [0, 0, 0], [10, 1, 0]])
    dominant = histogram_labels(counts, "dominant")
    assert dominant.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0]]  # tie -> lowest
    multi = histogram_labels(counts, "multilabel", min_fraction=0.15)
    assert multi.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 0], [1, 0, 0]]  # 2/11 >= .15, 1/11 not


def test_label_helpers_validate():
    with pytest.raises(ValueError, match="outside"):
        class_histogram(torch.tensor([[[0, 7]]]), 6)
    with pytest.raises(ValueError, match="boxes"):
        box_class_histogram(
            torch.zeros(1, 4, 4, dtype=torch.long), torch.tensor([[[0, 0, 5, 1]]]), 6
        )
    with pytest.raises(ValueError, match="label mode"):
        histogram_labels(torch.zeros(1, 3), "majority")


# ---------------------------------------------------------------------------- methods end to end


class TinySegmenter(nn.Module):
    """A few convolutions with the interface the methods use (fast stand-in for DeepLabV3+)."""

    decoder_channels = 8
    num_classes = 6

    def __init__(self, in_channels: int = 4) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(in_channels, 8, 3, stride=4, padding=1)
        self.aspp = nn.Conv2d(8, 8, 3, stride=4, padding=1)
        self.fuse = nn.Conv2d(8, 8, 1)

    def features(self, x: torch.Tensor, with_decoder: bool = True) -> SegmenterFeatures:
        low = torch.relu(self.encoder(x))  # (B, 8, S/4, S/4)
        aspp = self.aspp(low)  # (B, 8, S/16, S/16)
        if not with_decoder:
            return SegmenterFeatures(aspp=aspp, decoder=None)
        up = F.interpolate(aspp, size=low.shape[-2:], mode="nearest")
        return SegmenterFeatures(aspp=aspp, decoder=self.fuse(low + up))

    def decoder_output_layers(self) -> list[nn.Module]:
        return [self.fuse]


def _tiny_model() -> TinySegmenter:
    torch.manual_seed(0)
    return TinySegmenter()


def _segmenter() -> Segmenter:
    torch.manual_seed(0)
    return Segmenter("resnet18", 4, 6)


def _batch(seed=0, crops=False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij"))
    mask = torch.full((B, S, S), 1)
    mask[0, :20] = 2  # dominant 1, 2 covers 31 %
    mask[1] = 255  # no label: left out
    mask[2] = 3
    mask[2, :, :10] = 1  # dominant 3, 1 covers 16 %
    mask[3, :, 40:] = 255  # dominant 1
    batch = {
        "view_a": torch.rand(B, 4, S, S, generator=g),
        "view_b": torch.rand(B, 4, S, S, generator=g),
        "index_a": grid.expand(B, 2, S, S).clone(),
        "index_b": grid.flip(-1).expand(B, 2, S, S).clone(),
        "regions": torch.tensor([[0, 0, 16, 16], [16, 16, 40, 40], [40, 0, 64, 20], [0, 0, 0, 0]])
        .expand(B, 4, 4)
        .clone(),
        "region_valid": torch.tensor([True, True, True, False]).expand(B, 4).clone(),
        "index": torch.tensor([0, 3, 5, 2]),
        "mask": mask,
    }
    if crops:
        batch["crops"] = torch.rand(B, 2, 4, 32, 32, generator=g)
    return batch


def _capture(module):
    out = []
    module.register_forward_hook(lambda m, i, o: out.append(o.detach().double()))
    return out


METHODS = {
    "simclr": lambda m: SimCLR(m),
    "supcon": lambda m: SupCon(m),
    "supcon_region": lambda m: SupCon(m, level="region", label_mode="multilabel"),
    "npid": lambda m: NPID(m, num_samples=6),
    "npid_nce": lambda m: NPID(m, num_samples=6, loss="nce", nce_negatives=5),
    "moco": lambda m: MoCo(m, queue_size=10, momentum=0.9),
    "moco_supcon": lambda m: MoCoSupCon(m, queue_size=10, symmetric=True),
    "swav": lambda m: SwAV(m, num_prototypes=5, queue_length=4),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_method_forward_backward(name):
    method = METHODS[name](_segmenter())
    out = method(_batch(crops=name == "swav"))
    assert out["loss"].shape == () and torch.isfinite(out["loss"])
    out["loss"].backward()
    method.on_after_backward()
    enc = [p.grad for p in method.model.encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in enc)
    assert any(g.abs().sum() > 0 for g in enc)
    _assert_every_trainable_parameter_has_a_gradient(method, uses_decoder=name == "supcon_region")
    method.on_train_step_end()


@pytest.mark.parametrize("name", [*METHODS, "glcnet"])
def test_methods_keep_their_positive_pairs_for_the_health_diagnostics(name):
    from glcnet.methods.glcnet import GLCNet

    build = METHODS.get(name, lambda m: GLCNet(m, global_head_dims=(16, 8), local_head_dims=(8, 8)))
    method = build(_segmenter())
    method(_batch(crops=name == "swav"))
    pairs = method.positive_pairs()
    local = name in ("glcnet", "supcon_region")
    assert set(pairs) == (
        {"global", "local"} if name == "glcnet" else {"local" if local else "global"}
    )
    for branch, (z_a, z_b) in pairs.items():
        rows = B * 3 if branch == "local" else B  # 3 valid regions per image
        if name == "moco_supcon":
            rows = 2 * B  # symmetric: queries of both views
        assert z_a.shape == z_b.shape and z_a.shape[0] == rows and not z_a.requires_grad
    if name == "simclr":  # the pairs are the projections the loss contrasts
        z = _capture(method.head)
        method(_batch())
        z_a, z_b = method.positive_pairs()["global"]
        assert torch.allclose(z_a.double(), z[0][:B]) and torch.allclose(z_b.double(), z[0][B:])


def _assert_every_trainable_parameter_has_a_gradient(method, uses_decoder: bool) -> None:
    """Plain DDP needs it: the decoder layers a loss does not reach must be frozen, not idle."""
    missing = [k for k, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    trainable = {
        p.requires_grad for m in method.model.decoder_output_layers() for p in m.parameters()
    }
    assert trainable == {uses_decoder}


@pytest.mark.parametrize(
    "kwargs, uses_decoder",
    [({}, True), ({"local_head_dims": None}, False), ({"global_pooling": None}, True)],
)
def test_glcnet_variants_train_every_trainable_parameter(kwargs, uses_decoder):
    from glcnet.methods.glcnet import GLCNet

    method = GLCNet(_segmenter(), **kwargs)
    method(_batch())["loss"].backward()
    _assert_every_trainable_parameter_has_a_gradient(method, uses_decoder)


def test_simclr_method_loss_is_ntxent_of_its_projections():
    method = SimCLR(_tiny_model(), temperature=0.5)
    z = _capture(method.head)
    loss = method(_batch())["loss"]
    assert loss.item() == pytest.approx(ref_ntxent(z[0][:B], z[0][B:], 0.5).item(), rel=1e-5)


def test_supcon_tile_method_matches_reference():
    method = SupCon(_tiny_model(), label_mode="multilabel", min_class_fraction=0.2)
    z = _capture(method.head)
    out = method(_batch())
    labels = torch.tensor([[0, 1, 1, 0, 0, 0], [0] * 6, [0, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0]])
    feats = torch.stack([z[0][:B], z[0][B:]], 1)
    ref = ref_supcon(feats, labels.bool(), labels.any(1), 0.1)
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-5)
    assert out["labelled_fraction"].item() == pytest.approx(0.75)


def test_supcon_region_method_matches_reference():
    method = SupCon(_tiny_model(), level="region", temperature=0.2)
    z = _capture(method.head)
    batch = _batch()
    out = method(batch)
    labels, valid = [], []
    for b in range(B):
        for r in range(4):
            r0, c0, r1, c1 = batch["regions"][b, r].tolist()
            box = batch["mask"][b, r0:r1, c0:c1]
            counts = [int((box == c).sum()) for c in range(6)]
            hot = [0] * 6
            if sum(counts):
                hot[counts.index(max(counts))] = 1
            labels.append(hot)
            valid.append(bool(batch["region_valid"][b, r]) and sum(counts) > 0)
    feats = torch.stack([z[0], z[1]], 2).flatten(0, 1)
    ref = ref_supcon(feats, torch.tensor(labels).bool(), valid, 0.2)
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-5)


def test_npid_method_loss_and_bank_update():
    method = NPID(_tiny_model(), num_samples=6, temperature=0.1, bank_momentum=0.5)
    z = _capture(method.head)
    before = method.memory.bank.clone().double()
    batch = _batch()
    loss = method(batch)["loss"]
    f = F.normalize(z[0], dim=1)
    idx = batch["index"].repeat(2)
    assert loss.item() == pytest.approx(ref_npid_softmax(f, before, idx, 0.1).item(), rel=1e-5)
    want = before.clone()
    for i in batch["index"].tolist():
        rows = f[idx == i]
        v = 0.5 * before[i] + 0.5 * rows.mean(0)
        want[i] = v / v.norm()
    assert torch.allclose(method.memory.bank.double(), want, atol=1e-5)
    loss.backward()  # the in-place bank update did not break the graph


def test_npid_nce_estimates_z_once_and_view_a_only():
    method = NPID(_tiny_model(), num_samples=6, loss="nce", nce_negatives=4, use_both_views=False)
    assert torch.isnan(method.log_z)
    first = method(_batch())["log_z"].item()
    assert math.isfinite(first)
    method(_batch(seed=1))
    assert method.log_z.item() == first  # a constant after the first batch
    with pytest.raises(KeyError, match="index"):
        method({k: v for k, v in _batch().items() if k != "index"})


def test_moco_method_loss_queue_and_momentum():
    method = MoCo(_tiny_model(), queue_size=10, momentum=0.9, temperature=0.2)
    assert all(not p.requires_grad for p in method.key_model.parameters())
    q, k = _capture(method.head), _capture(method.key_head)
    ref_queue = method.queue.keys.clone().double()
    for step in range(3):  # 3 x 4 keys through a queue of 10: wraps around
        queue_before = method.queue.keys.clone().double()
        loss = method(_batch(seed=step))["loss"]
        keys = F.normalize(k[-1], dim=1)
        ref = ref_moco(q[-1], keys, queue_before, 0.2)
        assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
        for j in range(B):
            ref_queue[(4 * step + j) % 10] = keys[j]
        assert torch.allclose(method.queue.keys.double(), ref_queue, atol=1e-6)
    assert int(method.queue.ptr) == 2
    # momentum update: theta_k <- 0.9 theta_k + 0.1 theta_q
    with torch.no_grad():
        for p in method.model.parameters():
            p.add_(0.5)
    key_before = [p.clone() for p in method.key_model.parameters()]
    method.on_train_step_end()
    for p_k, old, p_q in zip(method.key_model.parameters(), key_before, method.model.parameters()):
        assert torch.allclose(p_k, 0.9 * old + 0.1 * p_q, atol=1e-6)


def test_moco_supcon_method_matches_reference():
    method = MoCoSupCon(_tiny_model(), queue_size=6, temperature=0.3, label_mode="dominant")
    assert MoCoSupCon.requires_labels and not MoCo.requires_labels
    q, k = _capture(method.head), _capture(method.key_head)
    method.queue.labels[:3, 1] = 1  # three queued keys labelled class 1
    queue, queue_labels = method.queue.snapshot()
    out = method(_batch())
    labels = torch.tensor([[0, 1, 0, 0, 0, 0], [0] * 6, [0, 0, 0, 1, 0, 0], [0, 1, 0, 0, 0, 0]])
    keys = F.normalize(k[0], dim=1)
    ref = ref_moco_supcon(
        q[0],
        labels.bool(),
        torch.cat([keys, queue.double()]),
        torch.cat([labels, queue_labels]).bool(),
        torch.arange(B),
        0.3,
        "out",
        labels.any(1),
    )
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.equal(method.queue.labels[:4], labels.to(torch.uint8))  # enqueued with labels


def test_swav_method_loss_prototypes_and_queue():
    method = SwAV(_tiny_model(), num_prototypes=5, queue_length=8, queue_start_step=1)
    assert torch.allclose(method.prototypes.weight.norm(dim=1), torch.ones(5), atol=1e-6)
    z = _capture(method.head)
    out = method(_batch(crops=True))
    views = [z[0][:B], z[0][B:], *z[1].reshape(B, 2, -1).unbind(1)]
    ref = ref_swav(views, method.prototypes.weight.detach().double(), 0.1, 0.05, 3)
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-5)
    assert len(method.queues[0]) == 0  # step 0 < queue_start_step
    with torch.no_grad():
        method.prototypes.weight.mul_(3.0)
    method.on_train_step_end()
    assert torch.allclose(method.prototypes.weight.norm(dim=1), torch.ones(5), atol=1e-6)
    assert int(method.step) == 1
    for step in range(2):  # 2 x 4 embeddings fill the queue of 8; only then it is used
        assert method(_batch(seed=step))["queue_in_use"].item() == 0.0
        method.on_train_step_end()
    assert all(q.is_full for q in method.queues)
    assert method(_batch(seed=5))["queue_in_use"].item() == 1.0


def test_swav_frozen_prototypes_get_no_gradient():
    method = SwAV(_tiny_model(), num_prototypes=5, freeze_prototypes_steps=1)
    method(_batch())["loss"].backward()
    assert method.prototypes.weight.grad is not None  # in the graph (plain DDP reduces it) ...
    method.on_after_backward()
    assert method.prototypes.weight.grad is None  # ... then dropped: the optimizer skips it
    before = method.prototypes.weight.detach().clone()
    torch.optim.Adam(method.parameters(), lr=0.1).step()
    assert torch.equal(method.prototypes.weight, before)
    method.on_train_step_end()
    method(_batch())["loss"].backward()
    method.on_after_backward()
    assert method.prototypes.weight.grad is not None


def test_methods_keep_their_state_in_the_checkpoint():
    cases = {
        "npid": (lambda: NPID(_tiny_model(), num_samples=6, loss="nce"), ["memory.bank", "log_z"]),
        "moco": (
            lambda: MoCo(_tiny_model(), queue_size=10),
            ["queue.keys", "queue.ptr", "key_head.mlp.0.weight"],
        ),
        "swav": (
            lambda: SwAV(_tiny_model(), num_prototypes=5, queue_length=4),
            ["prototypes.weight", "queues.0.keys", "queues.1.filled", "step"],
        ),
    }
    for build, keys in cases.values():
        trained = build()
        for seed in range(2):
            trained(_batch(seed=seed))
            trained.on_train_step_end()
        state = trained.state_dict()
        assert all(k in state for k in keys), keys
        assert any(k.startswith("key_model.") for k in state) == isinstance(trained, MoCo)
        fresh = build()
        assert not all(torch.equal(fresh.state_dict()[k], state[k]) for k in keys)
        fresh.load_state_dict(state)
        for key in keys:
            assert torch.equal(fresh.state_dict()[key], state[key]), key


def test_methods_validate_arguments_and_batches():
    model = _tiny_model()
    with pytest.raises(ValueError, match="label_mode"):
        SupCon(model, label_mode="majority")
    with pytest.raises(ValueError, match="level"):
        SupCon(model, level="pixel")
    with pytest.raises(ValueError, match="loss"):
        NPID(model, num_samples=4, loss="nce2")
    with pytest.raises(ValueError, match="momentum"):
        MoCo(model, momentum=1.5)
    with pytest.raises(ValueError, match="num_prototypes"):
        SwAV(model, num_prototypes=0)
    with pytest.raises(KeyError, match="mask"):
        SupCon(model)({k: v for k, v in _batch().items() if k != "mask"})
    with pytest.raises(ValueError, match="crops"):
        SwAV(model, num_prototypes=3)({**_batch(), "crops": torch.rand(B, 4, 32, 32)})
    assert SupCon.requires_labels and NPID.requires_num_samples
    assert not SimCLR.requires_labels and not SwAV.requires_num_samples
