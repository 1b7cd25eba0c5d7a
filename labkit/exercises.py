"""Self-checks of the functions the assignment asks a student to write (Labs 1-3, and Lab 5's): the exercises,
their inputs, labkit's references and the usual mistakes; the grader judges by the same.

After each exercise the notebook calls ``exercises.check(key, fn)``: it runs the student's ``fn``
on inputs chosen to catch the usual mistakes, compares with labkit's reference on the same inputs, and
either prints one line saying the check passed or raises `Mistake` with a message that names what is
wrong:

    exercises.check("lab2 (b)", keep_mask)
    # lab2 (b) keep_mask: passed (5 inputs: ties at the threshold (|w| = 0.1 three times, q = 0.4); ...)

The grader runs the two halves of a check in two processes: `observe` in the student's sandbox,
`judge` in its own process (how, and how a mistake is named: `labkit.judge`). ``hidden=True`` runs
further inputs (the grader's hidden tests) and prints nothing when they pass.

The references are labkit's own functions, the ones the labs use when no student function is given
(``labkit.sparse_linear``, ``labkit.prune``, ``labkit.quant``, ``labkit.group_lasso``,
``labkit.early_exit``); `forbidden` lists, per exercise, the
reference and what it is built from, which the student's code may not call while it is checked.
"""
from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import torch

from . import early_exit, group_lasso, judge as _judge, prune, quant, sparse_linear as sl
from .judge import (PARTS, UNAVAILABLE, Case, Exercise, Mistake,  # noqa: F401
                    decode, encode)

__all__ = ["Mistake", "Case", "Exercise", "EXERCISES", "UNAVAILABLE", "check", "decode", "encode", "forbidden",
           "judge", "keys", "observe"]


def keys() -> list[str]:
    """The exercises' keys, in course order."""
    return list(EXERCISES)


def _exercise(key: str) -> Exercise:
    if not isinstance(key, str) or key not in EXERCISES:
        raise ValueError(f"no exercise {key!r}; the exercises are {keys()}")
    return EXERCISES[key]


def _lab(key: str) -> str:
    return key.split()[0]                                    # 'lab2 (c) mask' -> 'lab2'


# What the student's side (`observe`, in the grader's sandbox) needs of this module. Every other
# function here is a wrong version of an exercise or a piece of one, some of them all but right
# (`_soft` is soft thresholding): the sandbox's copy of labkit has them raise, and the self-check
# refuses them, as it refuses the references.
OBSERVE_NEEDS = ("keys", "_exercise", "_lab", "forbidden", "observe", "judge", "check", "_in_lab",
                 "_with_gradient", "_kept_gradient", "_schedule_steps", "_as_float", "_bool_mask",
                 "_gradient_cases", "_with_zeros", "_quant_forbidden", "_exits_and_predictions")


def forbidden(key: str) -> dict[str, tuple[str, ...]]:
    """{labkit module ('labkit.prune'): (names of functions and classes)} that the student's code may
    not call while exercise ``key`` is checked or graded (each raises
    ``RuntimeError(UNAVAILABLE.format(name=name, key=key))``): the references of every exercise of
    ``key``'s lab and what they are built from, and this module's wrong versions and their pieces."""
    lab, out = _lab(_exercise(key).key), {}
    for ex in EXERCISES.values():
        if _lab(ex.key) == lab:
            for module, names in ex.forbidden.items():
                out.setdefault(module, [])
                out[module] += [n for n in names if n not in out[module]]
    out[__name__] = sorted(n for n, v in globals().items()
                           if inspect.isfunction(v) and v.__module__ == __name__ and n not in OBSERVE_NEEDS)
    return {module: tuple(names) for module, names in out.items()}


def _in_lab(key: str) -> Exercise:
    """The exercise, with every name `forbidden` lists for it (its lab's references included)."""
    return dataclasses.replace(_exercise(key), forbidden=forbidden(key))


# --- the checks by an exercise's key ----------------------------------------------------------------

def observe(key: str, fn, *, hidden: bool = False) -> dict[str, np.ndarray]:
    """`labkit.judge.observe` for the exercise ``key`` (untrusted: the student's side)."""
    return _judge.observe(_exercise(key), fn, hidden=hidden)


def judge(key: str, obs: dict, *, hidden: bool = False) -> str:
    """`labkit.judge.judge` for the exercise ``key`` (trusted: labkit's side): the passed line, or `Mistake`."""
    return _judge.judge(_in_lab(key), obs, hidden=hidden)


def check(key: str, fn, *, hidden: bool = False) -> None:
    """Check a student's ``fn`` for the exercise ``key`` (one of `keys`), as the grader does
    (`labkit.judge.check`): every name `forbidden` lists, and every wrong version of every exercise,
    refused while ``fn`` runs. Prints the passed line (unless ``hidden``), or raises `Mistake`."""
    wrong = [(f"exercises.EXERCISES[{e.key!r}].mistakes", w) for e in EXERCISES.values() for _, w in e.mistakes]
    _judge.check(_in_lab(key), fn, hidden=hidden, also=wrong)


