"""Shared pieces of the segmentation loss zoo: input checks, log-probabilities, soft counts.

Conventions shared by every loss of the package (each loss's docstring repeats what applies):

- Inputs: ``logits`` (B, C, H, W) (any number of spatial dims, flattened to N pixels) and
  ``target`` (B, H, W) integer class indices in ``[0, C)`` or ``ignore_index``. Ignored pixels
  are left out of every sum (pixel terms and TP/FP/FN alike). Logits in float16/bfloat16 are
  promoted to float32 (DESIGN 3: losses in fp32 even under mixed precision).
- Class weights ``w_c`` (None = uniform). Pixel terms (CE, focal, ...) are weighted means over
  the valid pixels, ``sum_i w_{g_i} l_i / sum_i w_{g_i}`` (torch's ``CrossEntropyLoss``
  convention; the seed's ``1 / (H x W)`` mean when the weights are uniform). Region terms
  (Dice, Tversky, ...) are weighted means over classes, ``sum_c w_c L_c / sum_c w_c``.
- Region terms: TP/FP/FN are soft counts summed over the *whole batch* (all images and pixels
  together, not per image): ``TP_c = sum p_c g_c``, ``FP_c = sum p_c (1 - g_c)``,
  ``FN_c = sum (1 - p_c) g_c`` with ``p`` the softmax and ``g`` the one-hot target. The class
  mean runs over the classes *present in the target of the batch*; a class with no target pixel
  is left out (its index would be ``smooth / (alpha FP + smooth)``, about 0 whatever the
  prediction: a near-constant offset with a vanishing gradient; the probability it takes from
  the true class is penalised through that class's FN anyway). The seed writes a sum over all
  C classes; we take the mean (a constant factor C when all classes are present), so region
  losses lie in [0, 1] whatever C. smp averages over all classes and scores absent ones 0, so
  its value shrinks with the number of absent classes.
- ``smooth`` is added to numerator and denominator of the class indices. It only guards the
  division (absent classes are excluded, not smoothed); the default 1e-6 is negligible against
  batch-wide counts.
- Degenerate batches (every pixel ignored) give a loss of exactly 0 that is still connected to
  the graph (zero gradients), not NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Floor applied before raising to a power below 1, so that ``x ** e`` has a finite gradient
#: at ``x = 0`` (where the exact derivative is infinite); representable in float32.
POW_FLOOR = 1e-30


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``float(value)`` after checking ``low <(=) value <(=) high``.

    Raises:
        ValueError: The value is not a finite number in the interval (named in the message).
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    ok = math.isfinite(v)
    if low is not None:
        ok = ok and (v > low if low_open else v >= low)
    if high is not None:
        ok = ok and (v < high if high_open else v <= high)
    if not ok:
        left = "(-inf" if low is None else f"{'(' if low_open else '['}{low}"
        right = "inf)" if high is None else f"{high}{')' if high_open else ']'}"
        interval = f"{left}, {right}"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return v


def check_class_weights(class_weights: Sequence[float] | None) -> Tensor | None:
    """Validate class weights: finite, >= 0, not all zero. Returns a float64 tensor (C,) or None."""
    if class_weights is None:
        return None
    try:
        values = [float(w) for w in class_weights]
    except (TypeError, ValueError):
        raise ValueError(
            f"class_weights must be a list of C numbers or None, got {class_weights!r}"
        ) from None
    if not values or not all(math.isfinite(w) and w >= 0 for w in values) or sum(values) <= 0:
        raise ValueError(
            f"class_weights must be finite, >= 0 and not all zero, got {class_weights!r}"
        )
    return torch.tensor(values, dtype=torch.float64)


def focal_power(x: Tensor, exponent: float) -> Tensor:
    """``x ** exponent`` for ``x`` in [0, 1] with finite gradients everywhere.

    For ``exponent < 1`` the exact derivative is infinite at ``x = 0`` (and autograd would give
    ``inf * 0 = NaN`` downstream); ``x`` is floored at :data:`POW_FLOOR` first, which changes
    values only below 1e-30 and gives a zero gradient there.

    Args:
        x: Values in [0, 1], any shape.
        exponent: Power >= 0.

    Returns:
        Tensor of the shape of ``x``.
    """
    if exponent == 1.0:
        return x
    if exponent == 0.0:
        return torch.ones_like(x)
    if exponent < 1.0:
        x = x.clamp_min(POW_FLOOR)
    return x.pow(exponent)


@dataclass(frozen=True)
class Prepared:
    """Validated, flattened inputs of one loss evaluation.

    Attributes:
        log_probs: Log-softmax of the logits, (B, C, N), float32 or float64.
        target: Class indices (B, N) int64; ignored pixels hold 0 (masked by ``valid``).
        valid: (B, N) bool, False at ignored pixels.
        class_weights: (C,) weights in the dtype of ``log_probs``, or None (uniform).
    """

    log_probs: Tensor
    target: Tensor
    valid: Tensor
    class_weights: Tensor | None

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return self.log_probs.shape[1]

    def true_log_prob(self) -> Tensor:
        """``log p_{g_i}`` of each pixel's target class, (B, N) (class 0 at ignored pixels)."""
        return self.log_probs.gather(1, self.target.unsqueeze(1)).squeeze(1)

    def one_hot(self) -> Tensor:
        """One-hot target (B, C, N) in the dtype of ``log_probs``, zero at ignored pixels."""
        g = F.one_hot(self.target, self.num_classes).permute(0, 2, 1).to(self.log_probs.dtype)
        return g * self.valid.unsqueeze(1)


