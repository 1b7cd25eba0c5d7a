"""labkit.stats: the noise of accuracies and of their differences, against hand values (the simulations that
prove the intervals: tests/test_stats_simulation.py)."""
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats as scipy_stats

from labkit import stats


def test_binomial_standard_error_and_seed_statistics_against_hand_values():
    assert stats.binomial_se(0.5, 100) == pytest.approx(0.05)
    assert stats.binomial_se(0.9164, 1017) == pytest.approx((0.9164 * 0.0836 / 1017) ** 0.5)
    mean, std = stats.mean_std([0.80, 0.82, 0.84])
    assert mean == pytest.approx(0.82) and std == pytest.approx(0.02)     # sample std, n - 1
    assert stats.pm([0.80, 0.82, 0.84]) == "82.00 ± 2.00 %"
    with pytest.raises(ValueError, match="n must be"):
        stats.binomial_se(0.5, 0)


def test_difference_of_means_and_its_standard_error_by_hand():
    diff, se = stats.difference([0.80, 0.82, 0.84], [0.70, 0.71, 0.72])
    assert diff == pytest.approx(0.11)
    assert se == pytest.approx(((0.02 ** 2) / 3 + (0.01 ** 2) / 3) ** 0.5)
    assert stats.verdict(diff, se).startswith("beyond") and stats.verdict(0.01, 0.01).startswith("within")
    # unequal seed counts: each variance is divided by its own count
    diff, se = stats.difference([0.80, 0.84], [0.70, 0.71, 0.72, 0.73])
    assert diff == pytest.approx(0.82 - 0.715)
    s_a2, s_b2 = 0.0008, sum((v - 0.715) ** 2 for v in (0.70, 0.71, 0.72, 0.73)) / 3
    assert se == pytest.approx((s_a2 / 2 + s_b2 / 4) ** 0.5)
    with pytest.raises(ValueError, match="two seeds"):
        stats.difference([0.8], [0.7, 0.71])


# ----------------------------------------------------------------- verdict sentences (stats.compare)

@pytest.mark.parametrize("df, t", [(1, 12.706205), (2, 4.302653), (3, 3.182446), (4, 2.776445),
                                   (10, 2.228139), (30, 2.042272), (math.inf, 1.959964)])
def test_t_quantile_matches_the_printed_table(df, t):
    assert stats.t_quantile(0.975, df) == pytest.approx(t, abs=1e-5)
    assert stats.t_quantile(0.025, df) == pytest.approx(-t, abs=1e-5)      # symmetric
    assert stats.t_cdf(t, df) == pytest.approx(0.975, abs=1e-6)


def test_t_cdf_against_closed_forms():
    # df = 1 is the Cauchy distribution, df = 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    for t in (-3.0, -0.5, 0.0, 0.7, 5.0):
        assert stats.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
        assert stats.t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)
    with pytest.raises(ValueError, match="df"):
        stats.t_cdf(1.0, 0)


def test_compare_two_accuracies_on_test_images_uses_both_standard_errors():
    c = stats.compare("(e)", 0.86, "(c)", 0.84, images=509)
    se = math.sqrt(0.86 * 0.14 / 509 + 0.84 * 0.16 / 509)            # root of the sum of squares
    assert c.diff == pytest.approx(0.02) and c.se == pytest.approx(se) and math.isinf(c.df)
    assert c.margin == pytest.approx(1.959964 * se, rel=1e-6)
    assert not c.beyond_noise and c.higher == "(e)"                    # 2.0 points < 4.4 points
    text = str(c)
    assert text.startswith("(e), 86.00 % (509 images), is higher than (c), 84.00 % (509 images), by 2.00 points "
                           f"(standard error {se * 100:.2f}): within the noise")
    assert "within the noise" in text and "does not tell them apart" in text
    worse = stats.compare("A", 0.60, "B", 0.90, images=(1017, 509))
    assert worse.diff == pytest.approx(-0.30) and worse.beyond_noise and worse.higher == "B"
    assert worse.se == pytest.approx(math.sqrt(0.6 * 0.4 / 1017 + 0.9 * 0.1 / 509))
    assert str(worse).startswith("A, 60.00 % (1017 images), is lower than B, 90.00 % (509 images), by 30.00 points")
    assert "beyond the noise" in str(worse)


