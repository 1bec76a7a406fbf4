"""Segmentation metrics from one confusion matrix: per-class IoU, precision, recall, F1; OA, Kappa.

Counts are accumulated over a whole split into a single confusion matrix and every metric is
computed from it once (intersections and unions summed over the split, never averaged per tile).

Conventions:

- ``matrix[t, p]`` counts the valid pixels of target class ``t`` predicted as ``p`` (rows =
  target, columns = prediction); pixels whose target is ``ignore_index`` are not counted.
- Per class c: ``IoU = TP / (TP + FP + FN)``, ``precision = TP / (TP + FP)``,
  ``recall = TP / (TP + FN)``, ``F1 = 2 TP / (2 TP + FP + FN)`` (the harmonic mean of precision
  and recall, and 0 when TP = 0 but FP + FN > 0). A ratio with a zero denominator is NaN: a class
  absent from both target and prediction has NaN IoU and F1 and is left out of the means — it is
  never scored 0 or 1. A class absent from the target but predicted has IoU = F1 = 0 and counts.
- ``mIoU`` / ``mF1``: mean over the classes with a defined value, minus ``exclude_from_mean``
  (e.g. clutter, the ISPRS five-class convention); NaN if none is left.
- ``OA``: trace / total over all pixels and all classes (excluded ones too).
- ``Kappa``: Cohen's kappa ``(p_o - p_e) / (1 - p_e)`` with ``p_e = sum_c rows_c cols_c / N^2``
  (NaN when ``p_e = 1``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "ConfusionMatrix",
    "SegmentationMetrics",
    "confusion_matrix",
    "format_metrics_table",
    "segmentation_metrics",
]

PER_CLASS_KEYS = ("IoU", "precision", "recall", "F1")


def confusion_matrix(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255
) -> Tensor:
    """Confusion matrix of one batch of label maps.

    Args:
        pred: (N, ...) predicted class indices in ``[0, C)``, any integer dtype.
        target: (N, ...) target indices in ``[0, C)`` or ``ignore_index``, same shape; moved to
            ``pred``'s device.
        num_classes: C.
        ignore_index: Target value of pixels not counted (their prediction is not checked).

    Returns:
        (C, C) int64 counts on ``pred``'s device, rows = target, columns = prediction.

    Raises:
        ValueError: Shapes differ, non-integer inputs, or labels out of range.
    """
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape"
        )
    for name, t in (("pred", pred), ("target", target)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    target = target.to(pred.device).long().reshape(-1)
    pred = pred.long().reshape(-1)
    valid = target != ignore_index
    t, p = target[valid], pred[valid]
    bad_t = (t < 0) | (t >= num_classes)
    bad_p = (p < 0) | (p >= num_classes)
    if bool((bad_t | bad_p).any()):
        raise ValueError(
            f"labels outside [0, {num_classes}) (and not ignore_index={ignore_index}): "
            f"target {torch.unique(t[bad_t]).tolist()[:10]}, "
            f"pred {torch.unique(p[bad_p]).tolist()[:10]}"
        )
    counts = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


class ConfusionMatrix:
    """Accumulates a (C, C) confusion matrix over a whole split, on any device.

    The matrix lives on the device of the first ``pred`` passed to :meth:`update` (CPU before).
    Under ``torch.distributed``, call :meth:`sync` once after the last update: it sums the
    matrices of all ranks in place (every rank then holds the global counts).

    Args:
        num_classes: C.
        ignore_index: Target value of pixels not counted.

    Attributes:
        matrix: (C, C) int64, rows = target, columns = prediction.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self._synced = False

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add the counts of one batch.

        Args:
            pred: (N, ...) predicted class indices (e.g. ``logits.argmax(1)``).
            target: (N, ...) target indices or ``ignore_index``.

        Raises:
            RuntimeError: Called after :meth:`sync` without :meth:`reset`.
        """
        if self._synced:
            raise RuntimeError(
                "ConfusionMatrix.update after sync(): the matrix already holds every rank's "
                "counts; call reset() first"
            )
        counts = confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        if self.matrix.device != counts.device:
            self.matrix = self.matrix.to(counts.device)
        self.matrix += counts

    def reset(self) -> None:
        """Zero the counts (keeps the device)."""
        self.matrix.zero_()
        self._synced = False

    def sync(self) -> None:
        """Sum the matrices of all ranks in place when ``torch.distributed`` is initialised.

        A no-op without an initialised process group, and when already synced since the last
        :meth:`reset` (so calling it twice does not double the counts). Every rank must call it.
        """
        if self._synced or not (dist.is_available() and dist.is_initialized()):
            return
        if dist.get_world_size() > 1:
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
            self._synced = True

    def compute(
        self, class_names: Sequence[str] | None = None, exclude_from_mean: Sequence[int] = ()
    ) -> dict:
        """:func:`segmentation_metrics` of the accumulated matrix."""
        return segmentation_metrics(self.matrix, class_names, exclude_from_mean)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def segmentation_metrics(
    confusion: Tensor | np.ndarray,
    class_names: Sequence[str] | None = None,
    exclude_from_mean: Sequence[int] = (),
) -> dict:
    """Per-class and summary metrics of a confusion matrix (conventions: module docstring).

    Args:
        confusion: (C, C) non-negative counts, rows = target, columns = prediction.
        class_names: C distinct names (None = ``"0"`` .. ``"C-1"``).
        exclude_from_mean: Class indices left out of mIoU and mF1 (not out of OA or Kappa).

    Returns:
        Dict with ``per_class`` (name -> ``IoU``, ``precision``, ``recall``, ``F1``,
        ``support`` = target pixels, ``predicted`` = predicted pixels), the per-class lists
        ``IoU``, ``precision``, ``recall``, ``F1`` (class order), ``mIoU``, ``mF1``, ``OA``,
        ``Kappa`` (floats, NaN where undefined), ``class_names``, ``mean_over`` (names of the
        classes averaged), ``excluded`` (names left out by ``exclude_from_mean``) and
        ``num_pixels``.

    Raises:
        ValueError: Not a square matrix of non-negative counts, or bad names / indices.
    """
    m = torch.as_tensor(confusion).detach().cpu().to(torch.float64)
    if m.dim() != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"confusion must be a square (C, C) matrix, got {tuple(m.shape)}")
    if bool((m < 0).any()) or not bool(torch.isfinite(m).all()):
        raise ValueError("confusion must hold finite non-negative counts")
    c = m.shape[0]
    names = [str(i) for i in range(c)] if class_names is None else [str(n) for n in class_names]
    if len(names) != c or len(set(names)) != c:
        raise ValueError(f"class_names must be {c} distinct names, got {class_names!r}")
    excluded = sorted({int(i) for i in exclude_from_mean})
    if any(not 0 <= i < c for i in excluded):
        raise ValueError(
            f"exclude_from_mean indices must lie in [0, {c}), got {exclude_from_mean!r}"
        )

    tp = m.diag().tolist()
    rows = m.sum(1).tolist()  # target pixels per class
    cols = m.sum(0).tolist()  # predicted pixels per class
    total = float(m.sum())
    per = {key: [] for key in PER_CLASS_KEYS}
    for k in range(c):
        fp, fn = cols[k] - tp[k], rows[k] - tp[k]
        per["IoU"].append(_ratio(tp[k], tp[k] + fp + fn))
        per["precision"].append(_ratio(tp[k], tp[k] + fp))
        per["recall"].append(_ratio(tp[k], tp[k] + fn))
        per["F1"].append(_ratio(2 * tp[k], 2 * tp[k] + fp + fn))
    kept = [k for k in range(c) if k not in excluded]
    oa = _ratio(sum(tp), total)
    p_e = sum(r * q for r, q in zip(rows, cols)) / total**2 if total > 0 else math.nan
    kappa = _ratio(oa - p_e, 1.0 - p_e) if not math.isnan(p_e) else math.nan
    return {
        "per_class": {
            names[k]: {
                **{key: per[key][k] for key in PER_CLASS_KEYS},
                "support": int(rows[k]),
                "predicted": int(cols[k]),
            }
            for k in range(c)
        },
        **per,
        "mIoU": _nanmean([per["IoU"][k] for k in kept]),
        "mF1": _nanmean([per["F1"][k] for k in kept]),
        "OA": oa,
        "Kappa": kappa,
        "class_names": names,
        "mean_over": [names[k] for k in kept if not math.isnan(per["IoU"][k])],
        "excluded": [names[k] for k in excluded],
        "num_pixels": int(total),
    }


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100.0 * value:.2f}"


def format_metrics_table(metrics: dict) -> str:
    """Aligned text table of a :func:`segmentation_metrics` result (values in percent).

    One row per class (IoU, precision, recall, F1, target pixels; ``n/a`` where undefined,
    ``*`` marks classes left out of the means), then mIoU, mF1, OA and Kappa.

    Args:
        metrics: The dict returned by :func:`segmentation_metrics`.

    Returns:
        The table as one string, one line per row (no trailing newline).
    """
    names = list(metrics["per_class"])
    excluded = set(metrics.get("excluded", []))
    header = ["class", "IoU", "precision", "recall", "F1", "pixels"]
    rows = []
    for name in names:
        row = metrics["per_class"][name]
        label = f"{name}*" if name in excluded else name
        rows.append([label, *(_pct(row[k]) for k in PER_CLASS_KEYS), str(row.get("support", ""))])
    width = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(width[0])
        return "  ".join([first, *(v.rjust(w) for v, w in zip(cells[1:], width[1:]))])

    out = [line(header), "-" * len(line(header)), *(line(r) for r in rows), ""]
    over = metrics.get("mean_over", names)
    out.append(f"mIoU   {_pct(metrics['mIoU']):>7}   (mean over {len(over)}: {', '.join(over)})")
    out.append(f"mF1    {_pct(metrics['mF1']):>7}")
    out.append(f"OA     {_pct(metrics['OA']):>7}   (all classes, {metrics.get('num_pixels')} px)")
    out.append(f"Kappa  {_pct(metrics['Kappa']):>7}")
    if excluded:
        out.append("* left out of mIoU and mF1")
    return "\n".join(out)


class SegmentationMetrics(Metric):
    """torchmetrics wrapper: confusion-matrix state summed across processes, dict on compute.

    Use in Lightning validation: ``update(logits.argmax(1), mask)`` per batch, then
    ``compute()`` at the end of the epoch (torchmetrics sums the ``confusion`` state over ranks)
    and log the scalars you want; ``reset()`` for the next epoch.

    Args:
        num_classes: C.
        ignore_index: Target value of pixels not counted.
        class_names: C names for the per-class entries (None = indices).
        exclude_from_mean: Class indices left out of mIoU / mF1.
        **kwargs: Passed to ``torchmetrics.Metric``.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        class_names: Sequence[str] | None = None,
        exclude_from_mean: Sequence[int] = (),
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = None if class_names is None else list(class_names)
        self.exclude_from_mean = list(exclude_from_mean)
        self.add_state(
            "confusion",
            default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add the counts of one batch (see :func:`confusion_matrix`)."""
        self.confusion += confusion_matrix(
            pred.to(self.confusion.device), target, self.num_classes, self.ignore_index
        )

    def compute(self) -> dict:
        """:func:`segmentation_metrics` of the (synced) confusion matrix."""
        return segmentation_metrics(self.confusion, self.class_names, self.exclude_from_mean)
