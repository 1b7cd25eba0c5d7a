"""labkit.exercises' two halves as the grader uses them: `observe` (the student's process) returns plain
arrays, `encode`/`decode` carry them without pickle, `judge` (the grader's process) decides from them
alone. A forged or malformed observation is a Mistake and nothing in it runs; whatever the student's
code does in its own process cannot change the verdict."""
import builtins
import io
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from labkit import exercises, judge

KEYS = exercises.keys()
REPO = Path(__file__).resolve().parents[1]


def _observed(key, hidden=False):
    ex = exercises.EXERCISES[key]
    return exercises.observe(key, ex.reference, hidden=hidden)    # observe alone may run anything


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("hidden", [False, True])
def test_judge_passes_the_observation_of_a_correct_function(key, hidden):
    ex = exercises.EXERCISES[key]
    obs = exercises.decode(exercises.encode(_observed(key, hidden)))
    line = exercises.judge(key, obs, hidden=hidden)
    cases = ex.hidden if hidden else ex.cases
    assert line == f"{key} {ex.name}: passed ({len(cases)} inputs: {'; '.join(c.what for c in cases)})"


def test_an_observation_holds_plain_arrays_only():
    obs = exercises.observe("lab3 (a)", lambda w, bits: 1 / 0 if bits == 1 else exercises.EXERCISES["lab3 (a)"].reference(w, bits))
    assert all(type(a) is np.ndarray and a.dtype.kind in "biufU" for a in obs.values())
    assert set(obs) >= {"key", "hidden", "cases", "0/output", "0/gradient", "0/changed", "2/raised"}
    assert obs["2/raised"].tolist() == ["ZeroDivisionError", "division by zero"]
    assert obs["0/changed"].tolist() == [False, False]
    assert obs["0/gradient"].shape == (60,) and obs["0/output"].dtype == np.float32
    assert exercises.observe("lab1 (e)", lambda v, t: {"a": 1})["0/returned"].dtype.kind == "U"


def test_observe_records_the_students_errors_and_exits_instead_of_raising():
    obs = exercises.observe("lab2 (d)", lambda e, steps, target: sys.exit(3))
    assert obs["0/raised"].tolist() == ["SystemExit", "3"]
    long = exercises.observe("lab2 (d)", lambda e, steps, target: (_ for _ in ()).throw(ValueError("x" * 10_000)))
    assert len(long["0/raised"][1]) == judge.MAX_TEXT


def test_a_huge_result_is_recorded_not_carried():
    obs = exercises.observe("lab1 (e)", lambda v, t: np.zeros(judge.MAX_VALUES + 1))
    assert "more than a check reads" in str(obs["0/returned"])
    with pytest.raises(exercises.Mistake, match="returned a ndarray of 100001 values"):
        exercises.judge("lab1 (e)", exercises.decode(exercises.encode(obs)))


# --- forged and malformed observations -------------------------------------------------------------

def _good():
    return _observed("lab2 (b)")


