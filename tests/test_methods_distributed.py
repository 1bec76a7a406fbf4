"""Two gloo processes on CPU give the losses, gradients and bank / queue states of one process.

One spawn (two ranks, unequal shares of the batch) runs every scenario twice in a row (the second
step reads the bank / queue the first one wrote) and saves the results; the tests compare them with
single-process runs on the concatenated batch:

- embedding level: each method's loss function on float64 leaves (loss, gradient, codes, stores);
- method level: each method on a tiny conv net wrapped in DistributedDataParallel, with an SGD step
  after each of the two steps (loss, parameter gradients after DDP's averaging, parameters after the
  steps, every buffer afterwards). GLCNet runs on a net with batch norm: plain DDP on CPU normalises
  with each rank's own batch statistics (SyncBatchNorm needs GPUs), so its single-process reference
  feeds the net each rank's share of the batch separately (:class:`BatchNormSegmenter`); the
  per-rank running statistics are not compared.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from gloo import run_ranks
from test_methods import TinySegmenter
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from glcnet.losses.distributed import all_gather_cat
from glcnet.losses.memory import MemoryBank, Queue
from glcnet.losses.swav import SwAVLoss, sinkhorn_knopp
from glcnet.methods.glcnet import GLCNet
from glcnet.methods.moco import MoCo, MoCoSupCon, moco_loss, moco_supcon_loss
from glcnet.methods.npid import NPID, estimate_log_z, npid_nce_loss, npid_softmax_loss
from glcnet.methods.simclr import SimCLR
from glcnet.methods.supcon import SupCon
from glcnet.methods.swav import SwAV
from glcnet.models.segmenter import SegmenterFeatures

WORLD = 2
SPLIT = (3, 2)  # samples per rank: unequal on purpose
N = sum(SPLIT)
S = 16  # view side for the tiny net
TIMEOUT_S = 120
STEPS = 2
LR = 0.02  # SGD step after each step

GLCNET_HEADS = {"global_head_dims": (8, 4), "local_head_dims": (8, 4)}
METHODS = {  # name -> constructor of a method around a fresh tiny net
    "simclr": lambda m: SimCLR(m, head_dims=(8, 4)),
    "supcon": lambda m: SupCon(m, head_dims=(8, 4), label_mode="multilabel"),
    "supcon_region": lambda m: SupCon(m, head_dims=(8, 4), level="region"),
    "npid": lambda m: NPID(m, num_samples=7, head_dims=(4,), temperature=0.2),
    "npid_nce": lambda m: NPID(m, num_samples=7, head_dims=(4,), loss="nce", nce_negatives=5),
    "moco": lambda m: MoCo(m, head_dims=(8, 4), queue_size=7, momentum=0.5),
    "moco_symmetric": lambda m: MoCo(m, head_dims=(8, 4), queue_size=4, symmetric=True),
    "moco_supcon": lambda m: MoCoSupCon(m, head_dims=(8, 4), queue_size=6, symmetric=True),
    "swav": lambda m: SwAV(m, head_dims=(8, 4), num_prototypes=3, queue_length=5),
    "swav_frozen": lambda m: SwAV(m, head_dims=(8, 4), num_prototypes=3, freeze_prototypes_steps=1),
    "glcnet": lambda m: GLCNet(m, **GLCNET_HEADS, temperature=0.3, lambda_=0.3, local_chunk_size=4),
    "glcnet_two_passes": lambda m: GLCNet(
        m, "mean", **GLCNET_HEADS, lambda_=0.7, positive_in_denominator=False, concat_views=False
    ),
}
BATCH_NORM = ("glcnet", "glcnet_two_passes")  # methods run on BatchNormSegmenter
BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


class BatchNormSegmenter(nn.Module):
    """A tiny net with batch norm after each convolution (encoder, ASPP stand-in, decoder).

    Args:
        rank_split: None: one batch, as on each DDP rank. A tuple of per-rank sample counts: the
            single-process reference of plain DDP, which runs each rank's share of the batch (of
            each view, for a batch of both views) through the net on its own, so batch norm sees
            the same statistics as on that rank; the outputs are put back in batch order.
    """

    decoder_channels = 8
    num_classes = 6

    def __init__(self, rank_split: tuple[int, ...] | None = None) -> None:
        super().__init__()

        def block(c_in: int, stride: int, kernel: int = 3) -> nn.Sequential:
            conv = nn.Conv2d(c_in, 8, kernel, stride=stride, padding=kernel // 2, bias=False)
            return nn.Sequential(conv, nn.BatchNorm2d(8), nn.ReLU())

        self.encoder, self.aspp, self.fuse = block(4, 2), block(8, 2), block(8, 1, 1)
        self.rank_split = rank_split

    def _features(self, x: torch.Tensor, with_decoder: bool) -> SegmenterFeatures:
        low = self.encoder(x)  # (B, 8, S/2, S/2)
        aspp = self.aspp(low)  # (B, 8, S/4, S/4)
        if not with_decoder:
            return SegmenterFeatures(aspp=aspp, decoder=None)
        up = F.interpolate(aspp, size=low.shape[-2:], mode="nearest")
        return SegmenterFeatures(aspp=aspp, decoder=self.fuse(low + up))

    def features(self, x: torch.Tensor, with_decoder: bool = True) -> SegmenterFeatures:
        if self.rank_split is None:
            return self._features(x, with_decoder)
        n = sum(self.rank_split)
        views = x.shape[0] // n  # 2 for a batch of both views, else 1
        starts = [sum(self.rank_split[:r]) for r in range(len(self.rank_split))]
        order = torch.cat(
            [
                torch.arange(start, start + count) + v * n
                for start, count in zip(starts, self.rank_split)
                for v in range(views)
            ]
        )
        parts, at = [], 0
        for count in self.rank_split:
            parts.append(self._features(x[order[at : at + views * count]], with_decoder))
            at += views * count
        back = torch.argsort(order)
        aspp = torch.cat([p.aspp for p in parts])[back]
        decoder = torch.cat([p.decoder for p in parts])[back] if with_decoder else None
        return SegmenterFeatures(aspp=aspp, decoder=decoder)

    def decoder_output_layers(self) -> list[nn.Module]:
        return [self.fuse]


def _slice(rank: int) -> slice:
    start = sum(SPLIT[:rank])
    return slice(start, start + SPLIT[rank])


def _batch(step: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    grid = torch.stack(torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij"))
    mask = torch.randint(0, 3, (N, S, S), generator=g)
    mask[:, : 2 + 3 * step] = 1  # class 1 dominates some tiles
    mask[1] = 255  # one unlabelled tile
    return {
        "view_a": torch.rand(N, 4, S, S, generator=g),
        "view_b": torch.rand(N, 4, S, S, generator=g),
        "index_a": grid.expand(N, 2, S, S).clone(),
        "index_b": grid.flip(-2).expand(N, 2, S, S).clone(),
        "regions": torch.tensor([[0, 0, 8, 8], [4, 8, 12, 16], [8, 0, 16, 8]])
        .expand(N, 3, 4)
        .clone(),
        "region_valid": torch.tensor([[True, True, step == 0]] * N),
        "index": torch.tensor([[0, 3, 5, 6, 2], [1, 3, 4, 0, 6]][step]),
        "mask": mask,
        "crops": torch.rand(N, 2, 4, 8, 8, generator=g),
    }


def _run_method(name: str, batches, wrap=None, rank_split=None) -> dict[str, object]:
    """Two training steps (SGD after each); ``rank_split``: the reference of plain DDP's per-rank
    batch norm (see :class:`BatchNormSegmenter`)."""
    torch.manual_seed(0)
    net = BatchNormSegmenter(rank_split) if name in BATCH_NORM else TinySegmenter()
    method = METHODS[name](net)
    model = method if wrap is None else wrap(method)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=LR)
    res: dict[str, list] = {"loss": [], "grads": []}
    res["initial"] = {k: p.detach().clone() for k, p in method.named_parameters()}
    for step, batch in enumerate(batches):
        optimizer.zero_grad()
        torch.manual_seed(100 + step)  # NCE noise
        loss = model(batch)["loss"]
        loss.backward()
        method.on_after_backward()
        res["loss"].append(loss.detach())
        res["grads"].append(
            {k: p.grad.clone() for k, p in method.named_parameters() if p.grad is not None}
        )
        optimizer.step()
        method.on_train_step_end()
    res["params"] = {k: p.detach().clone() for k, p in method.named_parameters()}
    res["buffers"] = {k: v.clone() for k, v in method.named_buffers()}
    return res


def _embeddings() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return {
        "f": torch.randn(N, 4, generator=g, dtype=torch.float64),
        "k": torch.randn(N, 4, generator=g, dtype=torch.float64),
        "bank": F.normalize(torch.randn(9, 4, generator=g, dtype=torch.float64), dim=1),
        "idx": torch.tensor([0, 3, 3, 8, 5]),
        "noise": torch.tensor([1, 2, 2, 7, 4, 0]),
        "labels": torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0]], dtype=torch.uint8),
        "queue": F.normalize(torch.randn(6, 4, generator=g, dtype=torch.float64), dim=1),
        "queue_labels": torch.tensor([[1, 0], [0, 0], [0, 1], [1, 0], [0, 0], [1, 1]]),
        "protos": F.normalize(torch.randn(3, 4, generator=g, dtype=torch.float64), dim=1),
        "views": torch.randn(4, N, 4, generator=g, dtype=torch.float64),
    }


def _embedding_losses(data, sl, offset: int, gathered_keys) -> dict[str, tuple]:
    """Every loss function on this process's slice; (loss, grads...) per case."""
    out = {}
    f = data["f"][sl].clone().requires_grad_()
    loss = npid_softmax_loss(f, data["bank"], data["idx"][sl], 0.3)
    out["npid_softmax"] = (loss.detach(), *torch.autograd.grad(loss, f))
    log_z = estimate_log_z(F.normalize(f.detach(), dim=1) @ data["bank"][data["noise"]].T / 0.3, 9)
    loss = npid_nce_loss(f, data["bank"], data["idx"][sl], data["noise"], log_z, 0.3)
    out["npid_nce"] = (loss.detach(), log_z, *torch.autograd.grad(loss, f))
    loss = moco_loss(f, data["k"][sl], data["queue"], 0.3)
    out["moco"] = (loss.detach(), *torch.autograd.grad(loss, f))
    labels = data["labels"][sl]
    loss = moco_supcon_loss(
        f,
        labels,
        torch.cat([gathered_keys(data["k"][sl]), data["queue"]]),
        torch.cat([gathered_keys(data["labels"][sl]), data["queue_labels"].to(torch.uint8)]),
        offset + torch.arange(len(f)),
        0.3,
        valid=labels.bool().any(1),
    )
    out["moco_supcon"] = (loss.detach(), *torch.autograd.grad(loss, f))
    views = data["views"][:, sl].clone().requires_grad_()
    scores = list(F.normalize(views, dim=-1) @ data["protos"].T)
    queue_scores = [data["queue"][:3] @ data["protos"].T, data["queue"][3:] @ data["protos"].T]
    loss = SwAVLoss(0.2, 0.1, 3)(scores, queue_scores)
    codes = sinkhorn_knopp(scores[0].detach(), 0.1, 3, queue_scores[0])
    out["swav"] = (loss.detach(), codes, *torch.autograd.grad(loss, views))
    return out


