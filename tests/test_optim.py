"""The fine-tuning recipe knobs: encoder learning-rate scale and batch-norm handling."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config, tiny_overrides

from glcnet.models.segmenter import Segmenter
from glcnet.training.finetune_module import FinetuneModule
from glcnet.training.optim import build_optimizer, encoder_param_groups
from glcnet.training.schedule import optimization
from glcnet.utils.config import instantiate


def test_encoder_lr_scale_gives_the_encoder_its_own_rate_through_the_schedule():
    model = Segmenter("resnet18", in_channels=4, num_classes=6)
    model.head.requires_grad_(False)  # frozen parameters are left out of every group
    groups = encoder_param_groups(model, model.encoder)
    factory = lambda ps: build_optimizer(ps, "torch.optim.Adam", lr=1e-3, encoder_lr_scale=0.1)  # noqa: E731
    out = optimization(groups, factory, "cosine", total_steps=10, warmup_steps=4)
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    by_name = {g["name"]: g for g in opt.param_groups}
    enc_ids = {id(p) for p in model.encoder.parameters()}
    assert {id(p) for p in by_name["encoder"]["params"]} == enc_ids
    rest = {id(p) for p in by_name["rest"]["params"]}
    assert rest == {id(p) for p in model.decoder.parameters()}  # head frozen: not there
    for _ in range(3):  # the warm-up multiplies both groups alike
        opt.step()
        sched.step()
    assert by_name["encoder"]["lr"] == pytest.approx(0.1 * by_name["rest"]["lr"])
    assert by_name["rest"]["lr"] == pytest.approx(1e-3 * 4 / 4)


def test_plain_parameters_and_scale_one_make_a_plain_optimizer():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = build_optimizer([p], "torch.optim.SGD", lr=0.5, momentum=0.9)
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups) == 1
    assert opt.param_groups[0]["momentum"] == 0.9
    model = Segmenter("resnet18", in_channels=4, num_classes=6)
    one = build_optimizer(encoder_param_groups(model, model.encoder), lr=1e-3)
    assert len(one.param_groups) == 1 and "name" not in one.param_groups[0]
    with pytest.raises(ValueError, match="encoder_lr_scale=0.1 needs parameter groups"):
        build_optimizer([p], lr=1e-3, encoder_lr_scale=0.1)
    with pytest.raises(ValueError, match=">= 0"):
        build_optimizer([p], lr=1e-3, encoder_lr_scale=-1)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_optimizer_configs_take_the_scale(name, tmp_path):
    cfg = compose_config(
        "finetune",
        [f"optimizer={name}", "optimizer.encoder_lr_scale=0.25", "optimizer.lr=0.01",
         f"paths.output_dir={tmp_path}"],
    )  # fmt: skip
    model = Segmenter("resnet18", in_channels=4, num_classes=6)
    module = FinetuneModule(
        model, loss=torch.nn.CrossEntropyLoss(), optimizer=instantiate(cfg.optimizer)
    )
    module.trainer = type("T", (), {"estimated_stepping_batches": 10})()
    opt = module.configure_optimizers()["optimizer"]
    lrs = {g["name"]: g["initial_lr"] for g in opt.param_groups}
    assert lrs == pytest.approx({"encoder": 0.0025, "rest": 0.01})


def _bn_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.clone()
        for k, v in module.state_dict().items()
        if k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }


def test_bn_mode_frozen_stats_keeps_the_encoder_statistics_and_trains_its_weights(
    tiny_sample_root, tmp_path
):
    from glcnet.training.export import export_pretrained
    from glcnet.training.finetune import run_finetune

    torch.manual_seed(0)
    source = Segmenter("resnet18", in_channels=4, num_classes=6)
    with torch.no_grad():  # pretrained-looking statistics, far from the init (0, 1)
        for m in source.encoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.num_batches_tracked.fill_(7)
    weights = export_pretrained(source, tmp_path / "w.pt")
    cfg = compose_config(
        "finetune",
        [*tiny_overrides(tiny_sample_root, tmp_path / "run"), "data.label_count=4",
         "samples_per_epoch=8", "trainer.max_steps=3", f"pretrained={weights}",
         "bn_mode=frozen_stats"],
    )  # fmt: skip
    result = run_finetune(cfg)
    state = torch.load(result["best_checkpoint"], map_location="cpu", weights_only=False)
    encoder = {k[len("model.net.encoder."):]: v for k, v in state["state_dict"].items()
               if k.startswith("model.net.encoder.")}  # fmt: skip
    expected = _bn_state(source.encoder)
    for key, value in expected.items():
        assert torch.equal(encoder[key], value), key
    assert not torch.equal(encoder["conv1.weight"], source.encoder.state_dict()["conv1.weight"])
    decoder_bn = [
        k for k in state["state_dict"] if "decoder" in k and k.endswith("num_batches_tracked")
    ]
    assert decoder_bn and all(int(state["state_dict"][k]) > 0 for k in decoder_bn)  # still adapts
