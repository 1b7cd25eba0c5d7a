"""The noise of a measured accuracy, and of a difference of two (book: Lab 2's theory, "noise").

An accuracy p on n independent test images has a standard error of about sqrt(p (1 - p) / n); over
seeds, the sample standard deviation. A difference of two independent measurements has the root of
the sum of their squared standard errors: larger than either side's.

Two models or methods measured on the same test images are compared image by image:
:func:`mcnemar` for two models, one run each (McNemar's exact test on the images where they
disagree, with the paired difference's interval), :func:`compare_seeds` for two methods over seeds
(both sources of noise, the seeds and the sampling of the test images). :func:`compare` is the
older rule that counts one source at a time; the notebooks' stored outputs still print it.
Distributions come from ``scipy.stats``.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["binomial_se", "mean_std", "pm", "difference", "verdict", "t_cdf", "t_quantile", "Seeds", "Side",
           "Comparison", "compare", "Paired", "mcnemar", "SeedComparison", "compare_seeds"]


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

def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (any real df > 0; inf: the normal),
    by ``scipy.stats.t``."""
    if not df > 0:
        raise ValueError(f"df must be positive, got {df!r}")
    from scipy.stats import t as student_t   # here, not at the top: scipy.stats takes 0.7 s to import
    return float(student_t.cdf(t, df))


def t_quantile(p: float, df: float) -> float:
    """The t with ``t_cdf(t, df) == p`` (0 < p < 1), by ``scipy.stats.t``: e.g. 4.303 for p = 0.975, df = 2."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p!r}")
    if not df > 0:
        raise ValueError(f"df must be positive, got {df!r}")
    from scipy.stats import t as student_t
    return float(student_t.ppf(p, df))


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


class _Verdict:
    """What a comparison of two sides ``a``, ``b`` with a difference ``diff``, its standard error ``se``
    and a 95 % ``margin`` says (shared by `Comparison` and `SeedComparison`)."""

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


@dataclass(frozen=True)
class Comparison(_Verdict):
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



# --------------------------------------------------------------------------- image by image
# The verdicts above count one source of noise at a time: the test images (one accuracy each) or
# the seeds (Welch's t over the seeds' accuracies, the test images held fixed). The course asks
# whether a model or a method is better, not whether another seed would change this run, so the
# verdicts below take each model's per-image correctness on the images both were measured on:
# a shared image that both get right or both get wrong carries no information about the difference.

_Z95 = 1.959963984540054      # the normal's two-sided 95 % value


def _correctness(name: str, value, where: str) -> np.ndarray:
    """``value`` as a float array of 0/1 (bool, or integers/floats that are 0 or 1)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: each side needs a name (a non-empty str), got {name!r}")
    if hasattr(value, "detach"):                              # a torch tensor, on any device
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype != bool:
        if arr.dtype.kind not in "iuf" or not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{where}: {name!r} must hold per-image correctness (bool, True where the "
                             f"prediction equals the label), got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{where}: {name!r} holds no images")
    return arr.astype(np.float64)


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


@dataclass(frozen=True)
class Paired:
    """Two models, one run each, compared image by image on the same ``n`` test images.

    ``a_only`` images are right for a and wrong for b, ``b_only`` the reverse; the images both get
    right (or both wrong) say nothing about which is better. If neither model is better, each of
    the ``a_only + b_only`` disagreements goes either way with probability 1/2: ``p_value`` is that
    exact two-sided binomial test (McNemar's exact test, ``scipy.stats.binomtest``; Dietterich
    1998). ``diff`` = acc(a) - acc(b) = (a_only - b_only) / n.

    ``low``, ``high``: 95 % interval of the difference on the population the images were drawn
    from, the Bonett-Price adjusted Wald interval: with p01 = (a_only + 1) / (n + 2), p10 =
    (b_only + 1) / (n + 2) and d = p01 - p10, d ± 1.96 sqrt((p01 + p10 - d^2) / (n + 2)). Why this
    one: the exact test gives a p-value but no interval; the plain Wald interval (no + 1) has zero
    width when the models never disagree and falls short with few disagreements; the exact
    interval of the share of disagreements won, scaled by the observed number of disagreements,
    treats that number as known and falls short when one model wins most of them (72 % with 5 and 1
    disagreements per 509 images expected). The adjusted Wald interval holds 95 % in simulation
    (tests/test_stats_simulation.py), and more when the models rarely disagree.
    The verdict is the test's (p < 0.05); ``str()`` is the sentence.
    """
    a_name: str
    b_name: str
    n: int
    a_acc: float
    b_acc: float
    a_only: int
    b_only: int
    p_value: float
    low: float
    high: float

    @property
    def diff(self) -> float:
        return (self.a_only - self.b_only) / self.n

    @property
    def disagreements(self) -> int:
        return self.a_only + self.b_only

    @property
    def beyond_noise(self) -> bool:
        return self.p_value < 0.05

    @property
    def higher(self) -> str | None:
        """The name of the higher side, None when they are equal."""
        return None if self.a_only == self.b_only else (self.a_name if self.diff > 0 else self.b_name)

    def test(self) -> str:
        """The test and its counts, in words."""
        return (f"McNemar's exact test on the {self.disagreements} images where they disagree, "
                f"{self.a_only} for {self.a_name} and {self.b_only} for {self.b_name}: {_p_text(self.p_value)}")

    def __str__(self) -> str:
        a = f"{self.a_name}, {self.a_acc * 100:.2f} % ({self.n} images)"
        b = f"{self.b_name}, {self.b_acc * 100:.2f} % (the same images)"
        if self.disagreements == 0:
            return (f"{self.a_name} and {self.b_name} are right on exactly the same {self.n} images, "
                    f"{self.a_acc * 100:.2f} %: no disagreement, so no difference to judge.")
        interval = f"95 % interval {self.low * 100:.2f} to {self.high * 100:.2f}"
        if self.diff == 0:
            return (f"{a}, and {b} score the same ({interval}): within the noise ({self.test()}), "
                    f"so this run does not tell them apart.")
        word = "higher" if self.diff > 0 else "lower"
        head = f"{a}, is {word} than {b}, by {abs(self.diff) * 100:.2f} points ({interval})"
        if self.beyond_noise:
            return f"{head}: beyond the noise ({self.test()} < 0.05)."
        return f"{head}: within the noise ({self.test()} >= 0.05), so this run does not tell them apart."