def _stores(data, sl) -> dict[str, torch.Tensor]:
    bank = MemoryBank(9, 4, momentum=0.3).double()
    bank.bank.copy_(data["bank"])
    bank.update(F.normalize(data["f"][sl], dim=1), data["idx"][sl])
    queue = Queue(4, 4, label_dim=2).double()  # 5 keys into 4 slots: wraps around
    queue.enqueue(data["k"][sl], data["labels"][sl])
    return {"bank": bank.bank, "queue": queue.keys, "queue_labels": queue.labels, "ptr": queue.ptr}


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=TIMEOUT_S),
    )
    try:
        sl = _slice(rank)
        data = _embeddings()
        res: dict[str, object] = {
            "losses": _embedding_losses(data, sl, sl.start, all_gather_cat),
            "stores": _stores(data, sl),
        }
        batches = [{k: v[sl] for k, v in _batch(step).items()} for step in range(STEPS)]
        # plain DDP: it fails if a trainable parameter gets no gradient
        wrap = lambda m: DistributedDataParallel(m)  # noqa: E731
        res["methods"] = {name: _run_method(name, batches, wrap) for name in METHODS}
        torch.save(res, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("dist_methods")
    return run_ranks(_worker, WORLD, out, TIMEOUT_S)


@pytest.fixture(scope="module")
def single() -> dict:
    data = _embeddings()
    full = slice(0, N)
    return {
        "losses": _embedding_losses(data, full, 0, lambda x: x),
        "stores": _stores(data, full),
    }


@pytest.mark.parametrize("case", ["npid_softmax", "npid_nce", "moco", "moco_supcon", "swav"])
def test_loss_functions_equal_single_process(ranks, single, case):
    full = single["losses"][case]
    n_extra = {"npid_nce": 1, "swav": 1}.get(case, 0)  # log Z / codes ride along
    # the mean of the ranks' local losses is the global loss
    mean = sum(r["losses"][case][0] for r in ranks) / WORLD
    assert mean.item() == pytest.approx(full[0].item(), rel=1e-10)
    for rank, res in enumerate(ranks):
        got = res["losses"][case]
        if case == "npid_nce":  # Z estimated over both ranks' samples
            assert got[1].item() == pytest.approx(full[1].item(), rel=1e-12)
        if case == "swav":  # codes from the Sinkhorn over the whole batch (+ queue)
            assert torch.allclose(got[1], sinkhorn_codes_of_rank(rank), rtol=1e-10, atol=1e-14)
        grad, full_grad = got[1 + n_extra], full[1 + n_extra]
        local = full_grad[:, _slice(rank)] if case == "swav" else full_grad[_slice(rank)]
        # each rank's gradient / world (DDP's averaging) is the single-process gradient
        assert torch.allclose(grad / WORLD, local, rtol=1e-9, atol=1e-13)
    assert ranks[0]["losses"][case][0] != pytest.approx(ranks[1]["losses"][case][0].item())


def sinkhorn_codes_of_rank(rank: int) -> torch.Tensor:
    data = _embeddings()
    scores = F.normalize(data["views"][0], dim=-1) @ data["protos"].T
    codes = sinkhorn_knopp(scores, 0.1, 3, data["queue"][:3] @ data["protos"].T)
    return codes[_slice(rank)]


def test_bank_and_queue_identical_on_all_ranks(ranks, single):
    for res in ranks:
        for key, want in single["stores"].items():
            assert torch.allclose(res["stores"][key], want, atol=1e-12), key


@pytest.mark.parametrize("name", list(METHODS))
def test_methods_under_ddp_equal_single_process(ranks, name):
    want = _run_method(name, [_batch(step) for step in range(STEPS)], rank_split=SPLIT)
    for step in range(STEPS):
        mean = sum(r["methods"][name]["loss"][step] for r in ranks) / WORLD
        assert mean.item() == pytest.approx(want["loss"][step].item(), rel=1e-5), step
        for res in ranks:
            grads = res["methods"][name]["grads"][step]
            assert grads.keys() == want["grads"][step].keys()
            for key, g in grads.items():
                assert torch.allclose(g, want["grads"][step][key], rtol=1e-4, atol=1e-6), key
    moved = [k for k, p in want["params"].items() if not torch.equal(p, want["initial"][k])]
    assert "model.encoder.0.weight" in moved or "model.encoder.weight" in moved  # a step was taken
    for res in ranks:
        params = res["methods"][name]["params"]
        assert params.keys() == want["params"].keys()
        for key, p in params.items():
            assert torch.allclose(p, want["params"][key], rtol=1e-5, atol=1e-6), key
        buffers = res["methods"][name]["buffers"]
        assert buffers.keys() == want["buffers"].keys()
        for key, b in buffers.items():
            if name in BATCH_NORM and key.rsplit(".", 1)[-1] in BN_STATS:
                continue  # plain DDP keeps per-rank batch-norm statistics
            if b.is_floating_point():
                assert torch.allclose(b, want["buffers"][key], atol=1e-5, equal_nan=True), key
            else:
                assert torch.equal(b, want["buffers"][key]), key
