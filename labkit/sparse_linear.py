"""Lab 1: sparse optimisation of a linear model (numpy only, runs in seconds).

The problem: three points x_i in R^{1x5} with targets y_i, a weight vector W in R^5 and the loss

    L(W) = sum_i (x_i W - y_i)^2 = ||X W - y||^2          (a sum, not a mean)
    grad L(W) = 2 X^T (X W - y)

The system is under-determined (3 equations, 5 unknowns), so L has a whole plane of minimisers;
the sparse one, W_STAR = [0, 3, 0, 0, -1], has only two non-zero elements. Every method below
starts from W^0 = 0 and takes `steps` full-batch steps with step size mu = `lr`:

    'gd'          W <- W - mu grad L(W)
    'projected'   W <- P_k(W - mu grad L(W))            keep the k largest |w|, zero the rest
    'l1'          W <- W - mu (grad L(W) + lam sign(W))  subgradient of L + lam ||W||_1, sign(0) = 0
    'proximal'    W <- S_{mu lam}(W - mu grad L(W))      soft thresholding, see `soft_threshold`
    'trimmed_l1'  W <- W - mu grad L(W), then S_{mu lam} applied only to the d - k
                  smallest-magnitude elements (the k largest are not penalised)

The derivations are in the book chapter ``book/lab1_theory.md``.

A student's own functions (the exercises of Lab 1, checked by ``labkit.exercises``): `optimize` takes
``gradient(W, X, y)``, ``project(v, k)``, ``subgradient(W, lam)``, ``threshold(v, t)`` and
``trimmed_step(W, g, lr, lam, k)`` and uses the references here (`gradient`, `project_top_k`,
`l1_subgradient`, `soft_threshold`, `trimmed_l1_step`) for those not given.
"""
from __future__ import annotations

import numpy as np

from . import checks
from .tables import table

__all__ = [
    "X", "Y", "W_STAR", "METHODS", "PENALISED",
    "loss", "gradient", "soft_threshold", "project_top_k", "l1_subgradient", "trimmed_l1_step", "optimize",
    "steps_to_reach", "support_from", "sign_flips", "objective", "objective_increases",
    "facts", "runs_table", "l1_answers", "proximal_vs_subgradient", "trimmed_answers",
]

# The lab's data: one row per point x_i (3, 5), targets y_i (3,).
X = np.array([[1.0, -2.0, -1.0, -1.0, 1.0],
              [2.0, -1.0, 2.0, 0.0, -2.0],
              [-1.0, 0.0, 2.0, 2.0, 1.0]])
Y = np.array([-7.0, -1.0, -1.0])
# The sparse optimum: X @ W_STAR == Y exactly, with ||W_STAR||_0 = 2.
W_STAR = np.array([0.0, 3.0, 0.0, 0.0, -1.0])
_LAB_DATA = (X, Y)  # the defaults of `optimize`, whose X, y arguments shadow the names above

METHODS = ("gd", "projected", "l1", "proximal", "trimmed_l1")
PENALISED = ("l1", "proximal", "trimmed_l1")  # the methods that take `lam`

# Losses below this are round-off: `facts` prints them as "< 1e-20" rather than a value
# whose digits change from machine to machine.
ROUNDOFF = 1e-20


def loss(W, X=X, y=Y):
    """L(W) = sum_i (x_i W - y_i)^2 for W of shape (d,) or a stack of weights (T, d) -> (T,)."""
    r = np.asarray(W) @ X.T - y  # (..., n) residuals x_i W - y_i
    return np.sum(r * r, axis=-1)


def gradient(W, X=X, y=Y):
    """grad L(W) = 2 X^T (X W - y) = 2 sum_i x_i^T (x_i W - y_i), shape (d,)."""
    return 2.0 * X.T @ (X @ W - y)


def soft_threshold(v, t):
    """Soft thresholding S_t(v) = sign(v) max(|v| - t, 0), element-wise, t >= 0.

    It is the proximal operator of t ||.||_1: S_t(v) = argmin_x 0.5 ||x - v||^2 + t ||x||_1.
    Elements with |v| <= t become exactly 0; the others move towards 0 by t.
    """
    checks.number("soft_threshold: t", t, minimum=0)
    v = np.asarray(v, dtype=float)
    return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)