# --- the runs that compare more than the output ----------------------------------------------------

def _with_gradient(fn, w, *rest):
    """(output, gradient of sum(output * c) with respect to w) for a fixed c: the straight-through
    estimator's gradient is c itself. No gradient at all (a detached output) counts as zeros.
    ``w`` is the check's own copy of the case's weight, so a change fn makes to it in place shows."""
    w.requires_grad_(True)
    out = fn(w, *rest)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"expected a tensor, got {type(out).__name__}")
    c = torch.linspace(-1.0, 2.0, out.numel(), dtype=out.dtype).reshape(out.shape)
    if out.requires_grad:
        (out * c).sum().backward()
    grad = w.grad if w.grad is not None else torch.zeros_like(w)
    return out.detach(), grad


def _kept_gradient(fn, w, bits, mask):
    """As `_with_gradient`, the gradient compared at the kept entries only (at the pruned ones the
    layer's mask zeroes it anyway)."""
    out, grad = _with_gradient(fn, w, bits, mask)
    return out, grad[mask]


def _schedule_steps(fn, steps, target):
    return np.array([float(fn(e, steps, target)) for e in range(1, steps + 1)])


def _as_float(fn, *args):
    out = fn(*args)
    return float(out) if isinstance(out, (torch.Tensor, np.ndarray)) and np.size(out) == 1 else out


def _bool_mask(fn, w, q):
    out = fn(w, q)
    if isinstance(out, torch.Tensor) and out.dtype != torch.bool:
        raise TypeError(f"it must return a bool tensor (True = kept), got {out.dtype}")
    return out


# --- Lab 1 -----------------------------------------------------------------------------------------

_rng = np.random.default_rng(2024)
_X2, _y2, _W2 = _rng.normal(size=(4, 6)), _rng.normal(size=4), _rng.normal(size=6)
_W1 = np.array([0.5, -1.0, 2.0, 0.0, 0.25])


def _gradient_cases(hidden):
    if hidden:
        return (Case((_W2, _X2, _y2), "other data: 4 points, 6 weights"),
                Case((sl.W_STAR, sl.X, sl.Y), "W at the sparse optimum (the gradient is 0)"))
    return (Case((np.zeros(5), sl.X, sl.Y), "W = 0, the lab's data"),
            Case((_W1, sl.X, sl.Y), "W = [0.5, -1, 2, 0, 0.25], the lab's data"))


def _tie_high(v, k):
    v = np.asarray(v, dtype=float)
    keep = (len(v) - 1 - np.argsort(-np.abs(v[::-1]), kind="stable"))[:k]
    out = np.zeros_like(v)
    out[keep] = v[keep]
    return out


def _top(v, k, order):
    v = np.asarray(v, dtype=float)
    out = np.zeros_like(v)
    keep = order(v)[:k]
    out[keep] = v[keep]
    return out


def _soft(v, t):
    v = np.asarray(v, dtype=float)
    return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)


def _hard(v, t):
    """Hard thresholding: the soft thresholding's shrinking term t sign(v) left out."""
    v = np.asarray(v, dtype=float)
    return np.where(np.abs(v) <= t, 0.0, v)


def _away(v, t):
    """Soft thresholding with the wrong sign of its t sign(v) term: the survivors move away from 0."""
    v = np.asarray(v, dtype=float)
    return np.where(np.abs(v) <= t, 0.0, v + t * np.sign(v))


def _trimmed_wrong(pick_from_w=False, largest=False, lam_only=False, all_=False, no_step=False, threshold=_soft):
    def step(W, g, lr, lam, k):
        W, g = np.asarray(W, dtype=float), np.asarray(g, dtype=float)
        V = W.copy() if no_step else W - lr * g
        t = lam if lam_only else lr * lam
        if all_:
            return threshold(V, t)
        ranked = np.argsort(np.abs(W if pick_from_w else V), kind="stable")
        chosen = ranked[k:] if largest else ranked[: V.size - k]
        V[chosen] = threshold(V[chosen], t)
        return V
    return step


_TW, _TG = np.array([0.3, 2.0, -0.05, 0.6, -1.0]), np.array([1.0, 0.0, -5.0, 0.0, 0.0])


# --- Lab 2 -----------------------------------------------------------------------------------------

