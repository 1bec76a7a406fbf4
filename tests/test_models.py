"""The DeepLabV3+ wrapper, heads, global pooling and the learning-rate schedule."""

from __future__ import annotations

import math
import time

import pytest
import torch

from glcnet.models import segmenter as segmenter_module
from glcnet.models.heads import GlobalPooling, ProjectionHead
from glcnet.models.segmenter import EncoderWeightsError, Segmenter
from glcnet.training.schedule import optimization, warmup_cosine


def test_features_shapes_and_forward_match_smp():
    torch.manual_seed(0)
    model = Segmenter("resnet18", in_channels=4, num_classes=6).eval()
    x = torch.rand(2, 4, 64, 96)
    feats = model.features(x)
    assert feats.aspp.shape == (2, 256, 4, 6)
    assert feats.decoder.shape == (2, 256, 16, 24)
    with torch.no_grad():
        # the decoder output we expose is what smp's own forward feeds its classifier
        assert torch.allclose(model.head(feats.decoder), model(x), atol=1e-6)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="unknown encoder"):
        Segmenter("resnet-does-not-exist")
    with pytest.raises(ValueError, match="output_stride"):
        Segmenter("resnet18", output_stride=32)
    model = Segmenter("resnet18", in_channels=4)
    with pytest.raises(ValueError, match="data.bands match"):
        model(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="divisible by the output stride 16"):
        model(torch.rand(1, 4, 72, 64))


def test_named_weights_fail_fast_and_clearly_offline(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(segmenter_module, "_hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    offline_before = constants.HF_HUB_OFFLINE
    start = time.perf_counter()
    with pytest.raises(EncoderWeightsError, match="encoder_weights=null"):
        Segmenter("resnet18", in_channels=3, encoder_weights="imagenet")
    assert time.perf_counter() - start < 20
    assert constants.HF_HUB_OFFLINE == offline_before  # restored after the attempt


def test_global_pooling_style_is_channel_mean_and_variance():
    x = torch.randn(3, 5, 4, 6)
    style = GlobalPooling("style")(x)
    flat = x.reshape(3, 5, -1)
    mean = flat.mean(-1)
    var = ((flat - mean[..., None]) ** 2).mean(-1)
    assert torch.allclose(style, torch.cat([mean, var], 1), atol=1e-6)
    assert torch.allclose(GlobalPooling("mean")(x), mean, atol=1e-6)
    assert GlobalPooling("style").output_dim(256) == 512
    with pytest.raises(ValueError):
        GlobalPooling("max")


def test_projection_head_shapes_and_layers():
    head = ProjectionHead([512, 256, 64])
    assert head(torch.randn(7, 512)).shape == (7, 64)
    assert head(torch.randn(2, 4, 512)).shape == (2, 4, 64)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 256), (256, 64)]
    with pytest.raises(ValueError, match="expects 512"):
        head(torch.randn(2, 10))


def test_warmup_cosine_follows_its_formula():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = warmup_cosine(opt, total_steps=20, warmup_steps=4)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for step, lr in enumerate(seen):
        if step < 4:
            expected = 2.0 * (step + 1) / 4
        else:
            expected = 2.0 * 0.5 * (1 + math.cos(math.pi * (step - 4) / 16))
        assert lr == pytest.approx(expected)


def test_optimization_skips_frozen_parameters():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    b.requires_grad_(False)
    out = optimization([a, b], lambda ps: torch.optim.Adam(ps, lr=1e-3), "cosine", float("inf"))
    params = out["optimizer"].param_groups[0]["params"]
    assert len(params) == 1 and params[0] is a
    assert out["lr_scheduler"]["interval"] == "step"


def test_glcnet_one_or_two_passes_agree_when_batch_norm_is_frozen():
    import numpy as np
    from torch.utils.data import default_collate

    from glcnet.data.views import PairedViews
    from glcnet.methods.glcnet import GLCNet

    torch.manual_seed(0)
    views = PairedViews(size=64, region_size=16)
    rng = np.random.default_rng(0)
    batch = default_collate([views(torch.rand(4, 80, 80), rng) for _ in range(3)])
    model = Segmenter("resnet18", in_channels=4, num_classes=6).eval()  # running BN statistics
    one, two = GLCNet(model), GLCNet(model, concat_views=False)
    two.load_state_dict(one.state_dict())
    a, b = one(batch), two(batch)
    for key in ("loss", "loss_global", "loss_local"):
        assert torch.allclose(a[key], b[key], atol=1e-5), key