def _top_k(v, k):
    """Indices of the k largest |v| (ties go to the lower index, so runs are reproducible)."""
    return np.argsort(-np.abs(v), kind="stable")[:k]


def project_top_k(v, k):
    """Euclidean projection onto {W : ||W||_0 <= k}: keep the k largest |v|, zero the rest."""
    out = np.zeros_like(v)
    keep = _top_k(v, k)
    out[keep] = v[keep]
    return out


def l1_subgradient(W, lam):
    """A subgradient of lam ||W||_1: lam sign(W), with 0 at w = 0 (any value in [-lam, lam] is one there)."""
    return lam * np.sign(W)


def trimmed_l1_step(W, g, lr, lam, k):
    """One step of trimmed L1: the gradient step V = W - lr g, then soft thresholding by lr lam of the
    d - k smallest |V| (chosen after the gradient step; ties to the lower index), the k largest untouched."""
    V = np.array(W, dtype=float) - lr * np.asarray(g, dtype=float)
    small = np.argsort(np.abs(V), kind="stable")[: V.size - k]  # the d - k smallest |v|
    V[small] = soft_threshold(V[small], lr * lam)
    return V


def _student(name, fn):
    if fn is not None and not callable(fn):
        raise ValueError(f"{name} must be a function (or None for labkit's own), got {type(fn).__name__}")
    return fn


def _step_result(name, value, d):
    """A student's function's result as a float array of shape (d,), or a clear error."""
    try:
        v = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must return an array of {d} numbers, got {type(value).__name__}") from None
    if v.shape != (d,):
        raise ValueError(f"{name} must return an array of shape ({d},), got shape {v.shape}")
    return v


def _check(method, lam, steps, lr, k, X, y):
    """Validate the arguments of `optimize`; return (X, y) as float arrays."""
    checks.one_of("method", method, METHODS)
    if method in PENALISED:
        if lam is None:
            raise ValueError(f"lam is required for method {method!r}: pass a number >= 0, "
                             "e.g. lam=0.2")
        checks.number(f"lam (method {method!r})", lam, minimum=0)
    elif lam is not None:
        raise ValueError(f"lam is not used by method {method!r} (no penalty): leave lam=None, "
                         f"or pick one of {', '.join(map(repr, PENALISED))}")
    checks.integer("steps", steps, minimum=1)
    checks.number("lr", lr, positive=True)
    if (X is None) != (y is None):
        raise ValueError("X and y go together: pass both (X of shape (n, d), y of shape (n,)) "
                         "or neither (the lab's data)")
    if X is None:
        X, y = _LAB_DATA
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"X must be a 2-D array of shape (n, d); got shape {X.shape}")
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape (n,) = ({X.shape[0]},) to match X of shape "
                         f"{X.shape}; got shape {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("X and y must hold finite numbers (no nan or inf)")
    d = X.shape[1]
    checks.integer("k (at most d, the number of elements of W)", k, minimum=1, maximum=d)
    return X, y


def optimize(method, *, lam=None, steps=200, lr=0.02, k=2, X=None, y=None, gradient=None, project=None,
             subgradient=None, threshold=None, trimmed_step=None):
    """Run `steps` full-batch steps of `method` from W^0 = 0; return (losses, weights).

    method: 'gd' | 'projected' | 'l1' | 'proximal' | 'trimmed_l1' (see the module docstring).
    lam:    the L1 weight lambda, >= 0; required by 'l1', 'proximal', 'trimmed_l1', and must be
            None for 'gd' and 'projected'. The threshold of the proximal step is lr * lam.
    lr:     the step size mu > 0.
    k:      'projected' keeps the k largest |w|; 'trimmed_l1' leaves the k largest unpenalised
            and soft-thresholds the d - k others. 1 <= k <= d.
    X, y:   the data, shapes (n, d) and (n,); default: the lab's three points.
    gradient, project, subgradient, threshold, trimmed_step: a student's functions (module docstring);
            None: labkit's own.

    Returns losses (steps,) with losses[t] = L(W^{t+1}) (the plain loss, without the penalty)
    and weights (steps, d) with weights[t] = W^{t+1}, the weights after step t + 1.
    """
    X, y = _check(method, lam, steps, lr, k, X, y)
    grad = _student("gradient", gradient) or globals()["gradient"]
    project = _student("project", project) or project_top_k
    subgradient = _student("subgradient", subgradient) or l1_subgradient
    threshold = _student("threshold", threshold) or soft_threshold
    trimmed_step = _student("trimmed_step", trimmed_step) or trimmed_l1_step
    d = X.shape[1]
    t = lr * lam if method in PENALISED else 0.0  # threshold of one proximal step
    W = np.zeros(d)
    weights = np.empty((steps, d))
    for step in range(steps):
        # 1. gradient step on the smooth part L (plus the subgradient of the penalty for 'l1')
        g = _step_result("gradient(W, X, y)", grad(W.copy(), X, y), d)
        if method == "trimmed_l1":   # the gradient step and the partial proximal step together
            W = _step_result("trimmed_step(W, g, lr, lam, k)", trimmed_step(W.copy(), g, lr, lam, k), d)
            weights[step] = W
            continue
        if method == "l1":
            g = g + _step_result("subgradient(W, lam)", subgradient(W.copy(), lam), d)
        W = W - lr * g
        # 2. the non-smooth part: projection or proximal step
        if method == "projected":
            W = _step_result("project(v, k)", project(W.copy(), k), d)
        elif method == "proximal":
            W = _step_result("threshold(v, t)", threshold(W.copy(), t), d)
        weights[step] = W
    return loss(weights, X, y), weights


