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


class ProtocolResumeError(ValueError):
    """The folder to resume holds a protocol run made with other settings."""


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
    resume: bool = False,
) -> list[dict]:
    """Run the protocol and write ``results.json``, ``results.csv``, ``results.md`` and a plot.

    Inits run one after the other (random first, then each method: pretraining, then fine-tuning at
    every fraction), and the result files are rewritten after every row, so a long run shows its
    first rows early. With ``resume`` an interrupted run in ``output_dir`` is completed: finished
    rows are kept, a finished pretraining is reused, and an unfinished one continues from its last
    checkpoint.

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
        resume: Complete the protocol run already in ``output_dir`` (same settings required;
            methods and fractions may be added).

    Returns:
        One row per (init, fraction), ordered by fraction then init: ``init``, ``label_fraction``,
        ``labeled_tiles``, the metrics, ``pretrain_s`` and ``finetune_s`` (seconds).

    Raises:
        ProtocolResumeError: ``resume`` on a folder whose run used other settings.
    """
    register_resolvers()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    method_overrides = {k: list(v) for k, v in (method_overrides or {}).items()}
    settings = {
        "seed": seed,
        "common_overrides": list(common_overrides),
        "pretrain_overrides": list(pretrain_overrides),
        "finetune_overrides": list(finetune_overrides),
        "evaluate_overrides": list(evaluate_overrides),
    }
    state = _open_state(out, settings, resume)
    done = {(r["init"], r["label_fraction"]): r for r in _load_rows(out)} if resume else {}
    base = [*common_overrides, f"seed={seed}"]
    init_order = (["random"] if include_random_init else []) + [
        _row_name(m, t) for m in methods for t in transfers
    ]
    rows: list[dict] = []

    def finish(row: dict) -> None:
        rows.append(row)
        rows.sort(
            key=lambda r: (label_fractions.index(r["label_fraction"]), init_order.index(r["init"]))
        )
        write_results(out, rows)

    def fine_tune_all(name: str, tag: str, weights: str | None, transfer: str, pre_s: float):
        for fraction in label_fractions:
            if (name, fraction) in done:
                log.info("%s at %g: kept from the earlier run", name, fraction)
                finish(done[(name, fraction)])
                continue
            key = f"{fraction:g}"
            row, subset = _fine_tune_and_evaluate(
                config_dir,
                out,
                base,
                name,
                f"{tag}_frac{key}",
                weights,
                transfer,
                fraction,
                state["subsets"].get(key),
                finetune_overrides,
                evaluate_overrides,
            )
            row["pretrain_s"] = round(pre_s, 1)
            state["subsets"].setdefault(key, subset)
            _save_state(out, state)
            finish(row)

    if include_random_init:
        fine_tune_all("random", "random", None, "encoder", 0.0)
    for method in methods:
        own = method_overrides.get(method, [])
        earlier = state["method_overrides"].get(method)
        if earlier is not None and earlier != own:
            raise ProtocolResumeError(
                f"{out}: {method} was pretrained with method_overrides {earlier}, not {own}; "
                "resume with the overrides it was started with, or start a new run"
            )
        state["method_overrides"][method] = own
        needed = [
            t
            for t in transfers
            if any((_row_name(method, t), f) not in done for f in label_fractions)
        ]
        weights = None
        if needed:
            weights, seconds = _pretrain(
                config_dir, out, base, method, [*pretrain_overrides, *own], resume
            )
            if seconds is not None:  # None: an earlier run's weights were kept
                state["pretrain_s"][method] = seconds
            _save_state(out, state)
        pre_s = state["pretrain_s"].get(method, 0.0)
        for transfer in transfers:
            tag = method if transfer == "encoder" else f"{method}_{transfer.replace('+', '_')}"
            fine_tune_all(_row_name(method, transfer), tag, weights, transfer, pre_s)
    GlobalHydra.instance().clear()
    return rows


def _row_name(method: str, transfer: str) -> str:
    return method if transfer == "encoder" else f"{method} ({transfer})"


