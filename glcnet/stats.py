"""Statistics of the protocol over seeds: mean ± sample std, and paired differences with t-intervals.

Every init of a protocol row is fine-tuned on the same label subset at each seed, so the
comparison with random init is paired: the difference is taken seed by seed and its mean gets a
Student-t confidence interval with n - 1 degrees of freedom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as _stats


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (ddof=1) of n values; std is NaN for n < 2."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class PairedDifference:
    """Mean of the paired differences ``a_i - b_i`` and its confidence interval.

    Attributes:
        mean: Mean difference.
        low, high: Bounds of the t-interval (NaN for n < 2).
        n: Number of pairs.
        confidence: Level of the interval, e.g. 0.95.
    """

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely above or below 0 (False when undefined)."""
        return not math.isnan(self.low) and (self.low > 0 or self.high < 0)


def summarize(values: Sequence[float]) -> Summary:
    """Mean and sample standard deviation (ddof=1) of ``values``; NaN entries are an error.

    Args:
        values: n >= 1 numbers.

    Returns:
        The summary (``std`` NaN when n = 1).
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("no values to summarize")
    if any(math.isnan(v) for v in vals):
        raise ValueError(f"cannot summarize NaN values: {vals}")
    n = len(vals)
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else float("nan")
    return Summary(mean, std, n)


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> PairedDifference:
    """Mean of ``a_i - b_i`` with its two-sided Student-t interval.

    The interval is ``mean ± t_{(1+c)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard
    deviation (ddof=1) of the differences.

    Args:
        a: n values (e.g. a pretrained init's mIoU per seed).
        b: n values paired with ``a`` (random init, same seeds).
        confidence: Level c in (0, 1).

    Returns:
        The paired difference (bounds NaN for n = 1; equal to the mean when all differences are
        equal).
    """
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diff = summarize([float(x) - float(y) for x, y in zip(a, b)])
    if diff.n < 2:
        return PairedDifference(diff.mean, float("nan"), float("nan"), diff.n, confidence)
    half = float(_stats.t.ppf((1 + confidence) / 2, diff.n - 1)) * diff.std / math.sqrt(diff.n)
    return PairedDifference(diff.mean, diff.mean - half, diff.mean + half, diff.n, confidence)
