"""Lab 1: every update rule against hand-computed steps and a plain-loop reference."""
import itertools

import numpy as np
import pytest

from labkit import sparse_linear as sl

RNG_X = np.random.default_rng(0).normal(size=(4, 6))  # a second problem: n=4, d=6
RNG_Y = np.random.default_rng(1).normal(size=4)


# ---------------------------------------------------------------- plain-loop references
def ref_loss(W, X, y):
    total = 0.0
    for i in range(len(y)):
        r = sum(X[i, j] * W[j] for j in range(len(W))) - y[i]
        total += r * r
    return total


def ref_grad(W, X, y):
    """2 sum_i x_i^T (x_i W - y_i), element by element."""
    g = [0.0] * len(W)
    for i in range(len(y)):
        r = sum(X[i, j] * W[j] for j in range(len(W))) - y[i]
        for j in range(len(W)):
            g[j] += 2.0 * X[i, j] * r
    return g


def ref_shrink(v, t):
    if v > t:
        return v - t
    if v < -t:
        return v + t
    return 0.0


def ref_run(method, lam, steps, lr, k, X, y):
    d = X.shape[1]
    W = [0.0] * d
    losses, weights = [], []
    for _ in range(steps):
        g = ref_grad(W, X, y)
        if method == "l1":
            g = [gj + lam * (1.0 if w > 0 else -1.0 if w < 0 else 0.0) for gj, w in zip(g, W)]
        W = [w - lr * gj for w, gj in zip(W, g)]
        by_size = sorted(range(d), key=lambda j: abs(W[j]))  # ascending |w|
        if method == "projected":
            keep = set(by_size[d - k:])
            W = [w if j in keep else 0.0 for j, w in enumerate(W)]
        elif method == "proximal":
            W = [ref_shrink(w, lr * lam) for w in W]
        elif method == "trimmed_l1":
            small = set(by_size[: d - k])
            W = [ref_shrink(w, lr * lam) if j in small else w for j, w in enumerate(W)]
        losses.append(ref_loss(W, X, y))
        weights.append(list(W))
    return np.array(losses), np.array(weights)


# ---------------------------------------------------------------- data
def test_data_and_sparse_optimum():
    assert sl.X.shape == (3, 5) and sl.Y.shape == (3,)
    np.testing.assert_array_equal(sl.X[0], [1, -2, -1, -1, 1])
    np.testing.assert_array_equal(sl.Y, [-7, -1, -1])
    np.testing.assert_array_equal(sl.X @ sl.W_STAR, sl.Y)  # W* fits exactly
    assert np.count_nonzero(sl.W_STAR) == 2
    assert sl.loss(sl.W_STAR) == 0.0
    assert sl.loss(np.zeros(5)) == 51.0  # 49 + 1 + 1


def test_loss_and_gradient_match_loops_and_finite_differences():
    W = np.array([0.3, -1.2, 0.7, 2.0, -0.4])
    assert sl.loss(W) == pytest.approx(ref_loss(W, sl.X, sl.Y), rel=1e-14)
    np.testing.assert_allclose(sl.gradient(W), ref_grad(W, sl.X, sl.Y), rtol=1e-14)
    h = 1e-6
    fd = [(sl.loss(W + h * e) - sl.loss(W - h * e)) / (2 * h) for e in np.eye(5)]
    np.testing.assert_allclose(sl.gradient(W), fd, rtol=1e-7)
    # a stack of weights gives one loss per row
    np.testing.assert_allclose(sl.loss(np.stack([W, sl.W_STAR])), [sl.loss(W), 0.0])


# ---------------------------------------------------------------- hand-computed steps
# From W0 = 0: grad L(0) = -2 X^T y = -2 [-8, 15, 3, 5, -6] = [16, -30, -6, -10, 12],
# so the gradient step with mu = 0.02 gives V = [-0.32, 0.6, 0.12, 0.2, -0.24];
# residuals X V - y = [4.92, 0.48, 1.72], L = 24.2064 + 0.2304 + 2.9584 = 27.3952.
V1 = np.array([-0.32, 0.6, 0.12, 0.2, -0.24])


def test_first_gd_step_by_hand():
    losses, weights = sl.optimize("gd", steps=1)
    np.testing.assert_allclose(weights[0], V1, rtol=1e-14)
    assert losses[0] == pytest.approx(27.3952, rel=1e-14)


