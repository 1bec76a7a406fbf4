"""The few-label protocol end to end on the tiny sample set (shared subsets, table, plot)."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_overrides

from glcnet.protocol import ProtocolResumeError, format_table, run_protocol
from glcnet.utils.config import CONFIG_DIR


def _tiny_protocol_args(root) -> dict:
    """run_protocol arguments that shrink every stage to seconds (GLCNet and random init)."""
    data = tiny_overrides(root, root, train=False)  # paths.output_dir: each stage sets its own
    train = ["trainer=cpu", "trainer.enable_progress_bar=false", "trainer.max_steps=2"]
    return {
        "config_dir": str(CONFIG_DIR),
        "methods": ["glcnet"],
        "common_overrides": data,
        "pretrain_overrides": [*train, "augment.size=64", "augment.region_size=16"],
        "finetune_overrides": [*train, "samples_per_epoch=8"],
        "evaluate_overrides": ["overlap=0"],
    }


def test_protocol_runs_every_init_on_the_same_subsets(tiny_sample_root, tmp_path):
    rows = run_protocol(
        output_dir=tmp_path, label_fractions=[0.05, 0.1], **_tiny_protocol_args(tiny_sample_root)
    )
    assert [(r["init"], r["label_fraction"]) for r in rows] == [
        ("random", 0.05),
        ("glcnet", 0.05),
        ("random", 0.1),
        ("glcnet", 0.1),
    ]
    for fraction in ("0.05", "0.1"):
        subsets = [
            json.loads(
                (tmp_path / f"finetune_{init}_frac{fraction}" / "label_subset.json").read_text()
            )
            for init in ("random", "glcnet")
        ]
        assert subsets[0]["tiles"] == subsets[1]["tiles"]
    assert rows[0]["labeled_tiles"] == round(0.05 * 84) and rows[2]["labeled_tiles"] == round(
        0.1 * 84
    )
    for r in rows:
        assert 0.0 <= r["OA"] <= 1.0 and 0.0 <= r["mIoU"] <= 1.0 and -1.0 <= r["Kappa"] <= 1.0
    table = (tmp_path / "results.md").read_text()
    assert table.strip() == format_table(rows)
    assert (tmp_path / "results.png").stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text()) == rows


def test_protocol_resume_keeps_finished_work_and_refuses_other_settings(
    tiny_sample_root, tmp_path, monkeypatch
):
    import glcnet.protocol as protocol

    calls = {"pretrain": [], "finetune": []}
    real_pretrain, real_finetune = protocol.run_pretrain, protocol.run_finetune

    def spy_pretrain(cfg):
        calls["pretrain"].append(cfg.ckpt_path)
        return real_pretrain(cfg)

    def spy_finetune(cfg):
        calls["finetune"].append(cfg.paths.output_dir)
        return real_finetune(cfg)

    monkeypatch.setattr(protocol, "run_pretrain", spy_pretrain)
    monkeypatch.setattr(protocol, "run_finetune", spy_finetune)
    args = _tiny_protocol_args(tiny_sample_root)

    overrides = {"glcnet": ["method.temperature=0.25"]}
    args["method_overrides"] = overrides
    first = run_protocol(output_dir=tmp_path, label_fractions=[0.05], **args)
    assert [r["init"] for r in first] == ["random", "glcnet"]
    used = (tmp_path / "pretrain_glcnet" / "config.yaml").read_text()
    assert "temperature: 0.25" in used  # the method's own overrides reach its pretraining
    assert first[1]["pretrain_s"] > 0 and first[0]["pretrain_s"] == 0
    assert len(calls["pretrain"]) == 1 and len(calls["finetune"]) == 2

    # An interrupted pretraining: its weights are gone, its last checkpoint is left.
    (tmp_path / "pretrain_glcnet" / "pretrained.safetensors").unlink()
    rows = run_protocol(output_dir=tmp_path, label_fractions=[0.05, 0.1], resume=True, **args)
    assert [(r["init"], r["label_fraction"]) for r in rows] == [
        ("random", 0.05),
        ("glcnet", 0.05),
        ("random", 0.1),
        ("glcnet", 0.1),
    ]
    assert rows[:2] == first  # kept, not recomputed
    last = tmp_path / "pretrain_glcnet" / "checkpoints" / "last.ckpt"
    assert calls["pretrain"][1:] == [str(last)]  # continued from its checkpoint
    assert [p.rsplit("/", 1)[1] for p in calls["finetune"][2:]] == [
        "finetune_random_frac0.1",
        "finetune_glcnet_frac0.1",
    ]
    subsets = [
        json.loads((tmp_path / f"finetune_{i}_frac0.1" / "label_subset.json").read_text())["tiles"]
        for i in ("random", "glcnet")
    ]
    assert subsets[0] == subsets[1]
    assert json.loads((tmp_path / "results.json").read_text()) == rows

    # Everything finished: a second resume only re-reads.
    again = run_protocol(output_dir=tmp_path, label_fractions=[0.05, 0.1], resume=True, **args)
    assert again == rows and len(calls["pretrain"]) == 2 and len(calls["finetune"]) == 4

    other = {**args, "finetune_overrides": [*args["finetune_overrides"], "optimizer.lr=0.1"]}
    with pytest.raises(ProtocolResumeError, match="finetune_overrides"):
        run_protocol(output_dir=tmp_path, label_fractions=[0.05], resume=True, **other)
    with pytest.raises(ProtocolResumeError, match="glcnet was pretrained with method_overrides"):
        run_protocol(
            output_dir=tmp_path,
            label_fractions=[0.05],
            resume=True,
            **{**args, "method_overrides": {"glcnet": ["method.temperature=0.2"]}},
        )
    with pytest.raises(ProtocolResumeError, match="nothing to resume"):
        run_protocol(output_dir=tmp_path / "new", label_fractions=[0.05], resume=True, **args)
