"""The few-label protocol end to end on the tiny sample set (shared subsets, table, plot)."""

from __future__ import annotations

import json

from glcnet.protocol import format_table, run_protocol
from glcnet.utils.config import CONFIG_DIR


def test_protocol_runs_every_init_on_the_same_subsets(tiny_sample_root, tmp_path):
    data = [
        f"data.root={tiny_sample_root}",
        "data.sample_seed=null",
        "data.tile_size=64",
        "data.batch_size=4",
        "data.num_workers=0",
        "model.encoder=resnet18",
    ]
    train = ["trainer=cpu", "trainer.enable_progress_bar=false", "trainer.max_steps=2"]
    rows = run_protocol(
        config_dir=str(CONFIG_DIR),
        output_dir=tmp_path,
        methods=["glcnet"],
        label_fractions=[0.05, 0.1],
        common_overrides=data,
        pretrain_overrides=[*train, "augment.size=64", "augment.region_size=16"],
        finetune_overrides=[*train, "samples_per_epoch=8"],
        evaluate_overrides=["overlap=0"],
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