def test_second_gd_step_by_hand():
    # grad L(V1) = 2 X^T [4.92, 0.48, 1.72] = [8.32, -20.64, -1.04, -2.96, 11.36]
    _, weights = sl.optimize("gd", steps=2)
    np.testing.assert_allclose(weights[1], [-0.4864, 1.0128, 0.1408, 0.2592, -0.4672],
                               rtol=1e-13)


def test_first_projected_step_by_hand():
    # keep the two largest |v|: 0.6 (w2) and 0.32 (w1)
    _, weights = sl.optimize("projected", steps=1)
    np.testing.assert_allclose(weights[0], [-0.32, 0.6, 0, 0, 0], rtol=1e-14)


def test_first_proximal_step_by_hand():
    # threshold mu * lam = 0.02 * 1: every element moves 0.02 towards 0
    _, weights = sl.optimize("proximal", lam=1.0, steps=1)
    np.testing.assert_allclose(weights[0], [-0.30, 0.58, 0.10, 0.18, -0.22], rtol=1e-13)
    # threshold 0.02 * 10 = 0.2: |0.12| and |0.2| are zeroed, the others shrink by 0.2
    _, weights = sl.optimize("proximal", lam=10.0, steps=1)
    np.testing.assert_allclose(weights[0], [-0.12, 0.4, 0, 0, -0.04], rtol=1e-12, atol=1e-15)
    assert weights[0, 2] == 0.0 and weights[0, 3] == 0.0


def test_first_trimmed_step_by_hand():
    # the 3 smallest |v| are w3, w4, w5 (0.12, 0.2, 0.24): only they shrink by 0.02
    _, weights = sl.optimize("trimmed_l1", lam=1.0, steps=1)
    np.testing.assert_allclose(weights[0], [-0.32, 0.6, 0.10, 0.18, -0.22], rtol=1e-13)
    # with k=4 only w3 (0.12) is penalised
    _, weights = sl.optimize("trimmed_l1", lam=1.0, steps=1, k=4)
    np.testing.assert_allclose(weights[0], [-0.32, 0.6, 0.10, 0.2, -0.24], rtol=1e-13)


def test_l1_steps_by_hand():
    # step 1: sign(0) = 0, so the penalty does nothing and W1 = V1
    # step 2: W1 - mu (grad L(W1) + lam sign(W1)), lam = 1, sign(W1) = [-1, 1, 1, 1, -1]
    #   = V1 - 0.02 [7.32, -19.64, -0.04, -1.96, 10.36]
    _, weights = sl.optimize("l1", lam=1.0, steps=2)
    np.testing.assert_allclose(weights[0], V1, rtol=1e-14)
    np.testing.assert_allclose(weights[1], [-0.4664, 0.9928, 0.1208, 0.2392, -0.4472],
                               rtol=1e-13)


# ---------------------------------------------------------------- plain-loop reference, whole runs
CASES = [("gd", None), ("projected", None), ("l1", 0.2), ("l1", 2.0), ("proximal", 0.5),
         ("proximal", 2.0), ("trimmed_l1", 1.0), ("trimmed_l1", 10.0)]


