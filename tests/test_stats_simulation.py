"""labkit.stats, proven by simulation where the truth is known.

The test images are drawn at random from a population of images and the models from a population of
seeds, with population accuracies known exactly; the 95 % intervals must cover the true difference
in 93-97 % of the simulated comparisons, and McNemar's test must reject a true "no difference" in
at most about 5 % of them. Every simulation is seeded (deterministic) and vectorised with numpy.
"""
import numpy as np
import pytest

from labkit import stats

REPS = 2000          # simulated comparisons per scenario (at least 1 000; the coverage's own noise ~0.5 %)
IMAGES = 509         # the labs' reported half of the course's test images


# ------------------------------------------------------------------ two methods, several seeds each
#
# Image i of the population has a difficulty v_i ~ U(0, 1); a share `shared` of the images is as
# hard for method b as for method a, the rest has its own difficulty for b (methods differ on which
# images they find hard). The model of method M trained with seed s is right on image i when
#     v_i + e_si < acc_M + u_s,    e_si ~ U(-h, h) (seed-by-image noise), u_s ~ U(-w, w) (seed noise).
# For any x in [h, 1 - h], P(v + e < x) = x, so as long as acc_M ± w stays in [h, 1 - h] the model
# of seed s has population accuracy acc_M + u_s exactly, and the method (over seeds) acc_M.

def _draw(rng, seeds, acc, h, w, shared, reps=REPS, images=IMAGES):
    """Per-image correctness of both methods, (reps, seeds, images) bool each, and each model's
    seed shift u (reps, seeds, 1)."""
    assert all(h <= m - w and m + w <= 1 - h for m in acc), "outside the range where the truth is exact"
    v_a = rng.random((reps, 1, images))                                                   # (R, 1, N)
    v_b = np.where(rng.random((reps, 1, images)) < shared, v_a, rng.random((reps, 1, images)))
    u_a, u_b = rng.uniform(-w, w, (reps, seeds[0], 1)), rng.uniform(-w, w, (reps, seeds[1], 1))
    a = v_a + rng.uniform(-h, h, (reps, seeds[0], images)) < acc[0] + u_a                 # (R, S_a, N)
    b = v_b + rng.uniform(-h, h, (reps, seeds[1], images)) < acc[1] + u_b                 # (R, S_b, N)
    return a, b, u_a, u_b


def _coverage(a, b, truth):
    """Share of comparisons whose compare_seeds 95 % interval holds the true difference (one value,
    or one per comparison)."""
    truth = np.broadcast_to(truth, (len(a),))
    return float(np.mean([(c := stats.compare_seeds("a", x, "b", y)).low <= t <= c.high
                          for x, y, t in zip(a, b, truth)]))


# lab-like: the seeds of one method agree closely (fine-tuned from one checkpoint: seed spread
# ~0.4 points), the two methods disagree on ~15 % of the images, 3 seeds each
LAB_LIKE = dict(seeds=(3, 3), acc=(0.85, 0.83), h=0.03, w=0.002, shared=0.5)
# seed noise dominant: seed spread ~1.6 points, methods that find the same images hard, 3 seeds
# each: few degrees of freedom, where the normal's 1.96 would cover only ~88 %
SEED_NOISE = dict(seeds=(3, 3), acc=(0.84, 0.82), h=0.05, w=0.03, shared=1.0)
# both: seed spread ~1.1 points, wide seed-by-image noise, unequal seed counts
MIXED = dict(seeds=(3, 5), acc=(0.84, 0.82), h=0.14, w=0.015, shared=0.9)


@pytest.mark.parametrize("scenario", [LAB_LIKE, SEED_NOISE, MIXED], ids=["lab-like", "seed-noise", "mixed"])
def test_compare_seeds_interval_covers_the_true_difference(scenario):
    a, b, _, _ = _draw(np.random.default_rng(20261206), **scenario)
    coverage = _coverage(a, b, scenario["acc"][0] - scenario["acc"][1])
    assert 0.93 <= coverage <= 0.97, coverage


