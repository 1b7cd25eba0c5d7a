"""The noise of a measured accuracy, and of a difference of two (book: Lab 2's theory, "noise").

An accuracy p on n independent test images has a standard error of about sqrt(p (1 - p) / n); over
seeds, the sample standard deviation. A difference of two independent measurements has the root of
the sum of their squared standard errors: larger than either side's.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

__all__ = ["binomial_se", "mean_std", "pm", "difference", "verdict", "t_cdf", "t_quantile", "Seeds", "Side",
           "Comparison", "compare"]


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


# --------------------------------------------------------------------------- verdict sentences

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b), 0 <= x <= 1."""
    if x <= 0 or x >= 1:
        return float(x >= 1)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (any real df > 0; inf: the normal)."""
    if not df > 0:
        raise ValueError(f"df must be positive, got {df!r}")
    if math.isinf(df):
        return 0.5 * math.erfc(-t / math.sqrt(2))
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with ``t_cdf(t, df) == p`` (0 < p < 1), by bisection: e.g. 4.303 for p = 0.975, df = 2."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    lo, hi = -1.0, 1.0
    while t_cdf(lo, df) > p and lo > -1e15:   # bracket the quantile (|t| < 1e15 for p in (0, 1))
        lo *= 2
    while t_cdf(hi, df) < p and hi < 1e15:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Side:
    """One side of a comparison: an accuracy on ``images`` test images, or the accuracies of seeds."""
    name: str
    mean: float
    var: float          # variance of the mean (squared standard error)
    df: float           # its degrees of freedom (inf for a binomial standard error)
    described: str      # "86.23 % (509 images)" or "86.23 ± 0.43 % (3 seeds)"


@dataclass(frozen=True)
class Seeds:
    """Accuracies over seeds known only by their mean, sample standard deviation and count (e.g. an
    entry of another lab's results file), as one side of :func:`compare`."""
    mean: float
    std: float
    n: int


def _side(name, value, images) -> Side:
    if not isinstance(name, str) or not name:
        raise ValueError(f"compare: each side needs a name (a non-empty str), got {name!r}")
    if isinstance(value, Seeds):
        if isinstance(value.n, bool) or not isinstance(value.n, int) or value.n < 2 or not value.std >= 0:
            raise ValueError(f"compare: {name!r} needs two seeds or more and a standard deviation, got {value!r}")
        if not 0 <= value.mean <= 1:
            raise ValueError(f"compare: {name!r} holds a mean outside [0, 1]; pass accuracies as fractions")
        return Side(name, float(value.mean), float(value.std) ** 2 / value.n, value.n - 1,
                    f"{value.mean * 100:.2f} ± {value.std * 100:.2f} % ({value.n} seeds)")
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if images is None:
            raise ValueError(f"compare: {name!r} is one accuracy; pass images= (how many test images "
                             f"it was measured on) so that its noise is known")
        se = binomial_se(float(value), images)
        return Side(name, float(value), se ** 2, math.inf, f"{value * 100:.2f} % ({images} images)")
    values = [float(v) for v in value]
    if len(values) < 2:
        raise ValueError(f"compare: {name!r} has {len(values)} seed(s); the noise over seeds needs two "
                         f"or more (or pass one accuracy with images=)")
    if not all(0 <= v <= 1 for v in values):
        raise ValueError(f"compare: {name!r} holds values outside [0, 1]; pass accuracies as fractions")
    mean, std = mean_std(values)
    return Side(name, mean, std ** 2 / len(values), len(values) - 1, f"{pm(values)} ({len(values)} seeds)")


@dataclass(frozen=True)
class Comparison:
    """Which of two accuracies is higher, by how much, and whether that is beyond the noise.

    ``diff`` = a - b; ``se`` its standard error, the root of the sum of both sides' squared
    standard errors; ``margin`` = the two-sided 95 % critical value times ``se`` (the normal's 1.96
    for accuracies on test images; Student's t with Welch-Satterthwaite degrees of freedom when a
    side is a mean over seeds: 2.78 for 3 seeds against 3 of equal spread, 4 degrees of freedom).
    When neither side shows any noise (seeds that all scored alike), the noise cannot be estimated
    and nothing is called beyond it. ``str()`` is the sentence.
    """
    a: Side
    b: Side
    diff: float
    se: float
    df: float
    margin: float

    @property
    def noise_known(self) -> bool:
        return self.se > 0

    @property
    def beyond_noise(self) -> bool:
        return self.noise_known and abs(self.diff) > self.margin

    @property
    def higher(self) -> str | None:
        """The name of the higher side, None when they are equal."""
        return None if self.diff == 0 else (self.a.name if self.diff > 0 else self.b.name)

    def test(self) -> str:
        """Which test the margin comes from, in words."""
        seeds = [not math.isinf(side.df) for side in (self.a, self.b)]
        dof = f"{self.df:.1f} degrees of freedom" if self.df < 1000 else "normal approximation"
        if not any(seeds):
            return "95 %, binomial standard errors"
        if all(seeds):
            return f"95 %, Welch's t-test over the seeds, the same test images on both sides, {dof}"
        return f"95 %, the seeds' and the test images' standard errors, Student's t, {dof}"

    def __str__(self) -> str:
        a, b = self.a, self.b
        if self.diff == 0:
            return f"{a.name} and {b.name} score the same, {a.described} and {b.described}."
        word = "higher" if self.diff > 0 else "lower"
        head = f"{a.name}, {a.described}, is {word} than {b.name}, {b.described}, by {abs(self.diff) * 100:.2f} points"
        if not self.noise_known:
            return (f"{head}; neither side shows any spread (every seed scored alike), so the noise cannot be "
                    f"estimated and this run does not say whether the difference is real.")
        head += f" (standard error {self.se * 100:.2f})"
        if self.beyond_noise:
            return f"{head}: beyond the noise (more than {self.margin * 100:.2f} points; {self.test()})."
        return (f"{head}: within the noise (a difference below {self.margin * 100:.2f} points cannot be told "
                f"from chance; {self.test()}), so this run does not tell them apart.")


def compare(a_name: str, a, b_name: str, b, *, images=None) -> Comparison:
    """Compare two accuracies (fractions) and say it in a sentence: ``print(stats.compare(...))``.

    Each of ``a`` and ``b`` is one accuracy measured on ``images`` test images (an int, or a pair
    for the two sides), a sequence of accuracies over seeds (two or more), or a :class:`Seeds`. Two
    accuracies on test images: binomial standard errors and the normal's 95 % value; a side over
    seeds: its standard error over seeds (the spread from seed to seed on the same test images), and
    Student's t with Welch-Satterthwaite degrees of freedom.
    """
    na, nb = tuple(images) if isinstance(images, (tuple, list)) else (images, images)
    sa, sb = _side(a_name, a, na), _side(b_name, b, nb)
    var = sa.var + sb.var
    parts = [(v, d) for v, d in ((sa.var, sa.df), (sb.var, sb.df)) if v > 0 and not math.isinf(d)]
    df = math.inf if not parts else var ** 2 / sum(v ** 2 / d for v, d in parts)
    crit = t_quantile(0.975, df) if not math.isinf(df) else 1.959963984540054
    se = math.sqrt(var)
    return Comparison(sa, sb, sa.mean - sb.mean, se, df, crit * se)

