"""Two gloo processes on CPU give the losses and gradients of one process on the whole batch.

One spawn (two ranks, unequal shares of the batch) runs every scenario and saves its results; the
tests below compare them with single-process computations done here.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from gloo import run_ranks
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from glcnet.losses import NTXentLoss, SupConLoss, gather_with_grad, world_info
from glcnet.losses.distributed import all_gather_cat

WORLD = 2
SPLIT = (5, 3)  # samples per rank: unequal on purpose
N = sum(SPLIT)
TIMEOUT_S = 90

NTXENT_CASES = {  # name -> constructor kwargs
    "standard": {"temperature": 0.3},
    "official": {"temperature": 0.3, "positive_in_denominator": False},
    "chunked": {"temperature": 0.3, "chunk_size": 3},
}
SUPCON_CASES = {
    "out": {"temperature": 0.2, "variant": "out"},
    "in": {"temperature": 0.2, "variant": "in"},
}


def _slice(rank: int) -> slice:
    start = sum(SPLIT[:rank])
    return slice(start, start + SPLIT[rank])


def _inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "z_a": torch.randn(N, 6, generator=g, dtype=torch.float64),
        "z_b": torch.randn(N, 6, generator=g, dtype=torch.float64),
        # 4 valid pairs on rank 0, 1 on rank 1: the global count must be all-reduced
        "valid": torch.tensor([True, False, True, True, True, False, True, False]),
        "feats": torch.randn(N, 2, 5, generator=g, dtype=torch.float64),
        "labels": torch.tensor([0, 1, 2, 0, 1, 1, 0, 2]),
        "weights": torch.randn(N, 4, generator=g, dtype=torch.float64),
        "x": torch.randn(N, 2, 7, generator=g),
    }


def _linear() -> nn.Linear:
    torch.manual_seed(123)
    return nn.Linear(7, 4)


def _ddp_ntxent(model: nn.Module, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    z = model(x.reshape(-1, x.shape[-1])).reshape(x.shape[0], 2, -1)
    return NTXentLoss(0.5)(z[:, 0], z[:, 1], valid)


def _ddp_supcon(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    z = model(x.reshape(-1, x.shape[-1])).reshape(x.shape[0], 2, -1)
    return SupConLoss(0.2)(z, labels=labels)


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
        data = _inputs()
        sl = _slice(rank)
        res: dict[str, object] = {"world_info": world_info()}
        # gather_with_grad: forward = concatenation, backward = sum over ranks of the slice grads
        x = data["weights"][sl].clone().requires_grad_()
        gathered = gather_with_grad(x)
        (grad,) = torch.autograd.grad((gathered * (rank + 1) * data["weights"]).sum(), x)
        res["gathered"], res["gather_grad"] = gathered.detach(), grad
        res["valid_gathered"] = all_gather_cat(data["valid"][sl])
        # NT-Xent with a valid mask whose counts differ per rank
        for name, kwargs in NTXENT_CASES.items():
            z_a = data["z_a"][sl].clone().requires_grad_()
            z_b = data["z_b"][sl].clone().requires_grad_()
            loss = NTXentLoss(**kwargs)(z_a, z_b, data["valid"][sl])
            res[f"ntxent_{name}"] = (loss.detach(), *torch.autograd.grad(loss, (z_a, z_b)))
        for name, kwargs in SUPCON_CASES.items():
            feats = data["feats"][sl].clone().requires_grad_()
            loss = SupConLoss(**kwargs)(feats, labels=data["labels"][sl], valid=data["valid"][sl])
            res[f"supcon_{name}"] = (loss.detach(), *torch.autograd.grad(loss, feats))
        # DDP: parameter gradients (averaged over ranks by DDP) equal the single-process ones
        model = DistributedDataParallel(_linear())
        _ddp_ntxent(model, data["x"][sl], data["valid"][sl]).backward()
        res["ddp_ntxent"] = [p.grad.clone() for p in model.parameters()]
        model = DistributedDataParallel(_linear())
        _ddp_supcon(model, data["x"][sl], data["labels"][sl]).backward()
        res["ddp_supcon"] = [p.grad.clone() for p in model.parameters()]
        torch.save(res, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("dist")
    return run_ranks(_worker, WORLD, out, TIMEOUT_S)


def test_world_info_and_gather(ranks):
    data = _inputs()
    assert world_info() == (0, 1)  # not initialised here
    for rank, res in enumerate(ranks):
        assert res["world_info"] == (rank, WORLD)
        assert torch.equal(res["gathered"], data["weights"])
        assert torch.equal(res["valid_gathered"], data["valid"])
        # d/dx_r of sum_r' (r'+1) * <W, gather(x)> = (1 + 2) * W[slice_r]
        assert torch.allclose(res["gather_grad"], 3 * data["weights"][_slice(rank)])


def _check_loss_and_grads(ranks, key, full_loss, full_grads):
    # the mean of the ranks' local losses is the global loss
    mean_loss = sum(r[key][0] for r in ranks) / WORLD
    assert mean_loss.item() == pytest.approx(full_loss.item(), rel=1e-10)
    # each rank's local gradient (summed over ranks by the gather) / world = the global gradient
    for rank, res in enumerate(ranks):
        for local, full in zip(res[key][1:], full_grads):
            assert torch.allclose(local / WORLD, full[_slice(rank)], rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("name", list(NTXENT_CASES))
def test_ntxent_distributed_equals_single_process(ranks, name):
    data = _inputs()
    z_a, z_b = data["z_a"].clone().requires_grad_(), data["z_b"].clone().requires_grad_()
    loss = NTXentLoss(**NTXENT_CASES[name])(z_a, z_b, data["valid"])
    grads = torch.autograd.grad(loss, (z_a, z_b))
    _check_loss_and_grads(ranks, f"ntxent_{name}", loss.detach(), grads)
    # the two ranks' losses differ (different anchor counts), so the scaling is really exercised
    assert ranks[0][f"ntxent_{name}"][0] != pytest.approx(ranks[1][f"ntxent_{name}"][0].item())


@pytest.mark.parametrize("name", list(SUPCON_CASES))
def test_supcon_distributed_equals_single_process(ranks, name):
    data = _inputs()
    feats = data["feats"].clone().requires_grad_()
    loss = SupConLoss(**SUPCON_CASES[name])(feats, labels=data["labels"], valid=data["valid"])
    grads = torch.autograd.grad(loss, feats)
    _check_loss_and_grads(ranks, f"supcon_{name}", loss.detach(), grads)


def test_ddp_parameter_gradients_equal_single_process(ranks):
    data = _inputs()
    model = _linear()
    _ddp_ntxent(model, data["x"], data["valid"]).backward()
    for rank, res in enumerate(ranks):
        for got, want in zip(res["ddp_ntxent"], model.parameters()):
            assert torch.allclose(got, want.grad, rtol=1e-4, atol=1e-6), rank
    model = _linear()
    _ddp_supcon(model, data["x"], data["labels"]).backward()
    for res in ranks:
        for got, want in zip(res["ddp_supcon"], model.parameters()):
            assert torch.allclose(got, want.grad, rtol=1e-4, atol=1e-6)