def test_compare_seeds_against_one_fixed_model_covers_that_models_difference():
    # one side is one model (e.g. the pretrained one): the question is that model against the
    # method, so the truth is that model's own population accuracy, acc + u
    a, b, u_a, _ = _draw(np.random.default_rng(7), seeds=(1, 3), acc=(0.85, 0.84), h=0.03, w=0.01, shared=0.5)
    coverage = _coverage(a, b, 0.85 + u_a[:, 0, 0] - 0.84)
    assert 0.93 <= coverage <= 0.97, coverage


def test_compare_seeds_variance_is_unbiased():
    # the mean estimated variance equals the variance of the estimated difference over draws
    a, b, _, _ = _draw(np.random.default_rng(3), **LAB_LIKE)
    comparisons = [stats.compare_seeds("a", x, "b", y) for x, y in zip(a, b)]
    diffs = np.array([c.diff for c in comparisons])
    assert diffs.mean() == pytest.approx(0.02, abs=0.002)
    assert np.mean([c.se ** 2 for c in comparisons]) == pytest.approx(diffs.var(ddof=1), rel=0.1)


def test_welchs_t_over_seeds_alone_falls_short_which_is_why_it_was_replaced():
    """Why ``stats.compare`` over seeds was replaced by ``stats.compare_seeds`` for methods run on the
    same test images: Welch's t over the seeds' accuracies holds the test images fixed. It answers
    "would another seed change this run?", not "is the method better?": the test images are one draw
    from the population, and two methods that find different images hard score differently on
    another draw. When, as in the labs, the seeds agree closely and the methods disagree on many
    images, its 95 % interval covers the true difference in about half of the comparisons; counting
    the images' noise too restores 95 %."""
    a, b, _, _ = _draw(np.random.default_rng(20261206), **LAB_LIKE)
    old = np.mean([abs((c := stats.compare("a", list(x.mean(1)), "b", list(y.mean(1)))).diff - 0.02) <= c.margin
                   for x, y in zip(a, b)])
    new = _coverage(a, b, 0.02)
    assert old < 0.7 and new >= 0.93, (old, new)


# ---------------------------------------------------------------- two models, one run each: McNemar
#
# Each image of the population falls in one of four cells: both right, only a right (p01), only b
# right (p10), both wrong; the true difference of the accuracies is p01 - p10.

def _pairs(rng, p01, p10, images, reps=REPS, both=0.8):
    cell = np.searchsorted(np.cumsum([both, p01, p10]), rng.random((reps, images)))   # (R, N) in 0..3
    return (cell == 0) | (cell == 1), (cell == 0) | (cell == 2)


@pytest.mark.parametrize("p, images", [(0.06, IMAGES), (0.05, 60)], ids=["lab", "few-images"])
def test_mcnemar_type_one_error_is_at_most_five_percent(p, images):
    a, b = _pairs(np.random.default_rng(11), p, p, images)
    rejected = np.mean([stats.mcnemar("a", x, "b", y).beyond_noise for x, y in zip(a, b)])
    assert rejected <= 0.055, rejected            # exact test: at most 5 %, up to the simulation's noise
    assert rejected > 0.005                       # and not a test that never rejects


@pytest.mark.parametrize("p01, p10, images", [(0.10, 0.04, IMAGES), (0.15, 0.02, IMAGES), (0.05, 0.02, 1017)])
def test_mcnemar_interval_covers_the_true_paired_difference(p01, p10, images):
    a, b = _pairs(np.random.default_rng(13), p01, p10, images)
    coverage = np.mean([(r := stats.mcnemar("a", x, "b", y)).low <= p01 - p10 <= r.high for x, y in zip(a, b)])
    assert 0.93 <= coverage <= 0.97, coverage


def test_mcnemar_is_more_sensitive_than_two_independent_binomial_errors():
    # the images are shared: two independent binomial standard errors count the images both models
    # get right or wrong as noise, and miss most real differences the paired test finds
    a, b = _pairs(np.random.default_rng(17), 0.04, 0.02, 1017, reps=500)
    paired = np.mean([stats.mcnemar("a", x, "b", y).beyond_noise for x, y in zip(a, b)])
    unpaired = np.mean([stats.compare("a", x.mean(), "b", y.mean(), images=1017).beyond_noise for x, y in zip(a, b)])
    assert paired > 0.6 and unpaired < 0.3, (paired, unpaired)