_gen = torch.Generator().manual_seed(2024)
_w200 = torch.randn(200, generator=_gen)
_conv = torch.randn(4, 3, 3, 3, generator=_gen) * 0.1
# |w| sorted: 0.02, 0.05, 0.1, 0.1, 0.1, 0.4; at q = 0.4 the quantile is the first 0.1 (position 2):
# a threshold one place too low (0.05) keeps the ties as ">=" does, while q = 0 tells the two apart
_ties = torch.tensor([0.02, -0.1, 0.1, 0.4, 0.1, -0.05])
_ten = torch.tensor([0.9, -0.1, 0.5, 0.3, -0.7, 0.2, 0.8, -0.4, 0.6, 0.05])
_layers = [torch.randn(30, generator=_gen) * 0.5, torch.randn(4, 5, generator=_gen) * 0.05,
           torch.randn(2, 3, 3, generator=_gen) * 2.0]


def _with_zeros(t, every=3):
    t = t.clone()
    t.view(-1)[::every] = 0.0
    return t


_OFF_BY_ONE = ("takes the wrong order statistic (off by one): the q-quantile of n values lies at position "
               "q (n - 1) of the sorted |w|, counted from 0, interpolated between its two neighbours")


def _keep(w, q):
    a = w.detach().abs().double()
    return a > torch.quantile(a.flatten(), q)


def _kth(w, q):
    """The threshold one place too low: the k-th smallest |w| with k = int(q n) (1-based), not position q (n - 1)."""
    a = w.detach().abs().double()
    return a > torch.kthvalue(a.flatten(), max(1, int(q * a.numel()))).values


def _index_qn(w, q):
    """The threshold one place too high: the sorted |w| at index int(q n) (0-based), not position q (n - 1)."""
    a = w.detach().abs().double()
    return a > torch.sort(a.flatten()).values[min(int(q * a.numel()), a.numel() - 1)]


def _zeros(weights):
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def _global_wrong(kind):
    def threshold(weights, q):
        if kind == "mean":
            return torch.stack([torch.quantile(w.detach().abs().flatten().double(), q) for w in weights]).mean()
        flat = torch.cat([w.flatten() for w in weights]).double()
        if kind == "signed":
            return torch.quantile(flat, q)
        return torch.quantile(flat.abs(), q / 100)
    return threshold


# --- Lab 3 -----------------------------------------------------------------------------------------

def _minmax(w, bits, n_of=lambda b: 2 ** b - 1, rounding=torch.round, codes=False):
    w = w.detach()
    if bits is None:
        return w.clone()
    if bits == 0:
        return torch.zeros_like(w)
    lo, hi = w.min(), w.max()
    alpha, n = hi - lo, n_of(bits)
    if alpha == 0:
        return w.clone()
    k = rounding((w - lo) / alpha * n).clamp(0, n)
    return k if codes else alpha * (k / n) + lo


def _round_through(w, bits):
    """The quantizer computed with autograd through round (no straight-through estimator)."""
    if bits is None:
        return w
    if bits == 0:
        return w * 0
    lo, hi = w.min(), w.max()
    alpha, n = hi - lo, 2 ** bits - 1
    if alpha == 0:
        return w * 1
    return alpha * (torch.round((w - lo) / alpha * n) / n) + lo


def _symmetric(w, bits, m_of=lambda b: 2 ** (b - 1) - 1, signed=False):
    w = w.detach()
    m = m_of(bits)
    s = (w.max() if signed else w.abs().max()) / m
    return s * torch.round(w / s).clamp(-m, m)


def _masked_minmax(w, bits, mask):
    """The mask-aware quantizer's values (no gradient): min and max over the kept weights, the others 0."""
    w = w.detach()
    kept = w[mask]
    lo, hi = kept.min(), kept.max()
    alpha, n = hi - lo, 2 ** bits - 1
    levels = torch.full_like(w, float(lo)) if alpha == 0 else alpha * (torch.round((w - lo) / alpha * n).clamp(0, n) / n) + lo
    return torch.where(mask, levels, torch.zeros_like(w))


def _through(w, values):
    """values in the forward pass, the gradient straight through to w."""
    return w + (values - w).detach()


def _masked_wrong(kind):
    def fn(w, bits, mask):
        if kind == "range":                   # min and max over every weight, the zeros included
            return _through(w, _minmax(w, bits) * mask)
        fill = _minmax(w, bits) if kind == "naive" else torch.full_like(w, float(w.detach()[mask].min()))
        return _through(w, torch.where(mask, _masked_minmax(w, bits, mask), fill))
    return fn


_wq = torch.randn(60, generator=_gen) * 0.2
_wq_conv = torch.randn(8, 4, 3, 3, generator=_gen) * 0.05
_wp = _with_zeros(torch.randn(64, generator=_gen) * 0.1 + 0.02, every=2)
_wp2 = _with_zeros(torch.randn(6, 4, 3, 3, generator=_gen) * 0.05, every=5)
_wp_pos = _with_zeros(torch.rand(40, generator=_gen) * 0.1 + 0.05, every=2)   # kept weights all positive


