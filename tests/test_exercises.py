"""labkit.exercises: the self-checks pass correct student functions and print the line the notebooks
store, name every usual mistake (each wrong version really differs from the reference), show what
differs, see inputs changed in place, call the function they are given (a blank exercise fails) and
refuse labkit's reference under any name. The judge half: tests/test_judge.py."""
import importlib
import re
import sys
import threading
import types
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from labkit import exercises, judge, prune, quant, sparse_linear

KEYS = exercises.keys()
REPO = Path(__file__).resolve().parents[1]


def test_the_exercises_of_the_assignment():
    assert KEYS == ["lab1 (b)", "lab1 (c)", "lab1 (d)", "lab1 (e)", "lab1 (f)", "lab2 (b)", "lab2 (c) sparsity",
                    "lab2 (c) mask", "lab2 (d)", "lab2 (e)", "lab3 (a)", "lab3 (d)", "lab3 (f)", "lab5 (b)", "lab5 (c)"]


# --- the students' solutions as the solved notebooks write them (without labkit) ------------------

def _soft_threshold(v, t):
    return np.sign(v) * np.maximum(np.abs(v) - t, 0.0)


def _trimmed(W, g, lr, lam, k):
    v = W - lr * g
    small = np.argsort(np.abs(v), kind="stable")[: v.size - k]
    v[small] = _soft_threshold(v[small], lr * lam)
    return v


def _top_k(v, k):
    keep = np.argsort(-np.abs(v), kind="stable")[:k]
    out = np.zeros_like(v)
    out[keep] = v[keep]
    return out


def _keep_mask(w, q):
    a = w.detach().abs().double()
    return a > torch.quantile(a.flatten(), q)


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, q):
        return q.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _ste(w, bits):
    if bits is None:
        return w
    if bits == 0:
        return _StraightThrough.apply(w, torch.zeros_like(w))
    v = w.detach()
    lo, hi = v.min(), v.max()
    alpha, n = hi - lo, 2 ** bits - 1
    if alpha == 0:
        return _StraightThrough.apply(w, v)
    R = torch.round((v - lo) / alpha * n).clamp(0, n)
    return _StraightThrough.apply(w, alpha * (R / n) + lo)


def _masked(w, bits, mask):
    out = torch.zeros_like(w)
    out[mask] = _ste(w[mask], bits)
    return out


def _symmetric(w, bits):
    v = w.detach()
    m = 2 ** (bits - 1) - 1
    s = v.abs().max() / m
    return _StraightThrough.apply(w, s * torch.round(v / s).clamp(-m, m))


def _block_soft_threshold(v, t):
    norm = v.norm()
    if norm <= t:
        return torch.zeros_like(v)
    return (1 - t / norm) * v


def _exit_rule(probs, tau):
    confident = probs.amax(dim=2) >= tau
    confident[-1] = True
    exits = confident.int().argmax(dim=0)
    return exits, probs.argmax(dim=2)[exits, torch.arange(probs.shape[1])]


SOLUTIONS = {
    "lab1 (b)": lambda W, X, y: 2.0 * X.T @ (X @ W - y),
    "lab1 (c)": _top_k,
    "lab1 (d)": lambda W, lam: lam * np.sign(W),
    "lab1 (e)": _soft_threshold,
    "lab1 (f)": _trimmed,
    "lab2 (b)": _keep_mask,
    "lab2 (c) sparsity": lambda weights: sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights),
    "lab2 (c) mask": lambda w, mask: w * mask,
    "lab2 (d)": lambda e, steps, target: target * e / steps,
    "lab2 (e)": lambda weights, q: torch.quantile(torch.cat([w.detach().abs().flatten().double() for w in weights]), q),
    "lab3 (a)": _ste,
    "lab3 (d)": _masked,
    "lab3 (f)": _symmetric,
    "lab5 (b)": _block_soft_threshold,
    "lab5 (c)": _exit_rule,
}