def test_compare_equal_accuracies_says_so():
    c = stats.compare("A", 0.5, "B", 0.5, images=100)
    assert c.diff == 0 and c.higher is None and not c.beyond_noise
    assert str(c) == "A and B score the same, 50.00 % (100 images) and 50.00 % (100 images)."


def test_compare_over_seeds_is_welchs_t_test():
    a, b = [0.80, 0.82, 0.84], [0.70, 0.71, 0.72]
    c = stats.compare("a", a, "b", b)
    va, vb = 0.02 ** 2 / 3, 0.01 ** 2 / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)                  # Welch-Satterthwaite
    assert c.df == pytest.approx(df) and c.se == pytest.approx(math.sqrt(va + vb))
    assert c.margin == pytest.approx(stats.t_quantile(0.975, df) * math.sqrt(va + vb))
    assert c.beyond_noise and "Welch's t-test over the seeds, the same test images" in str(c) and "82.00 ± 2.00 % (3 seeds)" in str(c)
    # equal spreads, 3 + 3 seeds: 4 degrees of freedom, t = 2.776; a difference of 2.7 SE is within
    sd = 0.01
    a = [0.80 - sd, 0.80, 0.80 + sd]
    se = math.sqrt(2 * sd ** 2 / 3)
    b = [v - 2.7 * se for v in a]
    near = stats.compare("a", a, "b", b)
    assert near.df == pytest.approx(4) and not near.beyond_noise       # a z-test (1.96) would say beyond
    assert "(a difference below" in str(near) and "Welch's t-test over the seeds" in str(near)
    assert "4.0 degrees of freedom" in str(near)
    far = stats.compare("a", a, "b", [v - 2.9 * se for v in a])
    assert far.beyond_noise


def test_compare_seeds_against_one_accuracy_adds_its_binomial_noise():
    c = stats.compare("Lab 3 (e)", [0.80, 0.82, 0.84], "float", 0.90, images=509)
    va, vb = 0.02 ** 2 / 3, 0.9 * 0.1 / 509
    assert c.se == pytest.approx(math.sqrt(va + vb))
    assert c.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 2))      # the binomial side has df = inf
    assert c.higher == "float"
    assert "the seeds' and the test images' standard errors, Student's t, 10.8 degrees of freedom" in str(c)
    tight = stats.compare("a", [0.5, 0.5 + 1e-6, 0.5 + 2e-6], "b", 0.52, images=10_000)   # binomial side dominates
    assert "test images' standard errors, Student's t, normal approximation" in str(tight)
    assert tight.df > 1e15 and tight.margin == pytest.approx(1.959964 * tight.se, rel=1e-6)  # the hand-written t broke there
    assert stats.compare("a", np.float32(0.5), "b", 0.6, images=[100, 200]).se == \
        pytest.approx(math.sqrt(0.25 / 100 + 0.24 / 200))                 # numpy scalars, a list of counts


def test_compare_without_any_spread_does_not_call_a_difference_real():
    c = stats.compare("a", [0.5, 0.5, 0.5], "b", [0.51, 0.51, 0.51])     # e.g. collapsed models, all alike
    assert not c.noise_known and not c.beyond_noise and c.higher == "b"
    assert "the noise cannot be estimated" in str(c) and "beyond" not in str(c)
    mixed = stats.compare("a", [0.5, 0.5, 0.5], "b", 0.6, images=100)  # the binomial side still has noise
    assert mixed.noise_known and "the seeds' and the test images' standard errors" in str(mixed)


@pytest.mark.parametrize("kwargs, match", [
    (dict(a=0.8, b=0.7), "images="),                     # one accuracy needs its image count
    (dict(a=[0.8], b=[0.7, 0.71]), "two"),               # one seed has no spread
    (dict(a=[80.0, 82.0], b=[0.7, 0.71]), r"\[0, 1\]"),  # percent given for a fraction
])
def test_compare_refuses_what_it_cannot_judge(kwargs, match):
    with pytest.raises(ValueError, match=match):
        stats.compare("a", kwargs["a"], "b", kwargs["b"])


