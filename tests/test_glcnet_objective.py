"""GLCNet's objective against references written from its formula.

``L = lambda * NT-Xent(global) + (1 - lambda) * NT-Xent(matched regions, valid only)``: the heads'
outputs are captured with forward hooks and fed to a loop-based float64 NT-Xent (2N views,
temperature tau, the positive in the denominator by default). The region features are rebuilt in
the test from the index maps alone: each view's decoder features averaged over exactly the view
pixels whose source pixel lies in the box, so pooling one view's regions with the other view's
pixels (wrong positive pairs) fails here.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_methods import TinySegmenter

from glcnet.methods.glcnet import GLCNet

B, S, SOURCE = 3, 32, 80  # pairs, view side, source tile side
LAMBDA, TAU = 0.3, 0.3  # lambda != 0.5: swapping lambda and 1 - lambda changes the loss
# (row0, col0, h, w) crop, horizontal flip, quarter turns: view a then view b of each pair
VIEWS = (
    ((4, 6, 32, 32, False, 0), (10, 2, 48, 48, True, 1)),
    ((20, 16, 56, 40, True, 3), (0, 8, 64, 64, False, 2)),
    ((8, 8, 40, 60, False, 1), (16, 20, 36, 36, True, 0)),
)
REGIONS = (  # source boxes [row0, col0, row1, col1), the last slot of pair 0 invalid
    ((12, 12, 24, 24), (26, 20, 34, 36), (12, 26, 20, 32), (30, 10, 40, 20)),
    ((24, 18, 36, 30), (40, 30, 60, 44), (22, 32, 30, 40), (50, 20, 60, 28)),
    ((20, 22, 30, 32), (32, 40, 44, 52), (24, 34, 30, 46), (36, 22, 44, 30)),
)
VALID = ((True, True, True, False), (True, True, True, True), (True, False, True, True))


def view_index(row0: int, col0: int, h: int, w: int, flip: bool, rot: int) -> torch.Tensor:
    """(2, S, S) source (row, col) of every pixel of a crop resized to S (nearest), then flipped
    horizontally and turned ``rot`` quarter turns counter-clockwise."""
    y = torch.arange(S)
    rows = row0 + torch.div((2 * y + 1) * h, 2 * S, rounding_mode="floor")
    cols = col0 + torch.div((2 * y + 1) * w, 2 * S, rounding_mode="floor")
    index = torch.stack(torch.meshgrid(rows, cols, indexing="ij"))
    if flip:
        index = index.flip(-1)
    return torch.rot90(index, rot, dims=(-2, -1))


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    source = torch.rand(B, 4, SOURCE, SOURCE, generator=g)
    batch: dict[str, torch.Tensor] = {}
    for key in ("a", "b"):
        index = torch.stack([view_index(*pair[key == "b"]) for pair in VIEWS])
        views = torch.stack([source[i][:, index[i, 0], index[i, 1]] for i in range(B)])
        batch[f"view_{key}"], batch[f"index_{key}"] = views, index
    batch["regions"] = torch.tensor(REGIONS)
    batch["region_valid"] = torch.tensor(VALID)
    return batch


def ref_ntxent(z_a: torch.Tensor, z_b: torch.Tensor, tau: float, positive_in_den: bool = True):
    """NT-Xent over the 2N views by loops: anchor i, positive j = i +- N, candidates k != i."""
    z = [v / v.norm() for v in torch.cat([z_a, z_b]).double()]
    n2, total = len(z), 0.0
    for i in range(n2):
        j = (i + n2 // 2) % n2
        den = sum(
            torch.exp(z[i] @ z[k] / tau)
            for k in range(n2)
            if k != i and (positive_in_den or k != j)
        )
        total = total - torch.log(torch.exp(z[i] @ z[j] / tau) / den)
    return total / n2


def ref_region_features(decoder: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, R, C) mean decoder feature over the view pixels whose source pixel lies in each box.

    Args:
        decoder: (B, C, h, w) decoder features of one view (h = S / 4: a view pixel (y, x) falls in
            feature cell (y * h // S, x * w // S)).
        index: (B, 2, S, S) source pixel of every view pixel.
    """
    n, c, h, w = decoder.shape
    out = torch.zeros(n, len(REGIONS[0]), c, dtype=torch.float64)
    for b in range(n):
        for r, (r0, c0, r1, c1) in enumerate(REGIONS[b]):
            if not VALID[b][r]:
                continue
            cells = [
                decoder[b, :, y * h // S, x * w // S].double()
                for y in range(S)
                for x in range(S)
                if r0 <= index[b, 0, y, x] < r1 and c0 <= index[b, 1, y, x] < c1
            ]
            assert len(cells) >= 9, (b, r)  # the box is seen by several pixels of this view
            out[b, r] = torch.stack(cells).mean(0)
    return out


def capture(module: torch.nn.Module, inputs: bool = False) -> list[torch.Tensor]:
    """Outputs (or first inputs) of every call of ``module``; outputs keep their gradient."""
    seen: list[torch.Tensor] = []

    def hook(_, args, out):
        if inputs:
            seen.append(args[0].detach())
        else:
            out.retain_grad()
            seen.append(out)

    module.register_forward_hook(hook)
    return seen


def make_method(**kwargs) -> GLCNet:
    torch.manual_seed(0)
    kwargs = {"global_head_dims": (8, 6), "local_head_dims": (8, 6), **kwargs}
    return GLCNet(TinySegmenter(), lambda_=LAMBDA, temperature=TAU, **kwargs)


@pytest.mark.parametrize(
    "concat_views, chunk, positive_in_den",
    [(True, None, True), (False, 5, True), (True, 4096, False)],
)
def test_loss_is_lambda_weighted_ntxent_of_the_heads_outputs(concat_views, chunk, positive_in_den):
    method = make_method(
        concat_views=concat_views, local_chunk_size=chunk, positive_in_denominator=positive_in_den
    )
    z_global, z_local = capture(method.global_head), capture(method.local_head)
    batch = make_batch()
    out = method(batch)
    assert len(z_global) == 1 and len(z_local) == 2  # one global call (2B), regions of a then b
    (zg,), (za, zb) = z_global, z_local
    valid = batch["region_valid"]
    ref_global = ref_ntxent(zg[:B].detach(), zg[B:].detach(), TAU, positive_in_den)
    ref_local = ref_ntxent(za[valid].detach(), zb[valid].detach(), TAU, positive_in_den)
    assert out["loss_global"].item() == pytest.approx(ref_global.item(), rel=1e-5)
    assert out["loss_local"].item() == pytest.approx(ref_local.item(), rel=1e-5)
    ref_total = LAMBDA * ref_global + (1 - LAMBDA) * ref_local
    assert out["loss"].item() == pytest.approx(ref_total.item(), rel=1e-5)
    assert abs(ref_global - ref_local) > 0.05  # so swapping lambda and 1 - lambda shows
    assert out["regions_per_image"].item() == pytest.approx(10 / 3)

    # gradients reaching the heads' outputs: those of the reference objective
    out["loss"].backward()
    leaves = [t.detach().double().requires_grad_() for t in (zg, za, zb)]
    ref = LAMBDA * ref_ntxent(leaves[0][:B], leaves[0][B:], TAU, positive_in_den) + (
        1 - LAMBDA
    ) * ref_ntxent(leaves[1][valid], leaves[2][valid], TAU, positive_in_den)
    for got, want in zip((zg, za, zb), torch.autograd.grad(ref, leaves), strict=True):
        torch.testing.assert_close(got.grad.double(), want, rtol=1e-4, atol=1e-7)
    assert za.grad[~valid].abs().max() == 0  # invalid regions take no part


@pytest.mark.parametrize("concat_views", [True, False])
def test_regions_pool_each_views_own_pixels(concat_views):
    """The local head sees, for view a and for view b, the mean decoder feature over exactly the
    view pixels that came from the box (rebuilt here from the index maps)."""
    method = make_method(concat_views=concat_views)
    decoder, pooled = capture(method.model.fuse), capture(method.local_head, inputs=True)
    batch = make_batch(1)
    method(batch)
    dec = torch.cat([d.detach() for d in decoder])  # (2B, C, S/4, S/4): views a then b
    want_a = ref_region_features(dec[:B], batch["index_a"])
    want_b = ref_region_features(dec[B:], batch["index_b"])
    torch.testing.assert_close(pooled[0].double(), want_a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pooled[1].double(), want_b, rtol=1e-5, atol=1e-6)
    # the two views of a box differ (other crops, flips and turns), so a mix-up would show
    valid = batch["region_valid"]
    wrong = ref_region_features(dec[B:], batch["index_a"])
    assert (wrong[valid] - want_b[valid]).abs().max() > 1e-2


def test_identical_views_give_log_2n_minus_1_in_both_branches():
    """Closed form: when every embedding is the same, each NT-Xent term is log(2N - 1)."""
    method = make_method()
    for head in (method.global_head, method.local_head):
        last = head.mlp[-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(1.0)
    out = method(make_batch())
    assert out["loss_global"].item() == pytest.approx(math.log(2 * B - 1), rel=1e-6)
    n_regions = int(torch.tensor(VALID).sum())
    assert out["loss_local"].item() == pytest.approx(math.log(2 * n_regions - 1), rel=1e-6)