def flatten_inputs(
    logits: Tensor, target: Tensor, ignore_index: int, num_labels: int | None = None
) -> tuple[Tensor, Tensor]:
    """Check shapes, dtypes and label values; flatten to (B, C, N) and (B, N).

    Args:
        logits: (B, C, H, W) (or any spatial dims) floating point.
        target: (B, H, W) integer labels in ``[0, num_labels)`` or ``ignore_index``.
        ignore_index: Label value of pixels to leave out.
        num_labels: Number of valid label values (None = C).

    Returns:
        ``logits`` (B, C, N) in float32 or float64, ``target`` (B, N) int64 (unchanged values).

    Raises:
        ValueError: Bad shapes, dtypes or label values (named in the message).
    """
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise ValueError("logits and target must be torch tensors")
    if logits.dim() < 2 or not logits.is_floating_point():
        raise ValueError(
            f"logits must be a floating point tensor (B, C, H, W), got {tuple(logits.shape)} "
            f"{logits.dtype}"
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not fit logits {tuple(logits.shape)}: "
            "expected logits (B, C, H, W) and target (B, H, W)"
        )
    num_classes = logits.shape[1] if num_labels is None else num_labels
    target = target.long()
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        values = torch.unique(target[bad]).tolist()[:10]
        raise ValueError(
            f"target holds labels {values} outside [0, {num_classes}) that are not "
            f"ignore_index={ignore_index}"
        )
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    b = logits.shape[0]
    return logits.reshape(b, logits.shape[1], -1), target.reshape(b, -1)