def test_compare_with_seeds_known_by_their_summary_equals_compare_with_the_values():
    a, b = [0.80, 0.82, 0.84], [0.70, 0.71, 0.72]
    mean, std = stats.mean_std(b)
    full, short = stats.compare("a", a, "b", b), stats.compare("a", a, "b", stats.Seeds(mean, std, 3))
    assert (short.diff, short.se, short.df, short.margin) == pytest.approx((full.diff, full.se, full.df, full.margin))
    assert str(short) == str(full)
    with pytest.raises(ValueError, match="two seeds or more"):
        stats.compare("a", a, "b", stats.Seeds(0.7, 0.01, 1))
    with pytest.raises(ValueError, match="outside"):
        stats.compare("a", a, "b", stats.Seeds(70.0, 1.0, 3))


def test_t_distribution_is_scipys():
    for df in (1, 2.3, 4, 17.5, 300, 1e6, 1e12):
        assert stats.t_quantile(0.975, df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-12)
        assert stats.t_cdf(-1.7, df) == pytest.approx(scipy_stats.t.cdf(-1.7, df), rel=1e-12)
    with pytest.raises(ValueError, match="df"):
        stats.t_quantile(0.975, 0)
    with pytest.raises(ValueError, match="p must"):
        stats.t_quantile(1.0, 3)


# ------------------------------------------------------------------------ image by image: McNemar

def _paired(both, a_only, b_only, neither):
    """Per-image correctness of two models with the given counts of the four cells."""
    a = [True] * both + [True] * a_only + [False] * b_only + [False] * neither
    b = [True] * both + [False] * a_only + [True] * b_only + [False] * neither
    return np.array(a), np.array(b)


def _exact_p(k, m):
    """Two-sided exact binomial p-value of k of m under p = 1/2, by hand: the total probability of
    the outcomes no more likely than k."""
    return float(min(1, sum(Fraction(math.comb(m, j), 2 ** m) for j in range(m + 1) if math.comb(m, j) <= math.comb(m, k))))


@pytest.mark.parametrize("both, a_only, b_only, neither", [(400, 20, 8, 81), (900, 46, 15, 56), (80, 3, 3, 14),
                                                           (50, 0, 5, 5), (950, 30, 31, 6)])
def test_mcnemar_counts_p_value_and_interval_against_hand_computation(both, a_only, b_only, neither):
    a, b = _paired(both, a_only, b_only, neither)
    perm = np.random.default_rng(0).permutation(a.size)                # the order of the images is irrelevant
    r = stats.mcnemar("A", a[perm], "B", b[perm])
    n = a.size
    assert (r.n, r.a_only, r.b_only, r.disagreements) == (n, a_only, b_only, a_only + b_only)
    assert r.a_acc == pytest.approx((both + a_only) / n) and r.b_acc == pytest.approx((both + b_only) / n)
    assert r.diff == pytest.approx(r.a_acc - r.b_acc)
    assert r.p_value == pytest.approx(_exact_p(a_only, a_only + b_only), rel=1e-9)
    assert r.beyond_noise == (r.p_value < 0.05)
    p01, p10 = (a_only + 1) / (n + 2), (b_only + 1) / (n + 2)          # Bonett-Price, by hand
    half = scipy_stats.norm.ppf(0.975) * math.sqrt((p01 + p10 - (p01 - p10) ** 2) / (n + 2))
    assert (r.low, r.high) == pytest.approx((p01 - p10 - half, p01 - p10 + half), rel=1e-12, abs=1e-15)
    swapped = stats.mcnemar("B", b, "A", a)                            # symmetric
    assert swapped.p_value == pytest.approx(r.p_value) and swapped.diff == pytest.approx(-r.diff)
    assert (swapped.low, swapped.high) == pytest.approx((-r.high, -r.low))


