"""labkit.stats: the noise of accuracies and of their differences, against hand values."""
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