def _quant_forbidden(*names):
    """The quantizer exercises' forbidden names: their own and the shared machinery it is built from."""
    return {"labkit.quant": names + ("QuantizeSTE", "quantize", "encode", "_encode", "Quantize")}


def _ste_mistakes(values):
    """The mistake every quantizer can make: the right values, detached (``values`` computes them)."""
    return (("passes no gradient: the straight-through estimator's backward returns the upstream "
             "gradient unchanged (round alone has zero derivative almost everywhere)", values),)


# --- Lab 5 -----------------------------------------------------------------------------------------

def _block(v, t, sqrt_size=False, elementwise=False, unsafe=False):
    """Block soft thresholding and its usual wrong versions (a wrong one is named by its flag)."""
    v = torch.as_tensor(v).detach().double()
    if sqrt_size:                               # the group's weight sqrt(|g|) folded in a second time
        t = t * v.numel() ** 0.5
    if elementwise:                             # soft thresholding entry by entry, not the group's norm
        return v.sign() * (v.abs() - t).clamp_min(0)
    norm = v.norm()
    if unsafe:                                  # v / ||v|| at ||v|| = 0: 0 / 0
        return v / norm * (norm - t).clamp_min(0)
    return torch.zeros_like(v) if norm <= t else (1 - t / norm) * v


def _block_hard(v, t):
    """The whole group zeroed below t, the others left as they are (no shrinking)."""
    v = torch.as_tensor(v).detach().double()
    return torch.zeros_like(v) if v.norm() <= t else v.clone()


def _exits_and_predictions(fn, probs, tau):
    """(2, N) int64: the exits and the predictions ``fn(probs, tau)`` returns, one row each."""
    out = fn(probs, tau)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"it must return two tensors (exits, predictions), got {type(out).__name__}")
    return torch.stack([torch.as_tensor(o).to(torch.int64).flatten() for o in out])


def _exit_wrong(strict=False, last=False, no_fallback=False):
    def rule(probs, tau):
        p = torch.as_tensor(probs)
        conf = p.amax(dim=2)                                        # (K, N)
        ok = conf > tau if strict else conf >= tau
        K, N = ok.shape
        if not no_fallback:
            ok[-1] = True
        if last:                                                    # the last confident exit
            exits = K - 1 - ok.flip(0).to(torch.int8).argmax(dim=0)
        else:
            exits = ok.to(torch.int8).argmax(dim=0)                 # no confident exit -> 0 without the fallback
        preds = p.argmax(dim=2).gather(0, exits.unsqueeze(0)).squeeze(0)
        return exits.to(torch.int64), preds
    return rule


# 3 exits, 4 images: image 0 confident at exit 0; image 1 exactly at tau = 0.8 at exit 1 (>= exits there);
# image 2 confident only at exits 1 and 2 (the first one answers); image 3 never confident (the final answers)
_probs_a = torch.tensor([[[0.90, 0.05, 0.05], [0.50, 0.30, 0.20], [0.40, 0.35, 0.25], [0.40, 0.30, 0.30]],
                        [[0.10, 0.85, 0.05], [0.10, 0.80, 0.10], [0.05, 0.05, 0.90], [0.30, 0.40, 0.30]],
                        [[0.05, 0.90, 0.05], [0.05, 0.05, 0.90], [0.95, 0.03, 0.02], [0.20, 0.20, 0.60]]],
                        dtype=torch.float64)          # (K, N, classes): built here, no helper (the sandbox's copy stubs them)
_gen5 = torch.Generator().manual_seed(5)
_probs_r = torch.softmax(torch.randn(3, 40, 10, generator=_gen5, dtype=torch.float64) * 2.5, dim=2)
_probs_r2 = torch.softmax(torch.randn(2, 25, 10, generator=_gen5, dtype=torch.float64) * 3.0, dim=2)
_group = torch.randn(290, generator=_gen5, dtype=torch.float64) * 0.05          # a stage-1 group: |g| = 290
_group_c = torch.randn(8, 4, 3, 3, generator=_gen5, dtype=torch.float64) * 0.1