def steps_to_reach(weights, target=W_STAR, *, atol=1e-6):
    """First step number s (1-based) from which every later W is within atol of target
    (max-norm), or None if the run does not end there."""
    far = np.max(np.abs(np.asarray(weights) - target), axis=1) > atol  # (T,)
    return _settles(far)


def support_from(weights, target=W_STAR):
    """First step number s (1-based) from which the non-zero pattern of W equals that of
    target for good, or None if the run does not end with that support."""
    w = np.asarray(weights)
    other = np.any((w != 0) != (np.asarray(target) != 0), axis=1)  # (T,) support differs
    return _settles(other)


def _settles(bad):
    """1-based step after the last True in the (T,) mask `bad`; None if the last step is bad."""
    if bad[-1]:
        return None
    idx = np.flatnonzero(bad)
    return 1 if idx.size == 0 else int(idx[-1]) + 2


def sign_flips(weights):
    """Oscillation measure: how many times an element of W changes sign from one step to the
    next (+ to - or - to +), summed over elements and steps.

    A fixed-step subgradient method keeps jumping across w = 0 (by about mu * lambda), so this
    count grows with the run; a method that sets such elements exactly to 0 does not flip.
    """
    w = np.sign(np.asarray(weights))  # (T, d)
    return int(np.sum(w[1:] * w[:-1] < 0))


def objective(losses, weights, lam):
    """The penalised objective F(W) = L(W) + lam ||W||_1 of every step, shape (T,)."""
    return np.asarray(losses) + lam * np.sum(np.abs(weights), axis=1)


def objective_increases(losses, weights, lam, *, rtol=1e-12):
    """How many steps increase F = L + lam ||W||_1 (beyond round-off, relative `rtol`).
    The proximal gradient step with mu <= 1 / Lipschitz(grad L) never does."""
    F = objective(losses, weights, lam)
    return int(np.sum(np.diff(F) > rtol * np.abs(F[:-1])))


def _clean(w, decimals):
    """Round for printing; +0.0 turns -0.0 into 0.0 so the sign of a zero does not flicker."""
    return np.round(np.asarray(w, dtype=float), decimals) + 0.0


def _small(x, floor, fmt):
    """Format x, or '< floor' when x is below it (round-off digits differ between machines)."""
    return f"< {floor:.0e}" if x < floor else format(x, fmt)


def facts(losses, weights, *, target=W_STAR, decimals=4, atol=1e-6):
    """Machine-stable, rounded facts about one run, for printing in the notebook.

    Keys:
      'final L'       L after the last step, '1.234e-02' (or '< 1e-20' at round-off level)
      'W'             the final weights rounded to `decimals` (no '-0.0')
      'zeros'         how many final elements are exactly 0.0
      'max|W-W*|'     distance of the final W to target, max-norm ('< 1e-10' at round-off)
      'support from'  `support_from` (None: the final support is not target's)
      'steps to W*'   `steps_to_reach` with `atol` (None: never)
      'sign flips'    `sign_flips`, the oscillation measure
    """
    w_last = np.asarray(weights)[-1]
    return {
        "final L": _small(float(losses[-1]), ROUNDOFF, ".3e"),
        "W": _clean(w_last, decimals),
        "zeros": int(np.sum(w_last == 0.0)),
        "max|W-W*|": _small(float(np.max(np.abs(w_last - target))), 1e-10, ".1e"),
        "support from": support_from(weights, target),
        "steps to W*": steps_to_reach(weights, target, atol=atol),
        "sign flips": sign_flips(weights),
    }