def test_mcnemar_sentences():
    fp, int6 = _paired(900, 46, 15, 56)                                # float wins 46 disagreements, int6 15
    r = stats.mcnemar("int6", int6, "float", fp)
    assert r.higher == "float" and r.beyond_noise and r.p_value < 0.001
    text = str(r)
    assert text.startswith(f"int6, {r.a_acc * 100:.2f} % (1017 images), is lower than float, {r.b_acc * 100:.2f} % "
                           f"(the same images), by {abs(r.diff) * 100:.2f} points (95 % interval ")
    assert "beyond the noise (McNemar's exact test on the 61 images where they disagree, 15 for int6 and 46 for float: " \
           "p < 0.001 < 0.05)." in text
    a, b = _paired(400, 20, 12, 77)
    close = stats.mcnemar("a", a, "b", b)
    assert not close.beyond_noise and close.low < 0 < close.high
    assert f"p = {close.p_value:.3f} >= 0.05), so this run does not tell them apart." in str(close)
    a, b = _paired(400, 6, 6, 77)
    tie = stats.mcnemar("a", a, "b", b)
    assert tie.higher is None and tie.p_value == 1 and "score the same" in str(tie) and "within the noise" in str(tie)
    a, b = _paired(400, 0, 0, 77)
    same = stats.mcnemar("a", a, "b", b)
    assert same.p_value == 1 and not same.beyond_noise and "no disagreement" in str(same)
    assert same.low < 0 < same.high                                   # the interval still has a width


@pytest.mark.parametrize("a, b, match", [
    (np.ones(10, bool), np.ones(9, bool), "same images"),
    (np.ones((3, 10), bool), np.ones((3, 10), bool), "compare_seeds"),
    (np.full(10, 0.9), np.ones(10, bool), "per-image correctness"),      # accuracies, not correctness
    (np.ones(0, bool), np.ones(0, bool), "no images"),
])
def test_mcnemar_refuses_what_it_cannot_judge(a, b, match):
    with pytest.raises(ValueError, match=match):
        stats.mcnemar("a", a, "b", b)


# ------------------------------------------------- image by image: methods over seeds (compare_seeds)

def _seed_variance_by_hand(X):
    """A side's seed part, from the two-way table's sums of squares (total = seeds + images + residual)."""
    S, N = len(X), len(X[0])
    grand = sum(map(sum, X)) / (S * N)
    rows = [sum(r) / N for r in X]
    cols = [sum(X[s][i] for s in range(S)) / S for i in range(N)]
    ss_total = sum((x - grand) ** 2 for r in X for x in r)
    ss_seed = N * sum((r - grand) ** 2 for r in rows)
    ss_image = S * sum((c - grand) ** 2 for c in cols)
    ms_res = (ss_total - ss_seed - ss_image) / ((S - 1) * (N - 1))
    return max(ss_seed / (S - 1) / N / S - ms_res / (S * N), 0.0)


def test_compare_seeds_against_a_hand_computation():
    rng = np.random.default_rng(1)
    X = rng.random((3, 200)) < np.array([[0.80], [0.85], [0.82]])        # a: (3 seeds, 200 images)
    Y = rng.random((4, 200)) < 0.75                                      # b: (4 seeds, the same images)
    c = stats.compare_seeds("a", X, "b", Y)
    x, y = X.astype(float).tolist(), Y.astype(float).tolist()
    per_image = [sum(r[i] for r in x) / 3 - sum(r[i] for r in y) / 4 for i in range(200)]
    d = sum(per_image) / 200
    v_img = sum((v - d) ** 2 for v in per_image) / 199 / 200
    v_a, v_b = _seed_variance_by_hand(x), _seed_variance_by_hand(y)
    assert c.diff == pytest.approx(X.mean() - Y.mean()) and c.diff == pytest.approx(d)
    assert (c.image_var, c.a.var, c.b.var) == pytest.approx((v_img, v_a, v_b))
    assert v_a > 0                                                       # the seeds' spread of a is counted
    welch_a = sum((sum(r) / 200 - X.mean(axis=1).mean()) ** 2 for r in x) / 2 / 3     # s_r^2 / seeds
    welch_b = sum((sum(r) / 200 - Y.mean(axis=1).mean()) ** 2 for r in y) / 3 / 4
    var = v_img + v_a + v_b
    df = var ** 2 / (welch_a ** 2 / 2 + welch_b ** 2 / 3 + (var - welch_a - welch_b) ** 2 / 199)   # Satterthwaite
    assert c.se == pytest.approx(math.sqrt(var)) and c.df == pytest.approx(df)
    assert c.margin == pytest.approx(scipy_stats.t.ppf(0.975, df) * math.sqrt(var))
    assert (c.low, c.high) == pytest.approx((d - c.margin, d + c.margin))
    assert c.beyond_noise == (abs(d) > c.margin) and c.higher == "a"
    # ints or floats of 0/1 and torch tensors: the same
    assert stats.compare_seeds("a", X.astype(int), "b", Y.astype(np.float32)).se == pytest.approx(c.se)
    torch = pytest.importorskip("torch")
    assert stats.compare_seeds("a", torch.from_numpy(X), "b", torch.from_numpy(Y)).se == pytest.approx(c.se)