EXERCISES = {ex.key: ex for ex in [
    Exercise("lab1 (b)", "gradient", sl.gradient,
             _gradient_cases(False), _gradient_cases(True),
             (("misses the factor 2 of the derivative of a square", lambda W, X, y: X.T @ (X @ W - y)),
              ("takes the mean over the points; the loss is their sum", lambda W, X, y: 2.0 * X.T @ (X @ W - y) / len(y)),
              ("has the wrong sign: it points downhill; the residual in the gradient is the prediction minus "
               "the target", lambda W, X, y: 2.0 * X.T @ (y - X @ W))),
             forbidden={"labkit.sparse_linear": ("gradient",)}),
    Exercise("lab1 (c)", "project_top_k", sl.project_top_k,
             (Case((np.array([3.0, -5.0, 1.0, 0.5, -2.0]), 2), "v = [3, -5, 1, 0.5, -2], k = 2"),
              Case((np.array([1.0, -1.0, 0.5, 1.0]), 2), "a tie of |v| at the k-th place: keep the lower index"),
              Case((np.array([0.2, -0.1, 0.3]), 3), "k = d keeps everything")),
             (Case((_rng.normal(size=9), 4), "9 random values, k = 4"),
              Case((np.array([-4.0, 1.0, 2.0]), 1), "k = 1")),
             (("keeps the k largest values, not the k largest magnitudes |v|",
               lambda v, k: _top(v, k, lambda v: np.argsort(-v, kind="stable"))),
              ("keeps the k smallest |v| instead of the k largest",
               lambda v, k: _top(v, k, lambda v: np.argsort(np.abs(v), kind="stable"))),
              ("keeps one element too many", lambda v, k: _top(v, k + 1, lambda v: np.argsort(-np.abs(v), kind="stable"))),
              ("keeps one element too few", lambda v, k: _top(v, k - 1, lambda v: np.argsort(-np.abs(v), kind="stable"))),
              ("breaks a tie of |v| towards the higher index; rank by -|v| with a stable sort, so that the "
               "lower index wins and every run is the same", _tie_high)),
             forbidden={"labkit.sparse_linear": ("project_top_k", "_top_k")}),
    Exercise("lab1 (d)", "l1_subgradient", sl.l1_subgradient,
             (Case((np.array([0.0, 3.0, -2.0, 0.0, 0.5]), 0.2), "W with zeros, lam = 0.2"),
              Case((np.array([1.0, -1.0, 0.0]), 0.0), "lam = 0")),
             (Case((_rng.normal(size=6), 1.5), "6 random weights, lam = 1.5"),
              Case((np.zeros(4), 0.3), "W = 0")),
             (("is not 0 at w = 0: the lab takes sign(0) = 0 (any value in [-lam, lam] is a subgradient there)",
               lambda W, lam: lam * np.where(np.asarray(W) >= 0, 1.0, -1.0)),
              ("is not 0 at w = 0: the lab takes sign(0) = 0 (any value in [-lam, lam] is a subgradient there)",
               lambda W, lam: lam * np.where(np.asarray(W) > 0, 1.0, -1.0)),
              ("forgets lam: the subgradient of lam ||W||_1 is lam sign(W)", lambda W, lam: np.sign(W)),
              ("returns the penalty lam |W|, not its subgradient", lambda W, lam: lam * np.abs(W))),
             forbidden={"labkit.sparse_linear": ("l1_subgradient",)}),
    Exercise("lab1 (e)", "soft_threshold", sl.soft_threshold,
             (Case((np.array([-3.0, -0.5, 0.0, 0.2, 0.5, 2.0]), 0.5), "v from -3 to 2 with |v| = t at two places, t = 0.5"),
              Case((np.array([1.5, -0.25]), 0.0), "t = 0 leaves v as it is")),
             (Case((_rng.normal(size=7) * 2, 1.2), "7 random values, t = 1.2"),
              Case((np.array([0.1, -0.2]), 5.0), "t larger than every |v|")),
             (("is hard thresholding: the elements that survive must also move towards 0 by t",
               lambda v, t: np.where(np.abs(v) <= t, 0.0, v)),
              ("loses the sign of v: soft thresholding keeps each element's sign and shrinks its magnitude", lambda v, t: np.maximum(np.abs(v) - t, 0.0)),
              ("moves every element by t, past 0 when |v| < t: those must become exactly 0",
               lambda v, t: np.asarray(v) - t * np.sign(v)),
              ("has the wrong sign: the surviving elements come out with the opposite sign of v; each keeps "
               "its sign, only its magnitude shrinks by t", lambda v, t: -_soft(v, t)),
              ("moves the surviving elements away from 0 (the wrong sign of the t sign(v) term): they must "
               "move towards 0 by t", _away),
              ("takes t - |v| instead of |v| - t: the small elements come out non-zero and the large ones 0, "
               "the other way round from soft thresholding",
               lambda v, t: np.sign(v) * np.maximum(t - np.abs(np.asarray(v, dtype=float)), 0.0))),
             forbidden={"labkit.sparse_linear": ("soft_threshold",)}),
    Exercise("lab1 (f)", "trimmed_l1_step", sl.trimmed_l1_step,
             (Case((_TW, _TG, 0.5, 0.4, 2), "a step that changes which weights are the k largest"),
              Case((np.array([0.4, -0.3, 0.2]), np.zeros(3), 0.1, 1.0, 1), "g = 0: only the thresholding")),
             (Case((_rng.normal(size=6), _rng.normal(size=6), 0.05, 2.0, 3), "6 random weights and gradients, k = 3"),
              Case((np.array([1.0, 0.2, -0.1]), np.array([0.1, 0.1, 0.1]), 0.02, 0.0, 1), "lam = 0: a plain gradient step")),
             (("chooses the weights to threshold before the gradient step; choose the d - k smallest |v| of "
               "v = W - lr g", _trimmed_wrong(pick_from_w=True)),
              ("thresholds the k largest instead of the d - k smallest", _trimmed_wrong(largest=True)),
              ("thresholds by lam instead of lr lam (one proximal step of lr lam ||.||_1)", _trimmed_wrong(lam_only=True)),
              ("thresholds every weight (that is the proximal step of (e)); the k largest are not penalised",
               _trimmed_wrong(all_=True)),
              ("forgets the gradient step: first v = W - lr g, then the thresholding", _trimmed_wrong(no_step=True)),
              ("misses the lr lam sign(v) term of soft thresholding: it sets the small elements with |v| <= lr lam "
               "to 0 but does not move the others towards 0 by lr lam", _trimmed_wrong(threshold=_hard)),
              ("moves the thresholded elements away from 0 (the wrong sign of the lr lam sign(v) term): soft "
               "thresholding moves them towards 0 by lr lam", _trimmed_wrong(threshold=_away))),
             forbidden={"labkit.sparse_linear": ("trimmed_l1_step", "soft_threshold")}),
    Exercise("lab2 (b)", "keep_mask", prune.keep_mask,
             (Case((_ties, 0.4), "ties at the threshold (|w| = 0.1 three times, q = 0.4)"),
              Case((_w200, 0.5), "200 random weights, q = 0.5"),
              Case((_conv, 0.8), "a conv weight of shape (4, 3, 3, 3), q = 0.8"),
              Case((_w200, 0.0), "q = 0 (only the smallest |w| goes)"),
              Case((_w200, 1.0), "q = 1 (everything goes)")),
             (Case((_w200 * 3 - 0.5, 0.3), "200 shifted weights, q = 0.3"),
              Case((torch.tensor([0.5, -0.5, 0.5, 0.25]), 0.5), "ties of opposite sign"),
              Case((_ten, 0.35), "10 weights, q = 0.35")),
             (("prunes nothing at q = 0: the rule prunes every |w| <= the q-quantile, and at q = 0 that is the "
               "smallest |w|", lambda w, q: torch.ones(w.shape, dtype=torch.bool) if q == 0 else _keep(w, q)),
              ("keeps the weights equal to the threshold: every weight whose |w| is at most the threshold is "
               "pruned, ties included; only those strictly above it are kept",
               lambda w, q: w.abs().double() >= torch.quantile(w.abs().double().flatten(), q)),
              (_OFF_BY_ONE, _kth),
              (_OFF_BY_ONE, _index_qn),
              ("takes q for a percentage: q is a fraction (0.8 prunes 80 % of the weights)",
               lambda w, q: w.abs().double() > torch.quantile(w.abs().double().flatten(), q / 100)),
              ("ranks w, not |w|: a large negative weight is a large weight",
               lambda w, q: w.double() > torch.quantile(w.double().flatten(), q)),
              ("returns True for the pruned weights; the mask is True where a weight is kept",
               lambda w, q: ~_keep(w, q))),
             run=_bool_mask, exact=True,
             forbidden={"labkit.prune": ("keep_mask", "magnitude_threshold", "global_threshold")}),
    Exercise("lab2 (c) sparsity", "sparsity_of", prune.total_sparsity,
             (Case(([torch.zeros(10), torch.ones(30)],), "a 10-weight layer all zero, a 30-weight layer dense"),
              Case(([_with_zeros(_conv, 4), torch.ones(3, 3)],), "a conv weight with every 4th weight zero")),
             (Case(([torch.zeros(2, 2), _with_zeros(_w200, 2), torch.ones(7)],), "three layers"),),
             (("averages the layers' sparsities; the total counts every weight once, so a large layer weighs more",
               lambda ws: sum(float((w == 0).float().mean()) for w in ws) / len(ws)),
              ("is a percentage; return a fraction (0.8 for 80 %)", lambda ws: 100 * _zeros(ws)),
              ("counts the non-zero weights (the density), not the zeros", lambda ws: 1 - _zeros(ws))),
             run=_as_float, forbidden={"labkit.prune": ("total_sparsity", "sparsity", "Sparsity")}),
    Exercise("lab2 (c) mask", "apply_mask", prune.apply_mask,
             (Case((_conv, _conv.abs() > 0.05), "a conv weight and its mask"),
              Case((_w200, _w200 > 10), "a mask that prunes everything")),
             (Case((_w200, _w200.abs() > 0.2), "200 weights"),),
             (("cuts the gradient off from the kept weights too (a detached result): only the pruned "
               "positions must get zero gradient", lambda w, m: (w * m).detach()),
              ("lets the gradient through at the pruned positions: multiply w by the mask in the forward pass "
               "itself, so that autograd zeroes the gradient there", lambda w, m: w + (w * m - w).detach())),
             run=_with_gradient, parts=PARTS, forbidden={"labkit.prune": ("apply_mask", "Mask")}),
    Exercise("lab2 (d)", "schedule", prune.linear_schedule,
             (Case((10, 0.8), "10 steps to 0.8"), Case((1, 0.7), "one step: the target at once")),
             (Case((4, 0.5), "4 steps to 0.5"),),
             (("is off by one: step e = 1..steps prunes e / steps of the target, so the last step reaches it",
               lambda e, s, t: t * (e - 1) / s),
              ("is off by one: step e = 1..steps prunes e / steps of the target, so the last step reaches it",
               lambda e, s, t: t * (e + 1) / s),
              ("is a percentage; return a fraction (0.8 for 80 %)", lambda e, s, t: 100 * t * e / s),
              ("is Zhu & Gupta's cubic schedule; this lab's is linear: every step adds the same share of the target",
               lambda e, s, t: t * (1 - (1 - e / s) ** 3)),
              ("prunes nothing at the first step: (e - 1) / (steps - 1) starts at 0; step e = 1..steps prunes "
               "e / steps of the target, so the first step already prunes target / steps",
               lambda e, s, t: t * (e - 1) / (s - 1))),
             run=_schedule_steps, forbidden={"labkit.prune": ("linear_schedule", "IterativePruning")}),
    Exercise("lab2 (e)", "global_threshold", prune.global_threshold,
             (Case((_layers, 0.5), "three layers of very different scales, q = 0.5"),
              Case((_layers, 0.8), "the same, q = 0.8"),
              Case((_layers, 0.0), "q = 0")),
             (Case(([_w200, _conv], 0.3), "two layers, q = 0.3"),),
             (("averages the layers' own thresholds; the global threshold is one quantile of every |w| together",
               _global_wrong("mean")),
              ("is a quantile of w, not of |w|", _global_wrong("signed")),
              ("takes q for a percentage: q is a fraction (0.8 prunes 80 % of the weights)", _global_wrong("percent"))),
             run=_as_float, forbidden={"labkit.prune": ("global_threshold", "magnitude_threshold")}),
    Exercise("lab3 (a)", "ste_quantize", quant.ste_quantize,
             (Case((_wq, 2), "60 weights, 2 bits"), Case((_wq_conv, 4), "a conv weight, 4 bits"),
              Case((_wq, 1), "1 bit: min and max only"), Case((torch.full((5,), 0.3), 3), "a constant tensor (max = min)"),
              Case((_wq, 0), "0 bits: all zeros"), Case((_wq, None), "bits None: the float weights")),
             (Case((_wq * 5 + 1, 3), "shifted weights, 3 bits"), Case((_wq_conv, 8), "8 bits")),
             _ste_mistakes(_minmax) + (
              ("has no straight-through gradient: autograd through round gives zero almost everywhere (only "
               "min and max get one); compute the levels from the weights detached from the graph and pass them "
               "through a function whose backward returns the upstream gradient unchanged", _round_through),
              ("uses 2^b steps; 2^b levels from min to max are 2^b - 1 steps (n = 2^b - 1)",
               lambda w, b: w + (_minmax(w, b, n_of=lambda b: 2 ** b) - w).detach()),
              ("rounds down (floor); each weight goes to the nearest level (round)",
               lambda w, b: w + (_minmax(w, b, rounding=torch.floor) - w).detach()),
              ("returns the integer codes 0..2^b - 1, not the weights they stand for",
               lambda w, b: w + (_minmax(w, b, codes=True) - w).detach())),
             run=_with_gradient, parts=PARTS, forbidden=_quant_forbidden("ste_quantize")),
    Exercise("lab3 (d)", "masked_quantize", quant.masked_quantize,
             (Case((_wp, 2, _wp != 0), "half the weights pruned, 2 bits"),
              Case((_wp2, 4, _wp2 != 0), "a pruned conv weight, 4 bits"),
              Case((_wp_pos, 2, _wp_pos != 0), "kept weights all positive, 2 bits (the zeros would widen the range)")),
             (Case((_wp * 3, 3, _wp != 0), "3 bits"),),
             _ste_mistakes(_masked_minmax) + (
              ("takes min and max over every weight, the pruned zeros included; take them over the kept ones",
               _masked_wrong("range")),
              ("does not keep the pruned weights at 0: the naive quantizer rounds them to a level",
               _masked_wrong("naive")),
              ("gives the pruned weights a level (min of the kept weights); they must stay exactly 0",
               _masked_wrong("level"))),
             run=_kept_gradient, parts=PARTS, forbidden=_quant_forbidden("masked_quantize", "_range")),
    Exercise("lab3 (f)", "symmetric_quantize", quant.symmetric_quantize,
             (Case((_wq, 2), "60 weights, 2 bits (levels -s, 0, s)"), Case((_wq_conv, 4), "a conv weight, 4 bits"),
              Case((_wq - 0.3, 3), "weights mostly negative, 3 bits")),
             (Case((_wq + 0.3, 3), "weights mostly positive, 3 bits"), Case((_wq, 8), "8 bits")),
             _ste_mistakes(_symmetric) + (
              ("uses m = 2^b - 1; the levels s k, k = -m..m, fit in b bits only with m = 2^(b-1) - 1",
               lambda w, b: w + (_symmetric(w, b, m_of=lambda b: 2 ** b - 1) - w).detach()),
              ("uses m = 2^(b-1); then k = -m..m are 2^b + 1 levels, one more than b bits hold",
               lambda w, b: w + (_symmetric(w, b, m_of=lambda b: 2 ** (b - 1)) - w).detach()),
              ("scales by max w, not max |w|", lambda w, b: w + (_symmetric(w, b, signed=True) - w).detach())),
             run=_with_gradient, parts=PARTS, forbidden=_quant_forbidden("symmetric_quantize")),
    Exercise("lab5 (b)", "block_soft_threshold", group_lasso.block_soft_threshold,
             (Case((_group, 0.5), "a group of 290 weights (norm about 0.85), t = 0.5: it shrinks"),
              Case((_group, 2.0), "the same group, t = 2: its norm is below t, it becomes exactly 0"),
              Case((torch.tensor([3.0, 0.01, -4.0], dtype=torch.float64), 1.0),
                   "[3, 0.01, -4], t = 1: the small entry of a large group is not zeroed"),
              Case((torch.zeros(5, dtype=torch.float64), 0.1), "a zero group (its norm is 0)")),
             (Case((_group_c, 0.3), "a conv-shaped group (8, 4, 3, 3), t = 0.3"),
              Case((_group * 10, 0.0), "t = 0 leaves the group as it is"),
              Case((torch.tensor([0.6, -0.8], dtype=torch.float64), 1.0), "norm exactly t: zero")),
             (("thresholds every entry on its own (element-wise soft thresholding): the group shrinks as a "
               "whole, by t along its own direction, and is zero only when its norm is at most t",
               lambda v, t: _block(v, t, elementwise=True)),
              ("multiplies t by the square root of the group's size again: the t given already holds "
               "lr lam sqrt(|g|)", lambda v, t: _block(v, t, sqrt_size=True)),
              ("divides by a zero norm (a zero group comes out as NaN): return 0 when the norm is at most t, "
               "without dividing", lambda v, t: _block(v, t, unsafe=True)),
              ("zeroes small groups but leaves the others as they are (hard thresholding of the norm): the "
               "surviving groups must shrink too, to (1 - t / norm) times themselves", _block_hard),
              ("divides by the squared norm: the factor is 1 - t / norm, the norm itself",
               lambda v, t: (torch.zeros_like(torch.as_tensor(v).double())
                             if torch.as_tensor(v).double().norm() <= t
                             else (1 - t / torch.as_tensor(v).double().norm() ** 2).clamp_min(0)
                             * torch.as_tensor(v).double()))),
             forbidden={"labkit.group_lasso": ("block_soft_threshold", "_block_factor", "prox_step")}),
    Exercise("lab5 (c)", "exit_rule", early_exit.exit_rule,
             (Case((_probs_a, 0.8), "3 exits, 4 images: confident early, exactly at tau, late, never"),
              Case((_probs_a, 0.0), "tau = 0: every image leaves at the first exit"),
              Case((_probs_a, 2.0), "tau above 1: no early exit, the final classifier answers"),
              Case((_probs_r, 0.6), "40 random images, 10 classes, tau = 0.6")),
             (Case((_probs_r, 0.9), "tau = 0.9"), Case((_probs_r2, 0.5), "2 exits, tau = 0.5")),
             (("exits only above tau (>); an exit whose confidence equals tau answers (>=)", _exit_wrong(strict=True)),
              ("takes the last confident exit; the first exit whose confidence reaches tau answers, the "
               "later ones are never computed", _exit_wrong(last=True)),
              ("does not fall back to the final classifier: an image no internal classifier is confident "
               "about is answered by the final one, whatever its confidence", _exit_wrong(no_fallback=True))),
             run=_exits_and_predictions, exact=True,
             forbidden={"labkit.early_exit": ("exit_rule", "accuracy_at", "choose_tau", "EarlyExitNet")}),
]}
