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
"""
from __future__ import annotations

import numpy as np

from . import checks
from .tables import table

__all__ = [
    "X", "Y", "W_STAR", "METHODS", "PENALISED",
    "loss", "gradient", "soft_threshold", "project_top_k", "optimize",
    "steps_to_reach", "support_from", "sign_flips", "objective", "objective_increases",
    "facts", "runs_table",
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


def optimize(method, *, lam=None, steps=200, lr=0.02, k=2, X=None, y=None):
    """Run `steps` full-batch steps of `method` from W^0 = 0; return (losses, weights).

    method: 'gd' | 'projected' | 'l1' | 'proximal' | 'trimmed_l1' (see the module docstring).
    lam:    the L1 weight lambda, >= 0; required by 'l1', 'proximal', 'trimmed_l1', and must be
            None for 'gd' and 'projected'. The threshold of the proximal step is lr * lam.
    lr:     the step size mu > 0.
    k:      'projected' keeps the k largest |w|; 'trimmed_l1' leaves the k largest unpenalised
            and soft-thresholds the d - k others. 1 <= k <= d.
    X, y:   the data, shapes (n, d) and (n,); default: the lab's three points.

    Returns losses (steps,) with losses[t] = L(W^{t+1}) (the plain loss, without the penalty)
    and weights (steps, d) with weights[t] = W^{t+1}, the weights after step t + 1.
    """
    X, y = _check(method, lam, steps, lr, k, X, y)
    d = X.shape[1]
    t = lr * lam if method in PENALISED else 0.0  # threshold of one proximal step
    W = np.zeros(d)
    weights = np.empty((steps, d))
    for step in range(steps):
        # 1. gradient step on the smooth part L (plus the subgradient of the penalty for 'l1')
        g = gradient(W, X, y)
        if method == "l1":
            g = g + lam * np.sign(W)  # np.sign(0) == 0: a valid subgradient of |w| at 0
        W = W - lr * g
        # 2. the non-smooth part: projection or (partial) proximal step
        if method == "projected":
            W = project_top_k(W, k)
        elif method == "proximal":
            W = soft_threshold(W, t)
        elif method == "trimmed_l1":
            small = np.argsort(np.abs(W), kind="stable")[: d - k]  # the d - k smallest |w|
            W[small] = soft_threshold(W[small], t)
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
