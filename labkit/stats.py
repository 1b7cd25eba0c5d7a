"""The noise of a measured accuracy, and of a difference of two (book: Lab 2's theory, "noise").

An accuracy p on n independent test images has a standard error of about sqrt(p (1 - p) / n); over
seeds, the sample standard deviation. A difference of two independent measurements has the root of
the sum of their squared standard errors: larger than either side's.
"""
from __future__ import annotations

import math
from typing import Sequence

__all__ = ["binomial_se", "mean_std", "pm", "difference", "verdict"]


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` independent images: sqrt(p (1 - p) / n)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (the number of test images), got {n!r}")
    if not 0 <= p <= 1:
        raise ValueError(f"p must be an accuracy in [0, 1], got {p!r}")
    return math.sqrt(p * (1 - p) / n)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; NaN for one value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std: no values")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def pm(values: Sequence[float], *, percent: bool = True) -> str:
    """``'84.21 ± 0.35 %'``: the mean ± sample standard deviation of accuracies (fractions)."""
    mean, std = mean_std(values)
    scale, unit = (100, " %") if percent else (1, "")
    if math.isnan(std):
        return f"{mean * scale:.2f}{unit}"
    return f"{mean * scale:.2f} ± {std * scale:.2f}{unit}"


def difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """mean(a) - mean(b) and its standard error over seeds, sqrt(s_a^2 / n_a + s_b^2 / n_b)
    (sample standard deviations; needs two values or more on each side)."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    if math.isnan(sa) or math.isnan(sb):
        raise ValueError("difference: need two seeds or more on each side to estimate the noise")
    return ma - mb, math.sqrt(sa ** 2 / len(a) + sb ** 2 / len(b))


def verdict(diff: float, se: float) -> str:
    """'beyond the noise' when |diff| exceeds two standard errors, else 'within the noise'."""
    return "beyond the noise (> 2 standard errors)" if abs(diff) > 2 * se else "within the noise (<= 2 standard errors)"