def runs_table(runs, **kwargs):
    """A text table comparing runs, one row of `facts` per run; runs: dict label -> (losses,
    weights). Keyword arguments go to `facts`. 'never' stands for None."""
    decimals = kwargs.get("decimals", 4)
    rows = []
    for label, (losses, weights) in runs.items():
        s = facts(losses, weights, **kwargs)
        s["W"] = "[" + ", ".join(f"{v:{decimals + 3}.{decimals}f}" for v in s["W"]) + "]"
        rows.append([str(label)] + ["never" if v is None else str(v) for v in s.values()])
    return table(rows, ["run"] + list(s))


# --------------------------------------------------------------------------- the answers, from the runs
# Each function states what a part's runs show, in sentences computed from them, so that no answer
# can go false when a parameter (lambda, the step size, the number of steps) changes.

def _lam(lam) -> str:
    return f"{lam:g}"


def _which(lams, flags, *, every: str, none: str, some: str) -> str:
    """'every' when every flag holds, 'none' when none does, else 'some' with the λ where it does."""
    flags = [bool(f) for f in flags]
    if all(flags):
        return every
    if not any(flags):
        return none
    return some.format(", ".join(_lam(l) for l, f in zip(lams, flags) if f))


def _trend(values) -> str:
    """'grows', 'falls', 'does not change' or 'is not monotone' (in the order given, λ increasing)."""
    v = list(values)
    if all(a == b for a, b in zip(v, v[1:])):
        return "does not change"
    if all(a < b for a, b in zip(v, v[1:])):
        return "grows"
    if all(a > b for a, b in zip(v, v[1:])):
        return "falls"
    return "is not monotone"


def _shrunk(w, target=W_STAR) -> bool:
    """Are the kept elements (the non-zeros of target) pulled towards 0: of w*_j's sign and smaller, for each?"""
    keep = np.flatnonzero(target)
    same_sign = np.sign(w[keep]) == np.sign(target[keep])
    return bool(np.all(same_sign & (np.abs(w[keep]) < np.abs(target[keep]))))


def _check_runs(runs, lams):
    runs = list(runs.values()) if isinstance(runs, dict) else list(runs)
    lams = list(lams)
    if len(runs) != len(lams) or not runs:
        raise ValueError(f"need one run per lambda: {len(runs)} runs for {len(lams)} lambdas")
    if any(a >= b for a, b in zip(lams, lams[1:])):
        raise ValueError(f"lambdas must be increasing (the sentences say how things change as λ grows), got {lams}")
    return runs, lams


def l1_answers(runs, lams, *, target=W_STAR) -> list[str]:
    """What runs of an L1-penalised method show (one run per λ, in the order of ``lams``):
    exact zeros, the support found, the shrinkage of the kept weights, how the final loss and the
    sign flips change with λ. Sentences, for printing."""
    runs, lams = _check_runs(runs, lams)
    last = [np.asarray(W)[-1] for _, W in runs]
    zeros = [int(np.sum(w == 0.0)) for w in last]
    n_zero = int(np.sum(np.asarray(target) == 0))
    support = [support_from(W, target) for _, W in runs]
    flips = [sign_flips(W) for _, W in runs]
    final = [float(L[-1]) for L, _ in runs]
    lam_list = ", ".join(_lam(l) for l in lams)
    out = [
        "Exact zeros at the end: " + ", ".join(map(str, zeros)) + f" (λ = {lam_list}; W* has {n_zero}). "
        + _which(lams, [z >= n_zero for z in zeros], every="Every run has at least W*'s zeros.",
                 none="No run has as many exact zeros as W*.", some="Runs with at least W*'s zeros: λ = {}."),
        _which(lams, [s is not None for s in support], every="Every run ends with the support of W*",
               none="No run ends with the support of W*.", some="The support of W* is found at λ = {} only")
        + ("" if all(s is None for s in support) else
           " (from step " + ", ".join("never" if s is None else str(s) for s in support) + ")."),
        _which(lams, [_shrunk(w, target) for w in last],
               every="The kept weights are shrunk towards 0 (every non-zero of W* kept with its sign and a smaller magnitude) at every λ.",
               none="The kept weights are not shrunk towards 0 at any λ.",
               some="The kept weights are shrunk towards 0 (every non-zero of W* kept with its sign and a smaller magnitude) at λ = {}."),
        f"The final loss {_trend(final)} with λ ({', '.join(f'{v:.3g}' for v in final)}).",
        ("No run flips a sign." if not any(flips) else
         f"Sign flips: {', '.join(map(str, flips))}; their count {_trend(flips)} with λ."),
    ]
    return out