def mcnemar(a_name: str, a_correct, b_name: str, b_correct) -> Paired:
    """Compare two models, one run each, on the same test images: ``print(stats.mcnemar(...))``.

    ``a_correct``, ``b_correct``: per-image correctness, shape (images,), bool (True where the
    prediction equals the label), the same images in the same order on both sides. See
    :class:`Paired` for the test and the interval.
    """
    a, b = _correctness(a_name, a_correct, "mcnemar"), _correctness(b_name, b_correct, "mcnemar")
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"mcnemar: pass one run per side, shape (images,), on the same images; got shapes "
                         f"{a.shape} and {b.shape} (runs over seeds: stats.compare_seeds)")
    n = a.size
    a_only, b_only = int((a * (1 - b)).sum()), int((b * (1 - a)).sum())
    m = a_only + b_only
    from scipy.stats import binomtest
    p_value = 1.0 if m == 0 else float(binomtest(a_only, m, 0.5).pvalue)
    p01, p10 = (a_only + 1) / (n + 2), (b_only + 1) / (n + 2)      # Bonett-Price: one added to each
    d = p01 - p10
    half = _Z95 * math.sqrt((p01 + p10 - d * d) / (n + 2))
    return Paired(a_name, b_name, n, float(a.mean()), float(b.mean()), a_only, b_only, p_value,
                  max(d - half, -1.0), min(d + half, 1.0))


@dataclass(frozen=True)
class SeedComparison(_Verdict):
    """Two methods, several seeds each, compared on the same ``images`` test images, counting both
    sources of noise (Bouthillier et al. 2021): the seeds (another seed trains another model) and
    the test images (another draw of test images from the same population scores differently).

    With a's per-image correctness X (seeds_a, images), Y likewise for b, ``diff`` = mean(X) -
    mean(Y), and its variance is the sum of
      - the images': var_i(mean_s X_si - mean_s Y_si) / images, the spread over images of the
        per-image difference (this holds the seed-by-image noise too);
      - each side's seeds': s_r^2 / seeds - MS_res / (seeds images), the variance of the seeds'
        accuracies r_s over seeds, less the seed-by-image part already counted (MS_res, the
        residual mean square of the two-way table), and at least 0. A side with one run is a fixed
        model (e.g. the pretrained one): no seed noise.
    ``df``: Satterthwaite's degrees of freedom of that sum, taken as each side's s_r^2 / seeds
    (seeds - 1 degrees of freedom, as in Welch's t) plus the rest (images - 1): with a few seeds and
    seed noise that dominates, about Welch's; with many images' noise, many more.
    ``margin`` = Student's t 97.5 % value (``scipy.stats.t``) times
    ``se``; the 95 % interval is diff ± margin. When no part shows any noise, nothing is called
    beyond it. ``str()`` is the sentence.
    """
    a: Side             # var: the side's seed part of the variance; df: seeds - 1 (inf for one run)
    b: Side
    images: int
    image_var: float    # the images' part of the variance
    diff: float
    se: float
    df: float
    margin: float

    @property
    def low(self) -> float:
        return self.diff - self.margin

    @property
    def high(self) -> float:
        return self.diff + self.margin

    def test(self) -> str:
        """Which noise the margin counts and its test, in words."""
        dof = f"{self.df:.1f} degrees of freedom" if self.df < 1000 else "normal approximation"
        return f"95 %, the seeds' and the test images' noise, {self.images} images shared, Student's t, {dof}"

    def __str__(self) -> str:
        a, b = self.a, self.b
        if self.diff == 0:
            return f"{a.name} and {b.name} score the same, {a.described} and {b.described}, on the same {self.images} images."
        word = "higher" if self.diff > 0 else "lower"
        head = f"{a.name}, {a.described}, is {word} than {b.name}, {b.described}, by {abs(self.diff) * 100:.2f} points"
        if not self.noise_known:
            return (f"{head}; no seed and no image shows any spread, so the noise cannot be estimated and this "
                    f"run does not say whether the difference is real.")
        head += (f" (standard error {self.se * 100:.2f}, 95 % interval {self.low * 100:.2f} "
                 f"to {self.high * 100:.2f})")
        if self.beyond_noise:
            return f"{head}: beyond the noise (more than {self.margin * 100:.2f} points; {self.test()})."
        return (f"{head}: within the noise (a difference below {self.margin * 100:.2f} points cannot be told "
                f"from chance; {self.test()}), so this run does not tell them apart.")