@pytest.mark.parametrize("method,lam", CASES)
def test_matches_loop_reference_on_lab_data(method, lam):
    losses, weights = sl.optimize(method, lam=lam)
    ref_l, ref_w = ref_run(method, lam, 200, 0.02, 2, sl.X, sl.Y)
    assert losses.shape == (200,) and weights.shape == (200, 5)
    np.testing.assert_allclose(weights, ref_w, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(losses, ref_l, rtol=1e-8, atol=1e-20)


@pytest.mark.parametrize("method,lam,k", [("gd", None, 2), ("projected", None, 3),
                                          ("l1", 0.3, 2), ("proximal", 0.3, 2),
                                          ("trimmed_l1", 0.5, 1), ("trimmed_l1", 0.5, 4)])
def test_matches_loop_reference_on_other_data(method, lam, k):
    losses, weights = sl.optimize(method, lam=lam, steps=60, lr=0.05, k=k, X=RNG_X, y=RNG_Y)
    ref_l, ref_w = ref_run(method, lam, 60, 0.05, k, RNG_X, RNG_Y)
    assert weights.shape == (60, 6)
    np.testing.assert_allclose(weights, ref_w, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(losses, ref_l, rtol=1e-8, atol=1e-20)


def test_special_cases_reduce_to_other_methods():
    _, gd = sl.optimize("gd", steps=50)
    for method in ("l1", "proximal", "trimmed_l1"):  # no penalty: plain gradient descent
        np.testing.assert_array_equal(sl.optimize(method, lam=0.0, steps=50)[1], gd)
    np.testing.assert_array_equal(sl.optimize("projected", k=5, steps=50)[1], gd)
    np.testing.assert_array_equal(sl.optimize("trimmed_l1", lam=3.0, k=5, steps=50)[1], gd)
    # a threshold above every |w| zeroes the d - k smallest: trimmed L1 becomes the projection
    np.testing.assert_array_equal(sl.optimize("trimmed_l1", lam=1e6, steps=50)[1],
                                  sl.optimize("projected", steps=50)[1])


# ---------------------------------------------------------------- what the lab shows
def test_gd_converges_to_the_minimum_norm_solution_not_the_sparse_one():
    losses, weights = sl.optimize("gd")
    assert losses[-1] < 1e-20
    # W0 = 0 and every gradient lies in the row space of X, so GD ends at pinv(X) y
    np.testing.assert_allclose(weights[-1], np.linalg.pinv(sl.X) @ sl.Y, atol=1e-10)
    assert np.count_nonzero(np.abs(weights[-1]) > 1e-3) == 5


def test_projected_gd_reaches_w_star():
    losses, weights = sl.optimize("projected")
    np.testing.assert_allclose(weights[-1], sl.W_STAR, atol=1e-12)
    assert np.count_nonzero(weights, axis=1).max() <= 2  # ||W||_0 <= k after every step
    assert losses[-1] < 1e-20


@pytest.mark.parametrize("lam", [1.0, 2.0, 5.0, 10.0])
def test_trimmed_l1_reaches_w_star_at_round_off(lam):
    losses, weights = sl.optimize("trimmed_l1", lam=lam)
    np.testing.assert_allclose(weights[-1], sl.W_STAR, atol=1e-12)
    assert np.count_nonzero(weights[-1]) == 2  # exact zeros
    assert losses[-1] < 1e-25  # round-off level (book/lab1_theory.md, (f): L falls to round-off)


@pytest.mark.parametrize("lam", [1.0, 2.0])
def test_proximal_converges_to_the_lasso_solution(lam):
    """KKT conditions of min L + lam ||W||_1: grad_j = -lam sign(w_j) where w_j != 0,
    |grad_j| <= lam where w_j = 0. They fail if the threshold were not mu * lam."""
    _, weights = sl.optimize("proximal", lam=lam, steps=2000)
    W = weights[-1]
    g = sl.gradient(W)
    on = W != 0
    np.testing.assert_allclose(g[on], -lam * np.sign(W[on]), atol=1e-8)
    assert np.all(np.abs(g[~on]) <= lam + 1e-8)
    assert np.count_nonzero(W) == 2 and sl.support_from(weights) is not None
    # L1 shrinks the kept weights: biased towards 0 compared with W*. Columns 2 and 5 of X
    # are orthogonal (norms^2 5 and 6) and y = 3 x_2 - x_5, so the KKT conditions on the
    # support {2, 5} give w2 = 3 - lam / 10 and w5 = -1 + lam / 12 (book, lab1_theory).
    np.testing.assert_allclose(W, [0, 3 - lam / 10, 0, 0, -1 + lam / 12], atol=1e-9)


@pytest.mark.parametrize("lam", [0.5, 1.0, 2.0])
def test_subgradient_oscillates_and_proximal_does_not(lam):
    l_sub, w_sub = sl.optimize("l1", lam=lam)
    l_prox, w_prox = sl.optimize("proximal", lam=lam)
    assert sl.sign_flips(w_sub) > 20 and sl.sign_flips(w_prox) == 0
    assert sl.objective_increases(l_sub, w_sub, lam) > 10
    assert sl.objective_increases(l_prox, w_prox, lam) == 0  # mu <= 1/Lipschitz: monotone
    assert np.count_nonzero(w_sub[-1]) == 5 and np.count_nonzero(w_prox[-1]) == 2
    # both end near the same objective value
    F_sub = sl.objective(l_sub, w_sub, lam)[-1]
    F_prox = sl.objective(l_prox, w_prox, lam)[-1]
    assert F_prox <= F_sub < F_prox * 1.1


# ---------------------------------------------------------------- soft thresholding
V = np.linspace(-3, 3, 601)


@pytest.mark.parametrize("t", [0.0, 0.004, 0.5, 1.0])
def test_soft_threshold_zero_inside_shrink_outside(t):
    s = sl.soft_threshold(V, t)
    inside = np.abs(V) <= t
    assert np.all(s[inside] == 0.0)
    np.testing.assert_allclose(s[~inside], V[~inside] - t * np.sign(V[~inside]), atol=1e-15)
    np.testing.assert_allclose(np.abs(V) - np.abs(s), np.minimum(np.abs(V), t), atol=1e-15)
    np.testing.assert_array_equal(sl.soft_threshold(-V, t), -s)  # odd function
    assert np.all(np.sign(s) * np.sign(V) >= 0)  # never changes sign


def test_soft_threshold_values_by_hand():
    np.testing.assert_allclose(sl.soft_threshold([-2.0, -0.3, 0.0, 0.5, 1.5], 0.5),
                               [-1.5, 0.0, 0.0, 0.0, 1.0])


@pytest.mark.parametrize("v,t", itertools.product([-1.7, -0.2, 0.0, 0.05, 0.9, 2.3],
                                                  [0.0, 0.1, 0.5]))
def test_soft_threshold_is_the_prox_of_l1(v, t):
    """S_t(v) = argmin_x 0.5 (x - v)^2 + t |x|, checked on a fine grid."""
    grid = np.linspace(-3, 3, 60001)  # spacing 1e-4
    x_best = grid[np.argmin(0.5 * (grid - v) ** 2 + t * np.abs(grid))]
    assert sl.soft_threshold(v, t) == pytest.approx(x_best, abs=1e-4)


@pytest.mark.parametrize("t", [-0.1, np.nan, np.inf])
def test_soft_threshold_rejects_bad_t(t):
    with pytest.raises(ValueError, match="t must"):
        sl.soft_threshold(V, t)


# ---------------------------------------------------------------- run diagnostics
def test_steps_to_reach_and_support_from():
    w = np.array([[1.0, 0.0], [0.0, 0.5], [0.0, 1.0], [0.1, 1.0], [0.0, 1.0], [0.0, 1.0]])
    target = np.array([0.0, 1.0])
    assert sl.steps_to_reach(w, target, atol=1e-9) == 5  # rows 5 and 6 (1-based) equal target
    assert sl.support_from(w, target) == 5
    assert sl.steps_to_reach(w[:4], target) is None
    assert sl.support_from(w[1:3], target) == 1
    assert sl.sign_flips(np.array([[1.0, -1.0], [-1.0, 0.0], [2.0, 1.0], [3.0, -1.0]])) == 3


def test_facts_are_rounded_and_stable():
    losses, weights = sl.optimize("trimmed_l1", lam=1.0)
    s = sl.facts(losses, weights)
    assert s["final L"] == "< 1e-20" and s["max|W-W*|"] == "< 1e-10"
    assert s["zeros"] == 3 and s["sign flips"] == 0
    assert not np.any(np.signbit(s["W"][s["W"] == 0]))  # no '-0.0'
    assert "-0.0 " not in sl.runs_table({"a": (losses, weights)})
    np.testing.assert_array_equal(s["W"], sl.W_STAR)
    losses, weights = sl.optimize("proximal", lam=1.0)
    assert sl.facts(losses, weights)["final L"] == f"{losses[-1]:.3e}"
    assert sl.facts(losses, weights)["steps to W*"] is None


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,name", [
    (dict(method="newton"), "method"),
    (dict(method="l1"), "lam"),
    (dict(method="proximal", lam=-0.1), "lam"),
    (dict(method="trimmed_l1", lam=float("nan")), "lam"),
    (dict(method="l1", lam="0.2"), "lam"),
    (dict(method="gd", lam=0.2), "lam"),
    (dict(method="gd", lr=0.0), "lr"),
    (dict(method="gd", lr=-0.02), "lr"),
    (dict(method="gd", steps=0), "steps"),
    (dict(method="gd", steps=2.5), "steps"),
    (dict(method="gd", steps=True), "steps"),
    (dict(method="projected", k=0), "k"),
    (dict(method="projected", k=6), "k"),
    (dict(method="trimmed_l1", lam=1.0, k=1.5), "k"),
    (dict(method="gd", X=np.ones((3, 5))), "X and y"),
    (dict(method="gd", X=np.ones(5), y=np.ones(1)), "X must"),
    (dict(method="gd", X=np.ones((3, 5)), y=np.ones(4)), "y must"),
    (dict(method="gd", X=np.ones((3, 5)), y=np.ones((3, 1))), "y must"),
    (dict(method="gd", X=np.full((3, 5), np.nan), y=np.ones(3)), "finite"),
    (dict(method="projected", k=4, X=np.ones((3, 3)), y=np.ones(3)), "k"),
])
def test_bad_input_raises_value_error_naming_the_argument(kwargs, name):
    method = kwargs.pop("method")
    with pytest.raises(ValueError, match=name) as err:
        sl.optimize(method, **kwargs)
    if name == "method":  # the message lists the allowed values
        assert all(m in str(err.value) for m in sl.METHODS)


