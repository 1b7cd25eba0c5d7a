"""labkit.stats: the noise of accuracies and of their differences, against hand values."""
import math

import numpy as np
import pytest

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