def _seed_side(name: str, X: np.ndarray) -> tuple[Side, float]:
    """One side of :func:`compare_seeds` (X: (seeds, images) of 0/1) and s_r^2 / seeds, the variance of
    its mean accuracy over seeds with the images held fixed (Welch's term, seeds - 1 degrees of freedom)."""
    seeds, images = X.shape
    right = X.sum(axis=1)                                     # (seeds,) images right, whole numbers
    acc = right / images                                      # (seeds,) each seed's accuracy
    if seeds == 1:
        return Side(name, float(acc[0]), 0.0, math.inf, f"{acc[0] * 100:.2f} % (one run)"), 0.0
    residual = X - acc[:, None] - X.mean(axis=0)[None, :] + X.mean()   # (seeds, images)
    ms_res = float((residual ** 2).sum()) / ((seeds - 1) * (images - 1))
    s2 = float(right.var(ddof=1)) / images ** 2               # from the counts: exactly 0 when all seeds agree
    var = max(s2 / seeds - ms_res / (seeds * images), 0.0)
    return Side(name, float(acc.mean()), var, seeds - 1, f"{pm(acc)} ({seeds} seeds)"), s2 / seeds


def compare_seeds(a_name: str, a_correct, b_name: str, b_correct) -> SeedComparison:
    """Compare two methods run over seeds on the same test images: ``print(stats.compare_seeds(...))``.

    ``a_correct``, ``b_correct``: per-image correctness, shape (seeds, images), bool, one row per
    seed (the seeds' counts may differ; one row, or shape (images,), is one fixed model), the same
    images in the same order on both sides. See :class:`SeedComparison` for the variance and the
    interval; two single runs: :func:`mcnemar`.
    """
    X, Y = (_correctness(name, v, "compare_seeds") for name, v in ((a_name, a_correct), (b_name, b_correct)))
    X, Y = np.atleast_2d(X), np.atleast_2d(Y)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[1] != Y.shape[1]:
        raise ValueError(f"compare_seeds: pass (seeds, images) per side on the same images; got shapes "
                         f"{X.shape} and {Y.shape}")
    if X.shape[0] == 1 and Y.shape[0] == 1:
        raise ValueError("compare_seeds: both sides are one run; compare them with stats.mcnemar")
    images = X.shape[1]
    if images < 2:
        raise ValueError("compare_seeds: the images' noise needs two images or more")
    (sa, welch_a), (sb, welch_b) = _seed_side(a_name, X), _seed_side(b_name, Y)
    per_image = X.mean(axis=0) - Y.mean(axis=0)               # (images,) the seeds' mean difference per image
    image_var = float(per_image.var(ddof=1)) / images
    var = image_var + sa.var + sb.var
    # Satterthwaite over the independent mean squares: each side's seeds' (Welch's term, seeds - 1
    # degrees of freedom, which holds that side's seed-by-image part too) and the rest (images - 1)
    parts = [(welch_a, sa.df), (welch_b, sb.df), (var - welch_a - welch_b, images - 1)]
    parts = [(v, d) for v, d in parts if v != 0 and not math.isinf(d)]
    df = math.inf if not parts or var == 0 else var ** 2 / sum(v ** 2 / d for v, d in parts)
    se = math.sqrt(var)
    crit = t_quantile(0.975, df) if not math.isinf(df) else _Z95
    return SeedComparison(sa, sb, images, image_var, float(per_image.mean()), se, df, crit * se)
