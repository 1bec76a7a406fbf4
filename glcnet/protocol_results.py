"""The protocol's result files: per-seed rows, their summary over seeds, table and plot.

``results.json`` / ``results.csv`` hold one row per (init, transfer, eval, labels, seed);
``summary.json`` and ``results.md`` one row per (init, transfer, eval, labels) with the mean and
sample standard deviation (ddof=1) over seeds, and the paired difference to random init (same eval,
same labels, same transfer for ``frozen``/``linear``, paired by seed) with its 95 % t-interval.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

from glcnet.stats import paired_difference, summarize

METRIC_KEYS = ("mIoU", "mF1", "OA", "Kappa")
#: Column order of results.csv (further keys follow in their order of appearance).
ROW_KEYS = (
    "init",
    "transfer",
    "eval",
    "label_fraction",
    "labeled_tiles",
    "seed",
    *METRIC_KEYS,
    "pretrain_s",
    "finetune_s",
    "evaluate_s",
    "pretrained",
    "run",
)
CONFIDENCE = 0.95


def eval_kind(name: str) -> str:
    """``finetune`` for ``finetune`` and its recipe variants (``finetune:<variant>``), else the name."""
    return "finetune" if name == "finetune" or name.startswith("finetune:") else name


def baseline_transfer(eval_name: str, transfer: str | None) -> str | None:
    """The transfer of the random-init row a row is compared with.

    Fine-tuning random weights does not depend on what would have been transferred (None);
    ``frozen`` and ``linear`` freeze or probe the same part as the pretrained row.
    """
    return None if eval_kind(eval_name) == "finetune" else transfer


def row_key(row: dict) -> tuple:
    """Identity of a per-seed row."""
    return (row["init"], row["transfer"], row["eval"], row["label_fraction"], row["seed"])


def summarize_rows(rows: Sequence[dict], order: dict | None = None) -> list[dict]:
    """One summary per (init, transfer, eval, labels) over its seeds.

    Args:
        rows: Per-seed rows (:data:`ROW_KEYS`).
        order: Optional sort ranks: ``{"init": [...], "eval": [...], "transfer": [...]}``; rows
            are ordered by label fraction, eval, transfer, init.

    Returns:
        Dicts with ``init``, ``transfer``, ``eval``, ``label_fraction``, ``labeled_tiles``,
        ``seeds``, ``n``, per metric ``<m>_mean`` and ``<m>_std`` (ddof=1, NaN for n = 1), and for
        pretrained inits with a random-init baseline ``delta`` = {metric: {mean, low, high, n,
        confidence}} (paired by seed; bounds NaN for n = 1).
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(row_key(r)[:4], []).append(r)
    out = []
    for (init, transfer, ev, fraction), members in groups.items():
        members = sorted(members, key=lambda r: r["seed"])
        entry = {
            "init": init,
            "transfer": transfer,
            "eval": ev,
            "label_fraction": fraction,
            "labeled_tiles": members[0]["labeled_tiles"],
            "seeds": [r["seed"] for r in members],
            "n": len(members),
        }
        for m in METRIC_KEYS:
            values = [r[m] for r in members]
            if any(v is None or math.isnan(v) for v in values):
                entry[f"{m}_mean"], entry[f"{m}_std"] = float("nan"), float("nan")
                continue
            s = summarize(values)
            entry[f"{m}_mean"], entry[f"{m}_std"] = s.mean, s.std
        if init != "random":
            base = groups.get(("random", baseline_transfer(ev, transfer), ev, fraction))
            if base:
                by_seed = {r["seed"]: r for r in base}
                paired = [(r, by_seed[r["seed"]]) for r in members if r["seed"] in by_seed]
                entry["delta"] = {}
                for m in METRIC_KEYS:
                    pairs = [(a[m], b[m]) for a, b in paired if _finite(a[m]) and _finite(b[m])]
                    if not pairs:
                        continue
                    d = paired_difference([a for a, _ in pairs], [b for _, b in pairs], CONFIDENCE)
                    entry["delta"][m] = {
                        "mean": d.mean,
                        "low": d.low,
                        "high": d.high,
                        "n": d.n,
                        "confidence": d.confidence,
                    }
        out.append(entry)
    order = order or {}

    def rank(kind: str, value) -> int:
        seq = list(order.get(kind, []))
        return seq.index(value) if value in seq else len(seq)

    out.sort(
        key=lambda e: (
            e["label_fraction"],
            rank("eval", e["eval"]),
            -1 if e["transfer"] is None else rank("transfer", e["transfer"]),
            rank("init", e["init"]),
            str(e["init"]),
        )
    )
    return out


def _finite(value) -> bool:
    return value is not None and not math.isnan(value)


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{100 * mean:.1f}" if math.isnan(std) else f"{100 * mean:.1f} ± {100 * std:.1f}"


def _delta(entry: dict, metric: str = "mIoU") -> str:
    d = entry.get("delta", {}).get(metric)
    if d is None:
        return "–"
    if math.isnan(d["low"]):
        return f"{100 * d['mean']:+.1f} (n=1)"
    mark = " *" if d["low"] > 0 or d["high"] < 0 else ""
    return f"{100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]{mark}"