def _stored_lines() -> dict[str, str]:
    """The passed lines the solved notebooks store, by exercise key."""
    lines = {}
    for path in sorted((REPO / "labs").glob("lab*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code" and "exercises.check(" in cell.source:
                for line in "".join(o.get("text", "") for o in cell.get("outputs", [])).splitlines():
                    found = re.match(r"(lab\d \([a-z]\)(?: sparsity| mask)?) \S+: passed \(", line)
                    if found:
                        lines[found.group(1)] = line
    return lines


def test_the_solutions_cover_every_exercise():
    assert set(SOLUTIONS) == set(KEYS)


@pytest.mark.parametrize("key", KEYS)
def test_a_correct_solution_passes_and_prints_the_line_the_notebook_stores(key, capsys):
    exercises.check(key, SOLUTIONS[key])
    printed = capsys.readouterr().out
    assert printed == _stored_lines()[key] + "\n"          # byte for byte: the notebooks' outputs are compared
    exercises.check(key, SOLUTIONS[key], hidden=True)
    assert capsys.readouterr().out == ""                    # nothing tells what the hidden inputs are


# --- the usual mistakes ----------------------------------------------------------------------------

MISTAKES = [(key, message, wrong) for key in KEYS for message, wrong in exercises.EXERCISES[key].mistakes]
IDS = [f"{k}: {m[:40]}" for k, m, _ in MISTAKES]


@pytest.mark.parametrize("key, message, wrong", MISTAKES, ids=IDS)
def test_every_wrong_version_differs_from_the_reference_on_a_visible_input(key, message, wrong):
    ex = exercises.EXERCISES[key]
    differs = []
    for case in ex.cases:
        expected = judge._run(ex, ex.reference, case)[0]
        try:
            theirs = judge._run(ex, wrong, case)[0]
        except Exception:                                   # noqa: BLE001 - fails here: not this input
            continue
        differs.append(not judge._same_parts(theirs, expected, ex.exact))
    assert any(differs), f"{key}: the wrong version '{message[:50]}' agrees with the reference on every input"


@pytest.mark.parametrize("key, message, wrong", MISTAKES, ids=IDS)
def test_every_usual_mistake_is_named_by_the_check(key, message, wrong):
    """A student's function with the mistake (labkit's own wrong version, observed as the grader's sandbox
    observes a student's code: the self-check itself refuses labkit's wrong versions) gets its message."""
    obs = exercises.decode(exercises.encode(exercises.observe(key, wrong)))
    with pytest.raises(exercises.Mistake) as info:
        exercises.judge(key, obs)
    assert f"{key} {exercises.EXERCISES[key].name} {message} (input: " in str(info.value)


@pytest.mark.parametrize("key", KEYS)
def test_the_self_check_refuses_labkits_wrong_versions_and_their_pieces(key):
    """labkit's wrong versions (some all but right: `_soft` is soft thresholding) are refused, like the
    references: calling one, or the exercise's own wrong version, fails the self-check."""
    ex = exercises.EXERCISES[key]
    for _, wrong in ex.mistakes[:2]:
        with pytest.raises(exercises.Mistake, match="is not available while grading"):
            exercises.check(key, wrong)
    soft = lambda *args: exercises._soft(np.array([1.0, -2.0]), 0.5)
    with pytest.raises(exercises.Mistake, match=re.escape(f"labkit's _soft is not available while grading {key}")):
        exercises.check(key, soft)


def test_the_messages_say_the_fix_in_words_not_code():
    code = re.compile(r"\b(np|torch|numpy)\.|\.apply\b|detach\(|argsort|kind=|StraightThrough|\w\(\w+\)\.")
    for key, message, _ in MISTAKES:
        assert not code.search(message), f"{key}: {message}"


def test_the_issues_mistakes_are_named():
    named = {(key, message) for key, message, _ in MISTAKES}
    for key, start in [("lab5 (b)", "thresholds every entry on its own"), ("lab5 (b)", "multiplies t by the square root"),
                       ("lab5 (c)", "exits only above tau (>)"), ("lab5 (c)", "takes the last confident exit")]:
        assert any(k == key and m.startswith(start) for k, m in named), (key, start)
    wanted = {"lab1 (e)": "has the wrong sign", "lab1 (f)": "misses the lr lam sign(v) term",
              "lab2 (b)": "takes the wrong order statistic (off by one)",
              "lab2 (d)": "prunes nothing at the first step: (e - 1) / (steps - 1)",
              "lab5 (b)": "divides by a zero norm", "lab5 (c)": "does not fall back to the final classifier"}
    for key, start in wanted.items():
        assert any(k == key and m.startswith(start) for k, m in named), (key, start)


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("kth", [lambda a, q: int(q * a.numel()), lambda a, q: max(1, int(q * a.numel()))],
                         ids=["int(q n)", "max(1, int(q n))"])
def test_an_off_by_one_quantile_is_caught_and_named(kth, hidden):
    def keep_mask(w, q):
        a = w.detach().abs().double()
        return a > torch.kthvalue(a.flatten(), kth(a, q)).values
    with pytest.raises(exercises.Mistake, match=r"off by one"):
        exercises.check("lab2 (b)", keep_mask, hidden=hidden)


def test_ties_kept_and_an_off_by_one_threshold_are_told_apart():
    # on the ties input both keep the three 0.1s; at q = 0 only ">=" keeps everything
    with pytest.raises(exercises.Mistake, match="keeps the weights equal to the threshold"):
        exercises.check("lab2 (b)", lambda w, q: w.abs().double() >= torch.quantile(w.abs().double().flatten(), q))


@pytest.mark.parametrize("key", KEYS)
def test_a_blank_exercise_fails_as_not_written(key):
    def blank(*args):
        raise NotImplementedError()
    with pytest.raises(exercises.Mistake, match="not written yet"):
        exercises.check(key, blank)


# --- what a message shows --------------------------------------------------------------------------

def test_an_unknown_mistake_shows_the_entries_that_differ_not_the_first_ones():
    def keep_mask(w, q):                                    # right but for one entry far down the list
        keep = _keep_mask(w, q)
        if w.numel() == 200:
            keep[150] = ~keep[150]
        return keep
    with pytest.raises(exercises.Mistake) as info:
        exercises.check("lab2 (b)", keep_mask)
    text = str(info.value)
    assert "differs from labkit's reference on 200 random weights, q = 0.5: the output differs at 1 of 200 " \
           "entries ([150] " in text
    expected = bool(_keep_mask(exercises.EXERCISES["lab2 (b)"].cases[1].args[0], 0.5)[150])
    assert f"[150] {not expected} instead of {expected})" in text


def test_a_wrong_gradient_is_labelled_as_the_gradient():
    def ste(w, bits):                                       # right values, gradient doubled at entry 7
        out = _ste(w, bits)
        if bits is None:
            return out
        scale = torch.ones_like(w)
        scale.view(-1)[7] = 2.0
        return out.detach() + (w * scale - (w * scale).detach())
    with pytest.raises(exercises.Mistake) as info:
        exercises.check("lab3 (a)", ste)
    assert re.search(r"on 60 weights, 2 bits: the output agrees; the gradient differs at 1 of 60 entries "
                     r"\(\[7\] -?[\d.]+ instead of -?[\d.]+\)$", str(info.value)), str(info.value)


def test_a_wrong_shape_and_a_wrong_number_are_told():
    with pytest.raises(exercises.Mistake, match=r"the output has shape \(5,\), the reference's \(6,\)"):
        exercises.check("lab1 (e)", lambda v, t: _soft_threshold(v, t)[:5] if len(v) == 6 else _soft_threshold(v, t))
    with pytest.raises(exercises.Mistake, match=r"the output is 0.3, expected 0.25"):
        exercises.check("lab2 (c) sparsity", lambda ws: 0.3)


def test_a_result_that_is_not_numbers_is_told():
    with pytest.raises(exercises.Mistake, match=r"lab1 \(e\) soft_threshold returned a str, which is not a number"):
        exercises.check("lab1 (e)", lambda v, t: "soft")
    exercises.check("lab1 (e)", lambda v, t: list(_soft_threshold(v, t)))   # a list of numbers is an array
    with pytest.raises(exercises.Mistake, match=r"returned a torch.bfloat16 tensor, which numpy cannot hold"):
        exercises.check("lab3 (f)", lambda w, bits: _symmetric(w, bits).bfloat16())


def test_an_error_in_the_student_code_is_reported_with_the_input():
    with pytest.raises(exercises.Mistake, match=r"raised ZeroDivisionError: division by zero \(input: "):
        exercises.check("lab2 (d)", lambda e, steps, target: 1 / 0)


# --- inputs changed in place -----------------------------------------------------------------------

def test_a_function_that_changes_its_input_is_told_so():
    def in_place(v, t):
        v = np.asarray(v)
        v -= np.clip(v, -t, t)
        return v
    with pytest.raises(exercises.Mistake, match="changed its input v in place"):
        exercises.check("lab1 (e)", in_place)


def test_a_quantizer_that_changes_the_weight_in_place_is_told_so():
    def ste(w, bits):                                       # the right result, and w changed behind autograd
        out = _ste(w, bits)
        w.detach().mul_(0.5)
        return out
    with pytest.raises(exercises.Mistake, match=r"lab3 \(a\) ste_quantize changed its input w in place"):
        exercises.check("lab3 (a)", ste)

    def masked(w, bits, mask):
        out = _masked(w, bits, mask.clone())
        mask[0] = ~mask[0]
        return out
    with pytest.raises(exercises.Mistake, match="changed its input mask in place"):
        exercises.check("lab3 (d)", masked)


def test_a_changed_layer_in_a_list_is_told():
    def sparsity(weights):
        weights[0].zero_()
        return SOLUTIONS["lab2 (c) sparsity"](weights)
    with pytest.raises(exercises.Mistake, match="changed its input weights in place"):
        exercises.check("lab2 (c) sparsity", sparsity)


# --- labkit's reference under any name ------------------------------------------------------------

from labkit.prune import keep_mask as km            # noqa: E402 - an alias, imported as a student would


def _closure():
    reference = prune.keep_mask
    return lambda w, q: reference(w, q)


def _copy_made_before():
    f = prune.keep_mask
    return types.FunctionType(f.__code__, f.__globals__, "mine")


WRAPPERS = {
    "the reference itself": ("lab2 (b)", prune.keep_mask, "keep_mask"),
    "a wrapper": ("lab2 (b)", lambda w, q: prune.keep_mask(w, q), "keep_mask"),
    "an alias": ("lab2 (b)", lambda w, q: km(w, q), "keep_mask"),
    "a closure": ("lab2 (b)", _closure(), "keep_mask"),
    "what it is built from": ("lab2 (b)", lambda w, q: w.abs() > prune.magnitude_threshold(w, q), "magnitude_threshold"),
    "a copy of its code made before": ("lab2 (b)", _copy_made_before(), "keep_mask"),
    "lab1": ("lab1 (e)", lambda v, t: sparse_linear.soft_threshold(v, t), "soft_threshold"),
    "lab1 (f) built from (e)": ("lab1 (f)", lambda W, g, lr, lam, k: _trimmed_with_labkit(W, g, lr, lam, k), "soft_threshold"),
    "quantize for ste_quantize": ("lab3 (a)", lambda w, bits: quant.quantize(w, bits), "quantize"),
    "a class's method": ("lab2 (c) mask", lambda w, m: prune.Mask(m)(w), "Mask"),
    "the STE function": ("lab3 (d)", lambda w, b, m: quant.QuantizeSTE.apply(w, b, "minmax", m), "QuantizeSTE"),
}


def _trimmed_with_labkit(W, g, lr, lam, k):
    v = W - lr * g
    small = np.argsort(np.abs(v), kind="stable")[: v.size - k]
    v[small] = sparse_linear.soft_threshold(v[small], lr * lam)
    return v


@pytest.mark.parametrize("how", WRAPPERS)
def test_the_reference_under_any_name_fails_with_the_graders_message(how):
    key, fn, name = WRAPPERS[how]
    def profiler(frame, event, arg):
        pass
    tracer = sys.gettrace()
    sys.setprofile(profiler)
    try:
        with pytest.raises(exercises.Mistake) as info:
            exercises.check(key, fn)
        assert sys.getprofile() is profiler and sys.gettrace() is tracer      # the hooks as they were
    finally:
        sys.setprofile(None)
    assert str(info.value) == exercises.UNAVAILABLE.format(name=name, key=key)
    exercises.check(key, SOLUTIONS[key])                    # restored: the reference runs again ...
    assert prune.keep_mask(torch.tensor([1.0, 2.0]), 0.5).tolist() == [False, True]   # ... for labkit too


def test_a_refusal_caught_by_the_student_still_fails():
    copy_ = _copy_made_before()
    def keep_mask(w, q):
        try:
            return copy_(w, q)
        except RuntimeError:
            return torch.ones_like(w, dtype=torch.bool)
    with pytest.raises(exercises.Mistake, match=re.escape(exercises.UNAVAILABLE.format(name="keep_mask", key="lab2 (b)"))):
        exercises.check("lab2 (b)", keep_mask)


def test_a_call_from_another_thread_is_refused_too():
    seen = []                                               # a thread has no profile hook: the code is swapped
    def keep_mask(w, q):
        def run():
            try:
                seen.append(prune.keep_mask(w, q))
            except RuntimeError as e:
                seen.append(str(e))
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        return seen[-1]
    with pytest.raises(exercises.Mistake):
        exercises.check("lab2 (b)", keep_mask)
    assert seen[0] == exercises.UNAVAILABLE.format(name="keep_mask", key="lab2 (b)")


def test_switching_the_watch_off_is_told():
    copy_ = _copy_made_before()
    def keep_mask(w, q):
        sys.setprofile(None)
        return copy_(w, q)
    with pytest.raises(exercises.Mistake, match="switched off the check's watch"):
        exercises.check("lab2 (b)", keep_mask)
    assert sys.getprofile() is None


def test_other_exercises_references_stay_available():
    # Lab 3 (d) may use labkit's apply_mask: only its own quantizer is refused
    exercises.check("lab3 (d)", lambda w, b, m: prune.apply_mask(_masked(w, b, m), m))


@pytest.mark.parametrize("key", KEYS)
def test_forbidden_lists_the_reference_and_names_that_exist(key):
    table = exercises.forbidden(key)
    ref = exercises.EXERCISES[key].reference
    assert ref.__name__ in table[ref.__module__]
    for module, names in table.items():
        assert module.startswith("labkit.") and isinstance(names, tuple)
        mod = importlib.import_module(module)
        for name in names:
            assert judge._functions(getattr(mod, name)), f"{module}.{name} runs no Python code to refuse"


def test_the_quantizers_refuse_the_shared_machinery():
    assert {"ste_quantize", "QuantizeSTE", "quantize", "_encode"} <= set(exercises.forbidden("lab3 (a)")["labkit.quant"])
    assert {"keep_mask", "magnitude_threshold"} <= set(exercises.forbidden("lab2 (b)")["labkit.prune"])


# --- the function given is the one run --------------------------------------------------------------

def test_the_check_calls_the_given_function_not_labkits():
    calls = []
    def spy(w, q):
        calls.append(q)
        return _keep_mask(w, q)
    exercises.check("lab2 (b)", spy)
    assert calls == [c.args[1] for c in exercises.EXERCISES["lab2 (b)"].cases]


def test_bad_arguments():
    with pytest.raises(ValueError, match="no exercise 'lab9 \\(z\\)'"):
        exercises.check("lab9 (z)", print)
    with pytest.raises(exercises.Mistake, match="expected the function keep_mask"):
        exercises.check("lab2 (b)", 3)
    with pytest.raises(ValueError, match="no exercise"):
        exercises.forbidden("lab9 (z)")
