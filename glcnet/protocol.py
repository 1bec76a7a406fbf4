"""The few-label protocol: pretrain, fine-tune from each init on shared label subsets, evaluate, tabulate.

Every stage is the same run function the scripts use, composed from the real configs with Hydra's
compose API, so a protocol row can be reproduced by hand with the printed overrides.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from glcnet.training.evaluate import run_evaluate
from glcnet.training.finetune import run_finetune
from glcnet.training.pretrain import run_pretrain
from glcnet.utils.config import register_resolvers

log = logging.getLogger(__name__)

METRIC_KEYS = ("mIoU", "mF1", "OA", "Kappa")


def compose_stage(config_dir: str, name: str, overrides: Sequence[str]) -> DictConfig:
    """Compose one stage's config (``pretrain``, ``finetune`` or ``evaluate``) with overrides."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def run_protocol(
    config_dir: str,
    output_dir: str | Path,
    methods: Sequence[str] = ("glcnet",),
    label_fractions: Sequence[float] = (0.01, 0.05),
    include_random_init: bool = True,
    transfers: Sequence[str] = ("encoder",),
    seed: int = 0,
    common_overrides: Sequence[str] = (),
    pretrain_overrides: Sequence[str] = (),
    finetune_overrides: Sequence[str] = (),
    evaluate_overrides: Sequence[str] = (),
    method_overrides: Mapping[str, Sequence[str]] | None = None,
) -> list[dict]:
    """Run the protocol and write ``results.json``, ``results.csv``, ``results.md`` and a plot.

    Args:
        config_dir: Absolute path of the ``configs/`` folder.
        output_dir: Folder receiving one sub-folder per stage and the result files.
        methods: Pretraining method configs (``method=<name>``) compared with random init.
        label_fractions: Labeled fractions of the training tiles.
        include_random_init: Add the random-initialisation baseline.
        transfers: What each pretrained network hands to fine-tuning (``encoder`` and/or
            ``encoder+decoder``); every choice is a row of its own.
        seed: Seed of every stage (and of the label-subset draws, shared by all inits).
        common_overrides: Overrides applied to every stage (e.g. ``data.tile_size=128``).
        pretrain_overrides: Overrides of the pretraining runs.
        finetune_overrides: Overrides of the fine-tuning runs.
        evaluate_overrides: Overrides of the evaluation runs.
        method_overrides: Extra pretraining overrides per method, e.g.
            ``{"simclr": ["augment=simclr"]}``.

    Returns:
        One row per (init, fraction): ``init``, ``label_fraction``, ``labeled_tiles`` and metrics.
    """
    register_resolvers()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = [*common_overrides, f"seed={seed}"]
    inits: list[tuple[str, str, str | None, str]] = []  # (row name, folder tag, weights, transfer)
    if include_random_init:
        inits.append(("random", "random", None, "encoder"))
    for method in methods:
        t0 = time.perf_counter()
        cfg = compose_stage(
            config_dir,
            "pretrain",
            [
                *base,
                f"method={method}",
                *pretrain_overrides,
                f"paths.output_dir={out}/pretrain_{method}",
            ],
        )
        result = run_pretrain(cfg)
        log.info("pretrained %s in %.0f s", method, time.perf_counter() - t0)
        for transfer in transfers:
            if transfer == "encoder":
                name, tag = method, method
            else:
                name, tag = f"{method} ({transfer})", f"{method}_{transfer.replace('+', '_')}"
            inits.append((name, tag, str(result["export"]), transfer))

    rows = []
    for fraction in label_fractions:
        subset_file: str | None = None
        for init, init_tag, weights, transfer in inits:
            tag = f"{init_tag}_frac{fraction:g}"
            ft = [*base, f"data.label_fraction={fraction}", *finetune_overrides]
            ft.append(f"pretrained={weights}" if weights else "pretrained=null")
            ft.append(f"transfer={transfer}")
            if subset_file:
                ft.append(f"subset_file={subset_file}")
            ft.append(f"paths.output_dir={out}/finetune_{tag}")
            t0 = time.perf_counter()
            fres = run_finetune(compose_stage(config_dir, "finetune", ft))
            subset_file = subset_file or str(fres["subset_file"])
            t_ft = time.perf_counter() - t0
            ev = [
                *base,
                *evaluate_overrides,
                f"checkpoint={fres['best_checkpoint']}",
                f"paths.output_dir={out}/evaluate_{tag}",
            ]
            eres = run_evaluate(compose_stage(config_dir, "evaluate", ev))
            labeled = json.loads(Path(fres["subset_file"]).read_text())["count"]
            row = {"init": init, "label_fraction": fraction, "labeled_tiles": labeled}
            row.update({k: float(eres["metrics"][k]) for k in METRIC_KEYS})
            row["finetune_s"] = round(t_ft, 1)
            rows.append(row)
            log.info("%s: %s", tag, row)
            write_results(out, rows)
    GlobalHydra.instance().clear()
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """Markdown table: init x label fraction -> mIoU, mean F1, OA, Kappa (in %)."""
    head = "| init | labels | tiles | mIoU | mF1 | OA | Kappa |\n|---|---|---|---|---|---|---|"
    lines = [head]
    for r in rows:
        vals = " | ".join("n/a" if math.isnan(r[k]) else f"{100 * r[k]:.1f}" for k in METRIC_KEYS)
        lines.append(
            f"| {r['init']} | {100 * r['label_fraction']:g}% | {r['labeled_tiles']} | {vals} |"
        )
    return "\n".join(lines)


def write_results(out: Path, rows: Sequence[dict]) -> None:
    """Write the protocol table as JSON, CSV, Markdown and a bar plot of mIoU."""
    (out / "results.json").write_text(json.dumps(list(rows), indent=1))
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "results.md").write_text(format_table(rows) + "\n")
    plot_results(rows, out / "results.png")


def plot_results(rows: Sequence[dict], path: Path) -> None:
    """Grouped bars of mIoU per label fraction and init."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = sorted({r["label_fraction"] for r in rows})
    inits = list(dict.fromkeys(r["init"] for r in rows))
    width = 0.8 / max(1, len(inits))
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, init in enumerate(inits):
        vals = [
            next(
                (100 * r["mIoU"] for r in rows if r["init"] == init and r["label_fraction"] == f), 0
            )
            for f in fractions
        ]
        ax.bar([i + k * width for i in range(len(fractions))], vals, width, label=init)
    ax.set_xticks([i + width * (len(inits) - 1) / 2 for i in range(len(fractions))])
    ax.set_xticklabels([f"{100 * f:g}%" for f in fractions])
    ax.set_xlabel("labeled fraction of training tiles")
    ax.set_ylabel("test mIoU (%)")
    ax.set_title("Few-label fine-tuning")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