LEGEND = (
    "Test split, whole scenes; metrics in %. Each cell: mean ± sample standard deviation (ddof=1) "
    "over the n seeds (each seed draws its own label subset, shared by every init). "
    "Δ mIoU: pretrained minus random init with the same eval and labels (and the same transfer "
    "for frozen/linear), paired by seed: mean [95 % Student-t interval, n−1 degrees of freedom]; "
    "* = the interval excludes 0. Per-seed numbers: results.csv / results.json."
)


def format_table(rows: Sequence[dict], order: dict | None = None) -> str:
    """Markdown table of the summary over seeds (columns: see :data:`LEGEND`).

    Args:
        rows: Per-seed rows.
        order: Sort ranks (see :func:`summarize_rows`).
    """
    head = (
        "| init | transfer | eval | labels | tiles | n | mIoU | mF1 | OA | Kappa "
        "| Δ mIoU vs random [95 % CI] |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for e in summarize_rows(rows, order):
        vals = " | ".join(_pm(e[f"{m}_mean"], e[f"{m}_std"]) for m in METRIC_KEYS)
        lines.append(
            f"| {e['init']} | {e['transfer'] or '–'} | {e['eval']} "
            f"| {100 * e['label_fraction']:g}% | {e['labeled_tiles']} | {e['n']} | {vals} "
            f"| {_delta(e)} |"
        )
    return "\n".join(lines)


def timing_line(rows: Sequence[dict], pretrain_s: dict[str, float]) -> str:
    """One line of wall time per stage kind (seconds), for sizing budgets."""
    ft = sum(r.get("finetune_s", 0.0) for r in rows)
    ev = sum(r.get("evaluate_s", 0.0) for r in rows)
    pre = ", ".join(f"{k} {v:.0f} s" for k, v in pretrain_s.items()) or "none"
    return (
        f"Wall time: pretraining {pre}; fine-tuning {ft:.0f} s and evaluation {ev:.0f} s over "
        f"{len(rows)} runs."
    )


def write_results(
    out: Path,
    rows: Sequence[dict],
    order: dict | None = None,
    pretrain_s: dict | None = None,
    plot: bool = True,
) -> None:
    """Write results.json/csv (per seed), summary.json, results.md and (``plot``) results.png."""
    rows = list(rows)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    keys = list(ROW_KEYS) + [k for r in rows for k in r if k not in ROW_KEYS]
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(keys)))
        w.writeheader()
        w.writerows(rows)
    summary = summarize_rows(rows, order)
    (out / "summary.json").write_text(json.dumps(_nan_to_none(summary), indent=1))
    text = [LEGEND, "", format_table(rows, order), "", timing_line(rows, pretrain_s or {})]
    (out / "results.md").write_text("\n".join(text) + "\n")
    if plot:
        plot_results(summary, rows, out / "results.png")


def _nan_to_none(obj):
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def plot_results(summary: Sequence[dict], rows: Sequence[dict], path: Path) -> None:
    """Bars of mean mIoU with ± std error bars and every seed as a dot: one panel per eval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = list(dict.fromkeys(e["eval"] for e in summary))
    fractions = sorted({e["label_fraction"] for e in summary})
    fig, axes = plt.subplots(1, len(evals), figsize=(5 * len(evals), 4), squeeze=False)
    for ax, ev in zip(axes[0], evals):
        series = list(dict.fromkeys((e["init"], e["transfer"]) for e in summary if e["eval"] == ev))
        width = 0.8 / max(1, len(series))
        for k, (init, transfer) in enumerate(series):
            label = init if transfer in (None, "encoder") else f"{init} ({transfer})"
            xs, means, stds = [], [], []
            for i, f in enumerate(fractions):
                e = next(
                    (
                        s
                        for s in summary
                        if (s["init"], s["transfer"], s["eval"], s["label_fraction"])
                        == (init, transfer, ev, f)
                    ),
                    None,
                )
                if e is None or math.isnan(e["mIoU_mean"]):
                    continue
                xs.append(i + k * width)
                means.append(100 * e["mIoU_mean"])
                stds.append(0.0 if math.isnan(e["mIoU_std"]) else 100 * e["mIoU_std"])
                seeds = [
                    100 * r["mIoU"]
                    for r in rows
                    if (r["init"], r["transfer"], r["eval"], r["label_fraction"])
                    == (init, transfer, ev, f)
                    and _finite(r["mIoU"])
                ]
                ax.scatter([i + k * width] * len(seeds), seeds, s=8, color="black", zorder=3)
            ax.bar(xs, means, width, yerr=stds, capsize=3, label=label)
        ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(fractions))])
        ax.set_xticklabels([f"{100 * f:g}%" for f in fractions])
        ax.set_xlabel("labeled fraction of training tiles")
        ax.set_ylabel("test mIoU (%)")
        ax.set_title(f"eval: {ev} (mean ± std over seeds)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