def safe_divide(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > 0``, else ``num / 1`` (callers ensure ``num = 0`` there)."""
    return num / torch.where(den > 0, den, torch.ones_like(den))


def weighted_pixel_mean(
    per_pixel: Tensor, target: Tensor, valid: Tensor, class_weights: Tensor | None
) -> Tensor:
    """Weighted mean over valid pixels: ``sum_i w_{g_i} l_i / sum_i w_{g_i}`` (0 if none).

    Args:
        per_pixel: (B, N) pixel losses, finite everywhere (also at ignored pixels).
        target: (B, N) int64 class indices (any valid index at ignored pixels).
        valid: (B, N) bool.
        class_weights: (C,) weights in the dtype of ``per_pixel``, or None (uniform).

    Returns:
        Scalar tensor.
    """
    w = valid.to(per_pixel.dtype)
    if class_weights is not None:
        w = w * class_weights[target]
    return safe_divide((w * per_pixel).sum(), w.sum())


def pixel_mean(per_pixel: Tensor, prep: Prepared) -> Tensor:
    """:func:`weighted_pixel_mean` with the target, mask and class weights of ``prep``."""
    return weighted_pixel_mean(per_pixel, prep.target, prep.valid, prep.class_weights)


def soft_counts(prep: Prepared) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Soft TP, FP, FN per class summed over the whole batch, and which classes are present.

    ``TP_c = sum_i p_ic g_ic``, ``FP_c = sum_i p_ic (1 - g_ic)``, ``FN_c = sum_i (1 - p_ic) g_ic``
    over valid pixels i of all images, with ``1 - p`` computed as ``-expm1(log p)`` (no
    cancellation when ``p`` is close to 1).

    Args:
        prep: The prepared inputs.

    Returns:
        ``tp``, ``fp``, ``fn`` (C,) and ``present`` (C,) bool (class has a valid target pixel).
    """
    g = prep.one_hot()
    valid = prep.valid.unsqueeze(1).to(g.dtype)
    p = prep.log_probs.exp()
    q = -torch.expm1(prep.log_probs)
    tp = (p * g).sum(dim=(0, 2))
    fp = (p * (valid - g)).sum(dim=(0, 2))
    fn = (q * g).sum(dim=(0, 2))
    present = g.sum(dim=(0, 2)) > 0
    return tp, fp, fn, present


def tversky_index(
    tp: Tensor, fp: Tensor, fn: Tensor, alpha: float, beta: float, smooth: float
) -> Tensor:
    """``(TP + s) / (TP + alpha FP + beta FN + s)`` per class (a zero denominator gives 0)."""
    return safe_divide(tp + smooth, tp + alpha * fp + beta * fn + smooth)


def class_mean(per_class: Tensor, present: Tensor, prep: Prepared) -> Tensor:
    """Weighted mean over the present classes: ``sum_c w_c L_c / sum_c w_c`` (0 if none).

    Args:
        per_class: (C,) class terms, finite everywhere.
        present: (C,) bool, classes to average over.
        prep: The prepared inputs (for the class weights).

    Returns:
        Scalar tensor.
    """
    w = present.to(per_class.dtype)
    if prep.class_weights is not None:
        w = w * prep.class_weights
    return safe_divide((w * per_class).sum(), w.sum())


class SegmentationLoss(nn.Module):
    """Base of the loss zoo: holds ``ignore_index`` and ``class_weights``, prepares inputs.

    Args:
        class_weights: C non-negative weights, or None (uniform).
        ignore_index: Label value of pixels excluded from every sum.

    Attributes:
        max_classes: The most classes the loss is defined for (None: any number); configs are
            checked against it before a run starts.
    """

    max_classes: int | None = None

    def __init__(self, class_weights: Sequence[float] | None, ignore_index: int) -> None:
        super().__init__()
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise ValueError(f"ignore_index must be an int, got {ignore_index!r}")
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", check_class_weights(class_weights), persistent=False)

    def prepare(self, logits: Tensor, target: Tensor) -> Prepared:
        """Validate and flatten the inputs, compute log-probabilities (fp32 or fp64).

        Args:
            logits: (B, C, H, W).
            target: (B, H, W) integer labels.

        Returns:
            The :class:`Prepared` inputs.
        """
        logits, target = flatten_inputs(logits, target, self.ignore_index)
        valid = target != self.ignore_index
        weights = self.class_weights
        if weights is not None:
            if weights.numel() != logits.shape[1]:
                raise ValueError(
                    f"class_weights has {weights.numel()} entries but the logits have "
                    f"{logits.shape[1]} classes"
                )
            weights = weights.to(device=logits.device, dtype=logits.dtype)
        return Prepared(
            log_probs=F.log_softmax(logits, dim=1),
            target=torch.where(valid, target, torch.zeros_like(target)),
            valid=valid,
            class_weights=weights,
        )

    def extra_repr(self) -> str:  # noqa: D102
        weights = None if self.class_weights is None else self.class_weights.tolist()
        return f"class_weights={weights}, ignore_index={self.ignore_index}"