def test_soft_threshold_rejects_a_missing_or_non_numeric_threshold():
    for t in (None, "0.1", True, float("nan"), -0.1):
        with pytest.raises(ValueError, match="t must be"):
            sl.soft_threshold(np.ones(3), t)


# --------------------------------------------------------------------------- the computed answers

def _run(*weights):
    """A run (losses, weights) whose weights after each step are given; losses are L of them."""
    W = np.array(weights, dtype=float)
    return sl.loss(W), W


W_STAR_ROW = [0.0, 3.0, 0.0, 0.0, -1.0]


def test_l1_answers_state_zeros_support_shrinkage_and_trends():
    exact = _run([0.5, 2.0, 0, 0, -0.5], [0.0, 2.9, 0.0, 0.0, -0.9])                  # support from step 2, shrunk
    near = _run([0.1, 2.0, -0.1, 0, -0.5], [-0.01, 2.9, 0.01, 0.0, -1.2])   # 1 zero, only w2 shrunk, 2 flips
    lines = sl.l1_answers([near, exact], [0.2, 0.5])
    assert lines[0] == "Exact zeros at the end: 1, 3 (λ = 0.2, 0.5; W* has 3). Runs with at least W*'s zeros: λ = 0.5."
    assert lines[1] == "The support of W* is found at λ = 0.5 only (from step never, 2)."
    assert lines[2].endswith("at λ = 0.5.") and "shrunk" in lines[2]
    L = [sl.loss(np.array(near[1][-1])), sl.loss(np.array(exact[1][-1]))]
    assert lines[3].startswith("The final loss " + ("grows" if L[1] > L[0] else "falls"))
    assert lines[4] == "Sign flips: 2, 0; their count falls with λ."
    none = sl.l1_answers({"a": near, "b": near}, [1, 2])
    assert none[0].endswith("No run has as many exact zeros as W*.") and none[1] == "No run ends with the support of W*."
    assert none[2] == "The kept weights are not shrunk towards 0 at any λ."
    assert none[3].startswith("The final loss does not change")                      # equal is not a trend
    every = sl.l1_answers([exact, exact], [1, 2])
    assert every[0].endswith("Every run has at least W*'s zeros.") and every[4] == "No run flips a sign."
    with pytest.raises(ValueError, match="one run per lambda"):
        sl.l1_answers([exact], [1, 2])
    with pytest.raises(ValueError, match="increasing"):
        sl.l1_answers([exact, near], [2, 1])
    same = sl.l1_answers([exact, exact], [1, 2])
    assert same[3].startswith("The final loss does not change with λ")
    flipped = _run([0, 2.0, 0, 0, -0.5], [0.0, 2.9, 0.0, 0.0, 0.5])              # w5 changed sign: not "shrunk"
    assert sl.l1_answers([flipped], [1])[2] == "The kept weights are not shrunk towards 0 at any λ."