def test_compare_seeds_counts_the_images_that_welch_over_seeds_leaves_out():
    # seeds that agree perfectly: Welch's t sees no noise at all, the images still have theirs
    rng = np.random.default_rng(2)
    a_model, b_model = rng.random(509) < 0.86, rng.random(509) < 0.83
    X, Y = np.tile(a_model, (3, 1)), np.tile(b_model, (3, 1))
    old = stats.compare("a", list(X.mean(1)), "b", list(Y.mean(1)))
    new = stats.compare_seeds("a", X, "b", Y)
    assert old.se < 1e-12                                                # no noise over seeds (up to rounding)
    assert new.a.var == 0 and new.b.var == 0
    assert new.se == pytest.approx(math.sqrt(new.image_var)) and new.se > 0.01
    assert new.df == pytest.approx(508)                                  # the images' part alone
    fixed = stats.compare_seeds("pretrained", a_model, "b", Y)            # one fixed model: no seed terms
    assert fixed.a.var == 0 and fixed.df == pytest.approx(508)


def test_compare_seeds_sentences():
    rng = np.random.default_rng(4)
    f = rng.random((3, 509)) < 0.90
    c_ = rng.random((3, 509)) < 0.80
    r = stats.compare_seeds("(f)", f, "(c)", c_)
    acc_f = f.mean(axis=1)
    text = str(r)
    assert r.beyond_noise and r.higher == "(f)"
    assert text.startswith(f"(f), {stats.pm(acc_f)} (3 seeds), is higher than (c), ")
    assert f"by {r.diff * 100:.2f} points (standard error {r.se * 100:.2f}, 95 % interval " \
           f"{r.low * 100:.2f} to {r.high * 100:.2f}): beyond the noise (more than {r.margin * 100:.2f} points; " \
           f"95 %, the seeds' and the test images' noise, 509 images shared, Student's t, " \
           f"{r.df:.1f} degrees of freedom)." in text
    near = stats.compare_seeds("(d)", c_[:, ::-1], "(c)", c_)             # same accuracies per seed, other images
    assert "within the noise (a difference below" in str(near) or near.diff == 0
    fixed = stats.compare_seeds("pretrained", f[0], "(c)", c_)            # one fixed model against seeds
    assert fixed.a.var == 0 and "(one run)" in str(fixed)
    assert "score the same" in str(stats.compare_seeds("a", f, "b", f))
    flat = stats.compare_seeds("a", np.ones((3, 20), bool), "b", np.ones((2, 20), bool))
    assert not flat.noise_known and not flat.beyond_noise


@pytest.mark.parametrize("a, b, match", [
    (np.ones((3, 10), bool), np.ones((3, 9), bool), "same images"),
    (np.ones(10, bool), np.ones(10, bool), "mcnemar"),                   # two single runs
    (np.full((3, 10), 0.9), np.ones((3, 10), bool), "per-image correctness"),
    (np.ones((3, 1), bool), np.ones((3, 1), bool), "two images"),
])
def test_compare_seeds_refuses_what_it_cannot_judge(a, b, match):
    with pytest.raises(ValueError, match=match):
        stats.compare_seeds("a", a, "b", b)
