"""finetune.py probe=frozen|linear: the frozen part stays bit-identical, the linear probe is what
evaluate.py scores, and its features are computed once per tile."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config, tiny_overrides

from glcnet.models.linear_probe import LinearProbe, is_linear_probe_state
from glcnet.models.segmenter import Segmenter
from glcnet.training.evaluate import load_finetuned, run_evaluate
from glcnet.training.export import export_pretrained
from glcnet.training.finetune import run_finetune
from glcnet.training.probes import cache_features, frozen_parts
from glcnet.training.provenance import state_fingerprint
from glcnet.utils.config import PROJECT_ROOT


def _pretrained_like(path) -> tuple[Segmenter, str]:
    """A network with batch-norm statistics far from the init, exported as pretrained weights."""
    torch.manual_seed(3)
    net = Segmenter("resnet18", in_channels=4, num_classes=6)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(11)
    return net, str(export_pretrained(net, path))


def _part(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def test_frozen_probe_keeps_encoder_and_decoder_bit_identical(tiny_sample_root, tmp_path):
    source, weights = _pretrained_like(tmp_path / "w.pt")
    cfg = compose_config(
        "finetune",
        [
            *tiny_overrides(tiny_sample_root, tmp_path / "run"),
            "data.label_count=4",
            "samples_per_epoch=8",
            "trainer.max_steps=3",
            "optimizer.lr=1e-2",
            f"pretrained={weights}",
            "transfer=encoder+decoder",
            "probe=frozen",
        ],
    )
    result = run_finetune(cfg)
    state = torch.load(result["best_checkpoint"], map_location="cpu", weights_only=False)
    state = state["state_dict"]
    for part, module in (("encoder", source.encoder), ("decoder", source.decoder)):
        trained = _part(state, f"model.net.{part}.")
        expected = module.state_dict()
        assert set(trained) == set(expected)
        for key, value in expected.items():  # running_mean/var and num_batches_tracked included
            assert torch.equal(trained[key], value), (part, key)
    head = _part(state, "model.net.segmentation_head.")
    assert not torch.equal(head["0.weight"], source.head.state_dict()["0.weight"])  # trained
    record = json.loads((tmp_path / "run" / "init.json").read_text())
    assert record["pretrained"] == weights and record["loaded"] == ["encoder", "decoder"]
    assert record["encoder_sha256"] == state_fingerprint(source.encoder.state_dict())


def test_linear_probe_trains_on_cached_features_and_evaluates_on_whole_scenes(
    tiny_sample_root, tmp_path
):
    source, weights = _pretrained_like(tmp_path / "w.pt")
    out = tmp_path / "run"
    cfg = compose_config(
        "finetune",
        [
            *tiny_overrides(tiny_sample_root, out),
            "data.label_count=4",
            "samples_per_epoch=16",
            "trainer.max_epochs=2",
            "optimizer.lr=1e-2",
            f"pretrained={weights}",
            "probe=linear",
        ],
    )
    result = run_finetune(cfg)
    state = torch.load(result["best_checkpoint"], map_location="cpu", weights_only=False)
    model_state = _part(state["state_dict"], "model.")
    assert is_linear_probe_state(model_state)
    record = json.loads((out / "init.json").read_text())
    backbone = _part(model_state, "backbone.")
    encoder = _part(backbone, "net.encoder.")
    for key, value in source.encoder.state_dict().items():  # the frozen encoder, BN stats too
        assert torch.equal(encoder[key], value), key
    assert state_fingerprint(_part(backbone, "net.decoder.")) == record["decoder_sha256"]
    assert model_state["classifier.weight"].shape == (6, 512, 1, 1)

    # the standardisation is that of the training tiles' features, computed once per tile
    subset = json.loads(result["subset_file"].read_text())
    probe = load_finetuned(
        Segmenter("resnet18", in_channels=4, num_classes=6), result["best_checkpoint"]
    )
    assert isinstance(probe, LinearProbe) and probe.source == "encoder"
    from glcnet.utils.config import instantiate

    tiles = instantiate(cfg.data).dataset("train", labeled=True)
    chosen = torch.utils.data.Subset(tiles, [t["index"] for t in subset["tiles"]])
    cache = cache_features(probe, chosen, batch_size=3)
    direct = torch.stack(
        [probe.features(tiles[t["index"]]["image"][None])[0] for t in subset["tiles"]]
    )
    assert torch.allclose(cache.features, direct, atol=1e-5)
    flat = direct.transpose(0, 1).reshape(512, -1).double()
    assert torch.allclose(probe.feature_mean, flat.mean(1).float(), atol=1e-5)
    assert torch.allclose(probe.feature_std, flat.std(1).float(), rtol=1e-4, atol=1e-6)

    # evaluate.py scores the probe through the same sliding window as any other run
    ev = compose_config(
        "evaluate",
        [*tiny_overrides(tiny_sample_root, tmp_path / "ev", train=False),
         f"checkpoint={result['best_checkpoint']}", "overlap=0"],
    )  # fmt: skip
    metrics = run_evaluate(ev)["metrics"]
    assert 0.0 <= metrics["mIoU"] <= 1.0
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["mIoU"] == pytest.approx(metrics["mIoU"])


def test_linear_probe_formula_and_frozen_backbone():
    torch.manual_seed(0)
    net = Segmenter("resnet18", in_channels=4, num_classes=6)
    probe = LinearProbe(net, "decoder").train()
    assert not net.training and probe.classifier.training  # the backbone never trains
    assert all(not p.requires_grad for p in net.parameters())
    x = torch.rand(2, 4, 64, 64)
    feats = probe.features(x)
    assert feats.shape == (2, 256, 16, 16)
    assert torch.allclose(feats, net.features(x).decoder)
    probe.set_statistics(feats)
    w, b = probe.classifier.weight[:, :, 0, 0], probe.classifier.bias
    z = (feats - probe.feature_mean[:, None, None]) / probe.feature_std[:, None, None]
    by_hand = torch.einsum("kc,bchw->bkhw", w, z) + b[None, :, None, None]
    by_hand = F.interpolate(by_hand, size=(64, 64), mode="bilinear", align_corners=False)
    assert torch.allclose(probe(x), by_hand, atol=1e-5)
    assert frozen_parts("linear", "encoder+decoder") == ["encoder", "decoder"]
    assert frozen_parts("frozen", "encoder") == ["encoder"]
    assert frozen_parts("none", "encoder+decoder", freeze_encoder=True) == ["encoder"]
    with pytest.raises(ValueError, match="probe must be one of"):
        frozen_parts("knn", "encoder")


def test_probe_cache_beyond_its_limit_is_one_line_at_the_cli(tiny_sample_root, tmp_path):
    cmd = [
        sys.executable,
        str(PROJECT_ROOT / "scripts" / "finetune.py"),
        *tiny_overrides(tiny_sample_root, tmp_path),
        "data.label_count=4",
        "probe=linear",
        "probe_cache_max_gb=1e-9",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "probe_cache_max_gb=1e-09" in err[0] and "Traceback" not in proc.stderr
