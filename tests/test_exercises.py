"""labkit.exercises: the self-checks pass labkit's references, name every usual mistake, and call the
function they are given (a blank exercise fails)."""
import numpy as np
import pytest
import torch

from labkit import exercises, prune, quant, sparse_linear

KEYS = exercises.keys()


def test_the_exercises_of_the_assignment():
    assert KEYS == ["lab1 (b)", "lab1 (c)", "lab1 (d)", "lab1 (e)", "lab1 (f)", "lab2 (b)", "lab2 (c) sparsity",
                    "lab2 (c) mask", "lab2 (d)", "lab2 (e)", "lab3 (a)", "lab3 (d)", "lab3 (f)"]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("hidden", [False, True])
def test_the_reference_passes(key, hidden, capsys):
    exercises.check(key, exercises.EXERCISES[key].reference, hidden=hidden)
    line = capsys.readouterr().out
    if hidden:
        assert line == ""                   # nothing tells what the hidden inputs are
    else:
        assert line.startswith(f"{key} {exercises.EXERCISES[key].name}: passed (")


MISTAKES = [(key, message, wrong) for key in KEYS for message, wrong in exercises.EXERCISES[key].mistakes]


@pytest.mark.parametrize("key, message, wrong", MISTAKES, ids=[f"{k}: {m[:40]}" for k, m, _ in MISTAKES])
def test_every_usual_mistake_is_named(key, message, wrong):
    with pytest.raises(exercises.Mistake) as info:
        exercises.check(key, wrong)
    assert message in str(info.value)


@pytest.mark.parametrize("key", KEYS)
def test_a_blank_exercise_fails_as_not_written(key):
    def blank(*args):
        raise NotImplementedError()
    with pytest.raises(exercises.Mistake, match="not written yet"):
        exercises.check(key, blank)


def test_an_unknown_mistake_says_where_it_differs():
    with pytest.raises(exercises.Mistake, match=r"differs from labkit's reference on .*expected"):
        exercises.check("lab1 (e)", lambda v, t: sparse_linear.soft_threshold(v, t) + 0.01)


def test_a_function_that_changes_its_input_is_told_so():
    def in_place(v, t):
        v = np.asarray(v)
        v -= np.clip(v, -t, t)
        return v
    with pytest.raises(exercises.Mistake, match="changed its input in place"):
        exercises.check("lab1 (e)", in_place)


def test_an_error_in_the_student_code_is_reported_with_the_input():
    with pytest.raises(exercises.Mistake, match=r"raised ZeroDivisionError: division by zero \(input: "):
        exercises.check("lab2 (d)", lambda e, steps, target: 1 / 0)


def test_the_check_calls_the_given_function_not_labkits():
    calls = []
    def spy(w, q):
        calls.append(q)
        return prune.keep_mask(w, q)
    exercises.check("lab2 (b)", spy)
    assert calls == [c.args[1] for c in exercises.EXERCISES["lab2 (b)"].cases]


def test_correct_student_versions_written_differently_pass():
    # the solutions the notebooks carry are written without labkit: they pass
    def keep_mask(w, q):
        a = w.detach().abs().double()
        return a > torch.quantile(a.flatten(), q)
    def ste(w, bits):
        n, lo, hi = 2 ** bits - 1, w.min(), w.max()
        if hi == lo:
            return w.clone()
        return w + (torch.round((w - lo) / (hi - lo) * n) / n * (hi - lo) + lo - w).detach()
    exercises.check("lab2 (b)", keep_mask, hidden=True)
    exercises.check("lab3 (a)", ste, hidden=True)
    exercises.check("lab1 (c)", lambda v, k: np.where(np.isin(np.arange(len(v)), np.argsort(-np.abs(v), kind="stable")[:k]), v, 0.0))


def test_bad_arguments():
    with pytest.raises(ValueError, match="no exercise 'lab9 \\(z\\)'"):
        exercises.check("lab9 (z)", print)
    with pytest.raises(exercises.Mistake, match="expected the function keep_mask"):
        exercises.check("lab2 (b)", 3)