def _pretrain(
    config_dir: str,
    out: Path,
    base: Sequence[str],
    method: str,
    overrides: Sequence[str],
    resume: bool,
) -> tuple[str, float | None]:
    """Pretrain ``method`` (or reuse / continue an earlier attempt).

    Returns:
        The weights file and the seconds spent, None when finished weights were kept.
    """
    folder = out / f"pretrain_{method}"
    export = folder / "pretrained.pt"
    if resume and export.is_file():
        log.info("pretrained %s: kept from the earlier run (%s)", method, export)
        return str(export), None
    last = folder / "checkpoints" / "last.ckpt"
    cont = [f"ckpt_path={last}"] if resume and last.is_file() else []
    if cont:
        log.info("pretraining %s continues from %s", method, last)
    t0 = time.perf_counter()
    cfg = compose_stage(
        config_dir,
        "pretrain",
        [*base, f"method={method}", *overrides, *cont, f"paths.output_dir={folder}"],
    )
    result = run_pretrain(cfg)
    seconds = time.perf_counter() - t0
    log.info("pretrained %s in %.0f s", method, seconds)
    return str(result["export"]), seconds


def _fine_tune_and_evaluate(
    config_dir: str,
    out: Path,
    base: Sequence[str],
    name: str,
    tag: str,
    weights: str | None,
    transfer: str,
    fraction: float,
    subset_file: str | None,
    finetune_overrides: Sequence[str],
    evaluate_overrides: Sequence[str],
) -> tuple[dict, str]:
    """One protocol row: fine-tune from ``weights`` on the fraction's subset, then evaluate."""
    ft = [*base, f"data.label_fraction={fraction}", *finetune_overrides]
    ft.append(f"pretrained={weights}" if weights else "pretrained=null")
    ft.append(f"transfer={transfer}")
    if subset_file:
        ft.append(f"subset_file={subset_file}")
    ft.append(f"paths.output_dir={out}/finetune_{tag}")
    t0 = time.perf_counter()
    fres = run_finetune(compose_stage(config_dir, "finetune", ft))
    t_ft = time.perf_counter() - t0
    ev = [
        *base,
        *evaluate_overrides,
        f"checkpoint={fres['best_checkpoint']}",
        f"paths.output_dir={out}/evaluate_{tag}",
    ]
    eres = run_evaluate(compose_stage(config_dir, "evaluate", ev))
    labeled = json.loads(Path(fres["subset_file"]).read_text())["count"]
    row = {"init": name, "label_fraction": fraction, "labeled_tiles": labeled}
    row.update({k: float(eres["metrics"][k]) for k in METRIC_KEYS})
    row["finetune_s"] = round(t_ft, 1)
    log.info("%s: %s", tag, row)
    return row, str(fres["subset_file"])


def _open_state(out: Path, settings: dict, resume: bool) -> dict:
    """Read (``resume``) or start the run's ``protocol_state.json``.

    It holds the settings every row shares, the label subset of each fraction, and each method's
    pretraining time and extra overrides.
    """
    path = out / "protocol_state.json"
    if resume and path.is_file():
        state = json.loads(path.read_text())
        if state["settings"] != settings:
            diff = sorted(k for k in settings if state["settings"].get(k) != settings[k])
            raise ProtocolResumeError(
                f"{out} holds a protocol run with other settings ({', '.join(diff)} differ); "
                "resume it with the settings it was started with, or start a new run"
            )
        return state
    if resume:
        raise ProtocolResumeError(f"nothing to resume in {out}: no protocol_state.json there")
    state = {"settings": settings, "subsets": {}, "pretrain_s": {}, "method_overrides": {}}
    _save_state(out, state)
    return state


def _save_state(out: Path, state: dict) -> None:
    (out / "protocol_state.json").write_text(json.dumps(state, indent=1))


def _load_rows(out: Path) -> list[dict]:
    path = out / "results.json"
    return json.loads(path.read_text()) if path.is_file() else []


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