def proximal_vs_subgradient(sub, prox, lams) -> list[str]:
    """(e) against (d) at the same λ: the penalised objective at the end, the steps that raise it,
    the sign flips and the exact zeros. Sentences, for printing."""
    sub, lams = _check_runs(sub, lams)
    prox, _ = _check_runs(prox, lams)
    F = [(objective(*s, l)[-1], objective(*p, l)[-1]) for s, p, l in zip(sub, prox, lams)]
    up = [(objective_increases(*s, l), objective_increases(*p, l)) for s, p, l in zip(sub, prox, lams)]
    flips = [(sign_flips(s[1]), sign_flips(p[1])) for s, p in zip(sub, prox)]
    zeros = [(int(np.sum(np.asarray(s[1])[-1] == 0)), int(np.sum(np.asarray(p[1])[-1] == 0))) for s, p in zip(sub, prox)]
    pairs = lambda xs: "; ".join(f"λ = {_lam(l)}: {a} against {b}" for l, (a, b) in zip(lams, xs))
    return [
        _which(lams, [p <= s for s, p in F], every="The proximal runs end at a lower or equal L + λ‖W‖₁ than "
               "the subgradient runs at every λ", none="The proximal runs end at a higher L + λ‖W‖₁ than the "
               "subgradient runs at every λ", some="The proximal runs end at a lower or equal L + λ‖W‖₁ at λ = {} only")
        + " (" + "; ".join(f"λ = {_lam(l)}: {p:.4f} against {s:.4f}" for l, (s, p) in zip(lams, F)) + ").",
        "Steps that raise L + λ‖W‖₁, proximal against subgradient: " + pairs([(p, s) for s, p in up]) + ".",
        "Sign flips, proximal against subgradient: " + pairs([(p, s) for s, p in flips]) + ".",
        "Exact zeros at the end, proximal against subgradient: " + pairs([(p, s) for s, p in zeros]) + ".",
    ]


def trimmed_answers(runs, lams, projected, steps: int, *, target=W_STAR) -> list[str]:
    """(f): where the trimmed-L1 runs end, how fast they find the support as λ grows, and how far
    from W* they are after ``steps`` steps against projected gradient descent (``projected``, one
    run). Sentences, for printing."""
    runs, lams = _check_runs(runs, lams)
    shortest = min(len(W) for _, W in [*runs, projected])
    steps = checks.integer("steps", steps, minimum=1, maximum=shortest)
    dist = lambda W, s=None: float(np.max(np.abs(np.asarray(W)[-1 if s is None else s - 1] - target)))
    at_target = [dist(W) < 1e-10 and float(L[-1]) < ROUNDOFF for L, W in runs]
    support = [support_from(W, target) for _, W in runs]
    early = [dist(W, steps) for _, W in runs]
    proj = dist(projected[1], steps)
    out = [_which(lams, at_target, every="Every run ends at W* (distance and loss at round-off level).",
                  none="No run ends at W*.", some="The runs that end at W*: λ = {}.")]
    if all(s is not None for s in support):
        out.append(f"The support of W* is found for good from step {', '.join(map(str, support))}: "
                   f"that step {_trend(support)} as λ grows.")
    out.append(f"After {steps} steps the distance to W* is {', '.join(f'{d:.2g}' for d in early)} "
               f"(λ = {', '.join(_lam(l) for l in lams)}) against {proj:.2g} for projected GD: "
               + _which(lams, [d <= proj for d in early], every="every trimmed run is as close or closer.",
                        none="every trimmed run is further.", some="as close or closer at λ = {}, further at the others."))
    return out