def _npz(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, raw in entries.items():
            zf.writestr(name, raw)
    return buffer.getvalue()


def _npy(a: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, a, allow_pickle=True)
    return buffer.getvalue()


class _Evil:
    def __reduce__(self):
        return (exec, ("import builtins; builtins._labkit_pwned = True",))


@pytest.mark.parametrize("forge", [
    "not bytes", "junk", "object array", "pickle instead of npy", "unknown entry", "entry twice",
    "complex dtype", "void dtype", "huge shape", "too many values", "too many bytes", "short data", "compressed bomb",
])
def test_decode_refuses_what_observe_never_writes_and_runs_nothing(forge):
    good = {name + ".npy": _npy(a) for name, a in _good().items()}
    data = {
        "not bytes": lambda: "a string",
        "junk": lambda: b"PK\x03\x04 not a zip",
        "object array": lambda: _npz({**good, "0/output.npy": _npy(np.array([_Evil()], dtype=object))}),
        "pickle instead of npy": lambda: _npz({**good, "0/output.npy": pickle.dumps(_Evil())}),
        "unknown entry": lambda: _npz({**good, "evil.npy": _npy(np.zeros(1))}),
        "entry twice": lambda: _npz_twice(good),
        "complex dtype": lambda: _npz({**good, "0/output.npy": _npy(np.zeros(6, dtype=complex))}),
        "void dtype": lambda: _npz({**good, "0/output.npy": _npy(np.zeros(2, dtype=[("a", "f8")]))}),
        "huge shape": lambda: _npz({**good, "0/output.npy": _npy_header("<f8", (10 ** 12,)) + b"\0" * 64}),
        "too many values": lambda: _npz({**good, "0/output.npy": _npy(np.zeros(judge.MAX_VALUES + 1, dtype=bool))}),
        "too many bytes": lambda: b"\0" * (judge.MAX_BYTES + 1),
        "short data": lambda: _npz({**good, "0/output.npy": _npy_header("<f8", (6,)) + b"\0" * 8}),
        "compressed bomb": lambda: _bomb(),
    }[forge]()
    with pytest.raises(exercises.Mistake, match="the result could not be read"):
        exercises.decode(data)
    assert not hasattr(builtins, "_labkit_pwned")


def _npz_twice(good):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, raw in good.items():
            zf.writestr(name, raw)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zf.writestr("0/output.npy", _npy(np.ones(6, dtype=bool)))
    return buffer.getvalue()


def _npy_header(descr: str, shape) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _bomb():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("0/output.npy", _npy_header("<f8", (judge.MAX_VALUES,)) + b"\0" * (judge.MAX_BYTES + 8))
    return buffer.getvalue()


def _judged(obs, key="lab2 (b)", hidden=False):
    return exercises.judge(key, obs, hidden=hidden)


@pytest.mark.parametrize("forge, message", [
    ("missing entry", "could not be read"),
    ("extra case", "could not be read: unexpected entries"),
    ("changed of the wrong shape", "could not be read"),
    ("changed not bool", "could not be read"),
    ("raised and output", "could not be read"),
    ("output as text", "could not be read"),
    ("another key", "the result is that of 'lab2 (e)', not of 'lab2 (b)'"),
    ("another case count", "the result has 4 inputs, the check 5"),
    ("the hidden inputs", "the result is of the hidden inputs"),
    ("not an array", "could not be read"),
    ("an array subclass", "could not be read"),
    ("a callable", "could not be read"),
    ("not a dict", "could not be read"),
])
def test_judge_refuses_a_forged_observation(forge, message):
    obs = _good()
    calls = []

    class Spy(np.ndarray):
        def __eq__(self, other):
            calls.append("eq")
            return np.ndarray.__eq__(self, other)

        def __array_ufunc__(self, *args, **kwargs):
            calls.append("ufunc")
            return NotImplemented

    def forged():
        if forge == "missing entry":
            del obs["1/changed"]
        elif forge == "extra case":
            obs["5/changed"], obs["5/output"] = obs["0/changed"], obs["0/output"]
        elif forge == "changed of the wrong shape":
            obs["0/changed"] = np.zeros(5, dtype=bool)
        elif forge == "changed not bool":
            obs["0/changed"] = np.zeros(2)
        elif forge == "raised and output":
            obs["0/raised"] = np.array(["ValueError", "x"])
        elif forge == "output as text":
            obs["0/output"] = np.array(["True"] * 6)
        elif forge == "another key":
            obs["key"] = np.array("lab2 (e)")
        elif forge == "another case count":
            obs["cases"] = np.array(4)
        elif forge == "the hidden inputs":
            obs["hidden"] = np.array(True)
        elif forge == "not an array":
            obs["0/output"] = [True] * 6
        elif forge == "an array subclass":
            obs["0/output"] = obs["0/output"].view(Spy)
        elif forge == "a callable":
            obs["0/output"] = lambda *a: calls.append("called")
        elif forge == "not a dict":
            return list(obs.items())
        return obs
    with pytest.raises(exercises.Mistake, match=re.escape(message)):
        _judged(forged())
    assert calls == []                                      # nothing of the observation's was called


def test_a_recorded_refusal_is_the_graders_message_verbatim():
    obs = _good()
    for name in [n for n in obs if n.startswith("0/")]:
        del obs[name]
    refusal = exercises.UNAVAILABLE.format(name="keep_mask", key="lab2 (b)")
    obs["0/raised"] = np.array(["RuntimeError", refusal])
    with pytest.raises(exercises.Mistake) as info:
        _judged(obs)
    assert str(info.value) == refusal


def test_judge_runs_the_reference_itself_not_what_the_observation_says():
    obs = _good()
    obs["0/output"] = ~obs["0/output"]                      # a forged result: the reference's own, negated
    with pytest.raises(exercises.Mistake, match="returns True for the pruned weights"):
        _judged(obs)


# --- the student's process cannot reach the verdict ---------------------------------------------------

_CHILD = r"""
import sys
import numpy as np
import torch
from labkit import exercises, judge

def keep_mask(w, q):
    # patch everything a verdict could use in this process, then return a wrong mask
    np.array_equal = np.allclose = lambda *a, **k: True
    np.isclose = lambda a, b, **k: np.ones(np.shape(a), dtype=bool)
    torch.equal = lambda *a: True
    exercises.judge = judge.judge = lambda *a, **k: "lab2 (b) keep_mask: passed"
    judge._same = judge._same_parts = lambda *a, **k: True
    return torch.ones(w.shape, dtype=torch.bool)

sys.stdout.buffer.write(exercises.encode(exercises.observe("lab2 (b)", keep_mask)))
sys.stdout.flush()
exercises.check("lab2 (b)", keep_mask)        # in its own process the patches win: this passes
"""


def test_patching_numpy_torch_or_labkit_in_the_students_process_changes_no_verdict():
    child = subprocess.run([sys.executable, "-c", _CHILD], cwd=REPO, capture_output=True, timeout=300)
    assert child.returncode == 0, child.stderr.decode()[-2000:]
    data = child.stdout[: child.stdout.rindex(b"lab2 (b) keep_mask: passed")]
    with pytest.raises(exercises.Mistake, match="prunes nothing at q = 0|keeps the weights equal|differs"):
        exercises.judge("lab2 (b)", exercises.decode(data))
    assert np.array_equal(np.zeros(2), np.ones(2)) is False        # this process's numpy is its own