def test_proximal_vs_subgradient_on_the_lab_runs():
    lams = [0.5, 2.0]
    sub = [sl.optimize("l1", lam=l) for l in lams]
    prox = [sl.optimize("proximal", lam=l) for l in lams]
    lines = sl.proximal_vs_subgradient(sub, prox, lams)
    F = [(sl.objective(*p, l)[-1], sl.objective(*s, l)[-1]) for s, p, l in zip(sub, prox, lams)]
    assert all(p <= s for p, s in F)
    assert lines[0].startswith("The proximal runs end at a lower or equal L + λ‖W‖₁ than the subgradient runs at every λ (")
    assert f"λ = 0.5: {F[0][0]:.4f} against {F[0][1]:.4f}" in lines[0]
    ups = [sl.objective_increases(*s, l) for s, l in zip(sub, lams)]
    assert lines[1] == f"Steps that raise L + λ‖W‖₁, proximal against subgradient: λ = 0.5: 0 against {ups[0]}; λ = 2: 0 against {ups[1]}."
    flips = [sl.sign_flips(s[1]) for s in sub]
    assert lines[2].endswith(f"λ = 2: 0 against {flips[1]}.")
    # swapped, the verdict turns round
    assert sl.proximal_vs_subgradient(prox, sub, lams)[0].startswith("The proximal runs end at a higher")


def test_trimmed_answers_against_projected_gd():
    lams = [1.0, 10.0]
    runs = [sl.optimize("trimmed_l1", lam=l, k=2) for l in lams]
    proj = sl.optimize("projected", k=2)
    lines = sl.trimmed_answers(runs, lams, proj, 20)
    assert lines[0] == "Every run ends at W* (distance and loss at round-off level)."
    s = [sl.support_from(W) for _, W in runs]
    assert lines[1] == f"The support of W* is found for good from step {s[0]}, {s[1]}: that step falls as λ grows."
    d = [np.max(np.abs(W[19] - sl.W_STAR)) for _, W in runs]
    dp = np.max(np.abs(proj[1][19] - sl.W_STAR))
    assert (d[0] > dp) and (d[1] <= dp)                   # the lab's case: only the large λ keeps up
    assert lines[2].endswith("as close or closer at λ = 10, further at the others.")
    with pytest.raises(ValueError, match="steps"):
        sl.trimmed_answers(runs, lams, proj, 201)                          # beyond the runs' 200 steps
    short = sl.trimmed_answers([sl.optimize("trimmed_l1", lam=1.0, k=2, steps=5)], [1.0], proj, 5)
    assert short[0] == "No run ends at W*." and len(short) == 2               # no support sentence: not found


def test_optimize_runs_a_students_functions_and_labkits_by_default():
    import numpy as np
    from labkit import sparse_linear as sl
    seen = set()
    def spy(name, f):
        def g(*a):
            seen.add(name)
            return f(*a)
        return g
    for method, kw, names in [("gd", {}, {"gradient"}), ("projected", {}, {"gradient", "project"}),
                              ("l1", {"lam": 0.5}, {"gradient", "subgradient"}),
                              ("proximal", {"lam": 0.5}, {"gradient", "threshold"}),
                              ("trimmed_l1", {"lam": 1.0}, {"gradient", "trimmed_step"})]:
        seen.clear()
        ours = sl.optimize(method, steps=20, gradient=spy("gradient", sl.gradient), project=spy("project", sl.project_top_k),
                           subgradient=spy("subgradient", sl.l1_subgradient), threshold=spy("threshold", sl.soft_threshold),
                           trimmed_step=spy("trimmed_step", sl.trimmed_l1_step), **kw)
        assert seen == names, method
        assert all(np.array_equal(a, b) for a, b in zip(ours, sl.optimize(method, steps=20, **kw)))
    wrong = sl.optimize("gd", steps=5, gradient=lambda W, X, y: X.T @ (X @ W - y))
    assert not np.array_equal(wrong[1], sl.optimize("gd", steps=5)[1])    # the student's gradient is the one used
    with pytest.raises(ValueError, match=r"gradient\(W, X, y\) must return an array of shape \(5,\)"):
        sl.optimize("gd", steps=2, gradient=lambda W, X, y: np.zeros(3))
