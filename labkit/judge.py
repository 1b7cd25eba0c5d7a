"""The judge of the self-checks and of the grader: an exercise's check in two halves that can run in
two processes, the student's code on one side only.

* `observe` (untrusted) runs the student's function on the exercise's inputs and returns plain data
  only, numpy arrays of numbers, booleans or text: per input the output (and the gradient), which
  arguments were changed in place, or the type and message of the exception it raised. It never
  calls labkit's reference. `encode` and `decode` carry it between processes as ``.npz`` bytes,
  never pickled; `decode` refuses anything but the entries `observe` writes.
* `judge` (trusted) runs labkit's reference, and the wrong versions that name the usual mistakes,
  on the same inputs, built here (never taken from the observation), and compares. It reads only
  arrays from the observation, so nothing the student's code did in its own process can run here.

`check` does both in one process, and refuses, while the student's function runs, the exercise's
reference and what it is built from (``Exercise.forbidden``), whatever name they are called by: each
raises ``RuntimeError(UNAVAILABLE)``, the message the grader's sandbox gives. A function that is or
calls the reference fails the self-check as it fails the grade.

How a mistake is named: each exercise lists wrong versions of its function, one per usual mistake.
At the first input where the student's result differs from the reference, the wrong version that
gives exactly the student's result there (and, when several do, the one that also agrees with the
student's results on the other inputs) names the mistake; when none does, the message says what
differs (the output, the gradient) and shows the entries that differ. A blank exercise (one that
raises ``NotImplementedError``) fails as not written.

The exercises themselves (their inputs, references and wrong versions) are in `labkit.exercises`,
which calls these functions by an exercise's key.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import io
import re
import sys
import zipfile
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

__all__ = ["Mistake", "Case", "Exercise", "UNAVAILABLE", "check", "decode", "encode", "judge", "observe"]

UNAVAILABLE = "labkit's {name} is not available while grading {key}"

MAX_TEXT = 400                   # characters kept of an exception's message or of a description
MAX_VALUES = 100_000             # entries of one array of an observation (the largest case has 288)
MAX_BYTES = 16 * 2 ** 20         # an encoded observation
SHOWN = 6                        # differing entries a message shows
PARTS = ("output", "gradient")
_FIELDS = PARTS + ("changed", "raised", "returned")
_ENTRY = re.compile(r"(key|hidden|cases|(0|[1-9][0-9]{0,2})/(" + "|".join(_FIELDS) + "))")


class Mistake(AssertionError):
    """A self-check failed; the message names the mistake (an AssertionError, so a grader scores it 0)."""


@dataclass(frozen=True)
class Case:
    """One input of a check: the arguments and what they test, in words."""
    args: tuple
    what: str


@dataclass(frozen=True)
class Exercise:
    """One exercise: the student's function's ``name``, labkit's ``reference``, the visible and hidden
    ``cases``, the usual ``mistakes`` as (message, wrong version), and ``run``, which calls a function on
    a case's arguments and returns what is compared: one value, or (output, gradient) when ``parts``
    names both. ``forbidden``: {labkit module: names} of the reference and what it is built from."""
    key: str
    name: str
    reference: Callable
    cases: tuple[Case, ...]
    hidden: tuple[Case, ...]
    mistakes: tuple[tuple[str, Callable], ...]
    run: Callable = None
    exact: bool = False
    parts: tuple[str, ...] = ("output",)
    forbidden: dict = field(default_factory=dict)


# --- the untrusted side: running the student's function ---------------------------------------------

class _NotPlain(Exception):
    """A student's result that is not an array of numbers; the argument says what it is."""


def _text(x) -> np.ndarray:
    try:
        s = str(x)
    except Exception:                                        # noqa: BLE001 - a student's __str__
        s = "(a message that could not be read)"
    return np.array(s[:MAX_TEXT])


def _plain(x) -> np.ndarray:
    """A student's result as a numpy array of numbers or booleans (a copy), or _NotPlain."""
    what = type(x).__name__
    try:
        if isinstance(x, torch.Tensor):
            a = x.detach().cpu().resolve_conj().resolve_neg().numpy()
        else:
            a = np.asarray(x)
    except Exception:                                        # noqa: BLE001 - what it was is the message
        if isinstance(x, torch.Tensor):
            raise _NotPlain(f"a {x.dtype} tensor, which numpy cannot hold; return float32 or float64") from None
        raise _NotPlain(f"a {what}, which is not a number or an array of numbers") from None
    if a.dtype.kind not in "biuf" or a.dtype.itemsize > 8:
        if isinstance(x, (np.ndarray, torch.Tensor)):
            raise _NotPlain(f"a {what} of dtype {a.dtype}, not of real numbers or booleans")
        raise _NotPlain(f"a {what}, which is not a number or an array of numbers")
    if a.size > MAX_VALUES:
        raise _NotPlain(f"a {what} of {a.size} values, more than a check reads ({MAX_VALUES})")
    return np.array(a, copy=True)


def _parts(ex: Exercise, out) -> tuple[np.ndarray, ...]:
    if len(ex.parts) == 1:
        return (_plain(out),)
    return tuple(_plain(x) for x in out)


def _call(fn, *args):
    return fn(*args)


def _run(ex: Exercise, fn, case: Case):
    """(what fn gives on a copy of the case's arguments, as arrays; that copy, after the call)."""
    args = copy.deepcopy(case.args)
    return _parts(ex, (ex.run or _call)(fn, *args)), args


def _unchanged(before, after) -> bool:
    if isinstance(before, torch.Tensor):
        return (isinstance(after, torch.Tensor) and before.dtype == after.dtype
                and torch.equal(before, after.detach()))
    if isinstance(before, np.ndarray):
        return isinstance(after, np.ndarray) and before.dtype == after.dtype and np.array_equal(before, after)
    if isinstance(before, list):
        return (isinstance(after, list) and len(before) == len(after)
                and all(_unchanged(x, y) for x, y in zip(before, after)))
    return True


class _Watch:
    """A profile hook (sys.setprofile) that refuses the forbidden code objects: it records the first
    one called and raises. It sees the functions' own code, also when called through a copy of the
    function made before the check; the swapped code (see `_refusing`) catches every other name."""

    def __init__(self, codes: dict[int, str], key: str):
        self.codes, self.key, self.seen = codes, key, None

    def __call__(self, frame, event, arg):
        if event == "call" and id(frame.f_code) in self.codes:
            name = self.codes[id(frame.f_code)]
            self.seen = self.seen or name
            raise RuntimeError(UNAVAILABLE.format(name=name, key=self.key))


def _observe_case(ex: Exercise, fn, case: Case, i: int, watch: _Watch | None) -> dict[str, np.ndarray]:
    at = f"{i}/"
    previous = sys.getprofile()
    if watch is not None:
        watch.seen = None
        sys.setprofile(watch)
    try:
        parts, args = _run(ex, fn, case)
        record = {at + "changed": np.array([not _unchanged(x, y) for x, y in zip(case.args, args)], dtype=bool)}
        record.update({at + name: a for name, a in zip(ex.parts, parts)})
    except _NotPlain as e:
        record = {at + "returned": _text(e.args[0])}
    except (Exception, SystemExit) as e:                     # noqa: BLE001 - the student's error is the record
        record = {at + "raised": np.array([str(_text(type(e).__name__)), str(_text(e))])}
    finally:
        if watch is not None:
            switched_off = sys.getprofile() is not watch and watch.seen is None
            sys.setprofile(previous)
    if watch is not None and watch.seen is not None:         # a refused call, whatever fn did with the error
        record = {at + "raised": np.array(["RuntimeError", UNAVAILABLE.format(name=watch.seen, key=ex.key)])}
    elif watch is not None and switched_off:
        record = {at + "raised": np.array(["RuntimeError", "it switched off the check's watch on labkit's "
                                           "functions (sys.setprofile) while it ran"])}
    return record


def _observe(ex: Exercise, fn, hidden: bool, watch: _Watch | None) -> dict[str, np.ndarray]:
    cases = ex.hidden if hidden else ex.cases
    obs = {"key": np.array(ex.key), "hidden": np.array(bool(hidden)), "cases": np.array(len(cases), dtype=np.int64)}
    for i, case in enumerate(cases):
        obs.update(_observe_case(ex, fn, case, i, watch))
    return obs


def observe(ex: Exercise, fn, *, hidden: bool = False) -> dict[str, np.ndarray]:
    """Run the student's ``fn`` on the cases of exercise ``ex`` (the hidden ones with ``hidden``) and
    return plain data only, {entry: numpy array}:

    ``key`` (text), ``hidden`` (bool), ``cases`` (int): which check this is; then per case ``i``, one of
    ``i/raised`` [type name, message] (text, the message cut to MAX_TEXT characters), when fn raised;
    ``i/returned`` (text), when it returned something that is not an array of numbers (what it was);
    or ``i/changed`` (bool, one per argument: changed in place) with ``i/output`` (and ``i/gradient``
    for the exercises that compare it), numeric or bool arrays of at most MAX_VALUES entries.

    Calls nothing of labkit's but the case's run; never raises for the student's errors."""
    return _observe(ex, fn, hidden, None)


# --- between the two: bytes without pickle ---------------------------------------------------------

def encode(obs: dict) -> bytes:
    """An observation as ``.npz`` bytes (np.savez)."""
    buffer = io.BytesIO()
    np.savez(buffer, **obs)
    return buffer.getvalue()


def _unreadable(why: str) -> Mistake:
    return Mistake(f"the result could not be read: {why}")


def _dtype_ok(dtype: np.dtype) -> bool:
    if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None:
        return False
    return (dtype.kind in "biuf" and dtype.itemsize <= 8) or (dtype.kind == "U" and dtype.itemsize <= 4 * MAX_TEXT)


def _npy(raw: bytes, name: str) -> np.ndarray:
    """One ``.npy`` member read by hand: header checked before any allocation, data by frombuffer."""
    f = io.BytesIO(raw)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise _unreadable(f"{name}: .npy version {version}")
    if not _dtype_ok(dtype):
        raise _unreadable(f"{name}: dtype {dtype}")
    if len(shape) > 8 or any(not isinstance(n, int) or n < 0 for n in shape):
        raise _unreadable(f"{name}: shape {shape}")
    count = 1
    for n in shape:
        count *= n
    if count > MAX_VALUES:
        raise _unreadable(f"{name}: {count} values, more than {MAX_VALUES}")
    data = raw[f.tell():]
    if len(data) != count * dtype.itemsize:
        raise _unreadable(f"{name}: {len(data)} bytes of data for shape {shape} and dtype {dtype}")
    a = np.frombuffer(data, dtype=dtype, count=count)
    return a.reshape(shape, order="F" if fortran else "C").copy()


def decode(data: bytes) -> dict[str, np.ndarray]:
    """The observation `encode` wrote, checked: only the entries `observe` writes, numeric, bool or
    text dtypes, bounded sizes; no pickle is ever read. Anything else raises `Mistake`."""
    if not isinstance(data, (bytes, bytearray)):
        raise _unreadable(f"got {type(data).__name__}, not bytes")
    if len(data) > MAX_BYTES:
        raise _unreadable(f"{len(data)} bytes, more than {MAX_BYTES}")
    try:
        with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
            infos = zf.infolist()
            names = [info.filename for info in infos]
            if len(set(names)) != len(names):
                raise _unreadable("an entry appears twice")
            total, obs = 0, {}
            for info in infos:
                name = info.filename[:-4] if info.filename.endswith(".npy") else None
                if name is None or not _ENTRY.fullmatch(name):
                    raise _unreadable(f"unknown entry {info.filename[:60]!r}")
                total += info.file_size
                if info.file_size > MAX_BYTES or total > MAX_BYTES:
                    raise _unreadable(f"entry {name!r} too large ({info.file_size} bytes)")
                obs[name] = _npy(zf.read(info), name)
    except Mistake:
        raise
    except Exception as e:                                   # noqa: BLE001 - malformed bytes of any kind
        raise _unreadable(f"{type(e).__name__}: {str(e)[:120]}") from None
    return obs


# --- the trusted side: judging an observation --------------------------------------------------------

def _records(ex: Exercise, obs, cases, hidden: bool) -> list[dict[str, np.ndarray]]:
    """The observation's per-case records, checked against what `observe` writes for this check."""
    def unread(why):
        return Mistake(f"{ex.key} {ex.name}: the result could not be read: {why}")
    if not isinstance(obs, dict):
        raise unread(f"got {type(obs).__name__}, not a dict of arrays")
    for name, a in obs.items():
        if not isinstance(name, str) or type(a) is not np.ndarray:
            raise unread(f"entry {str(name)[:40]!r} is not a numpy array")
        if not _dtype_ok(a.dtype) or a.size > MAX_VALUES or a.ndim > 8:
            raise unread(f"entry {name[:40]!r} has dtype {a.dtype} and {a.size} values")
    head = {}
    for name, kind in (("key", "U"), ("hidden", "b"), ("cases", "iu")):
        a = obs.get(name)
        if a is None or a.shape != () or a.dtype.kind not in kind:
            raise unread(f"no {name!r} of the right kind")
        head[name] = a[()]
    if str(head["key"]) != ex.key:
        raise Mistake(f"{ex.key} {ex.name}: the result is that of {str(head['key'])[:40]!r}, not of {ex.key!r}")
    if bool(head["hidden"]) != hidden:
        raise Mistake(f"{ex.key} {ex.name}: the result is of the {'hidden' if head['hidden'] else 'visible'} "
                      f"inputs, not of the {'hidden' if hidden else 'visible'} ones")
    if int(head["cases"]) != len(cases):
        raise Mistake(f"{ex.key} {ex.name}: the result has {int(head['cases'])} inputs, the check {len(cases)}")
    records, seen = [], {"key", "hidden", "cases"}
    for i, case in enumerate(cases):
        rec = {f: obs[f"{i}/{f}"] for f in _FIELDS if f"{i}/{f}" in obs}
        seen.update(f"{i}/{f}" for f in rec)
        if set(rec) == {"raised"}:
            ok = rec["raised"].dtype.kind == "U" and rec["raised"].shape == (2,)
        elif set(rec) == {"returned"}:
            ok = rec["returned"].dtype.kind == "U" and rec["returned"].shape == ()
        elif set(rec) == {"changed", *ex.parts}:
            ok = (rec["changed"].dtype == bool and rec["changed"].shape == (len(case.args),)
                  and all(rec[p].dtype.kind in "biuf" for p in ex.parts))
        else:
            raise unread(f"input {i} has the entries {sorted(rec)}")
        if not ok:
            raise unread(f"input {i}'s entries have the wrong dtype or shape")
        records.append(rec)
    extra = sorted(set(obs) - seen)
    if extra:
        raise unread(f"unexpected entries {extra[:4]}")
    return records


def _agree(a: np.ndarray, b: np.ndarray, exact: bool) -> np.ndarray:
    """Which entries of a agree with b (same shape): equal when exact or bool, else close
    (rtol 1e-5, atol 1e-6 times the largest finite |b|, at least 1), NaN where NaN."""
    if exact or a.dtype == bool or b.dtype == bool:
        return np.asarray(a == b)
    a, b = a.astype(np.float64), b.astype(np.float64)
    finite = np.abs(b[np.isfinite(b)])
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    return np.isclose(a, b, rtol=1e-5, atol=1e-6 * scale, equal_nan=True)


def _same(a: np.ndarray, b: np.ndarray, exact: bool) -> bool:
    if a.shape != b.shape:
        return False
    if (exact or a.dtype == bool or b.dtype == bool) and a.dtype != b.dtype:
        return False
    return bool(_agree(a, b, exact).all())


def _same_parts(got, expected, exact: bool) -> bool:
    return len(got) == len(expected) and all(_same(a, b, exact) for a, b in zip(got, expected))


def _value(x) -> str:
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{float(x) + 0.0:.6g}"                          # + 0.0: -0.0 reads as 0


def _where(name: str, a: np.ndarray, b: np.ndarray, exact: bool) -> str:
    """What differs between the student's part ``a`` and the reference's ``b``, in words."""
    if a.shape != b.shape:
        return f"the {name} has shape {a.shape}, the reference's {b.shape}"
    if (exact or a.dtype == bool or b.dtype == bool) and a.dtype != b.dtype:
        return f"the {name} has dtype {a.dtype}, the reference's {b.dtype}"
    if a.ndim == 0:
        return f"the {name} is {_value(a[()])}, expected {_value(b[()])}"
    differ = np.argwhere(~_agree(a, b, exact))
    shown = "; ".join(f"[{', '.join(str(int(j)) for j in at)}] {_value(a[tuple(at)])} instead of "
                      f"{_value(b[tuple(at)])}" for at in differ[:SHOWN])
    more = f"; and {len(differ) - SHOWN} more" if len(differ) > SHOWN else ""
    return f"the {name} differs at {len(differ)} of {a.size} entries ({shown}{more})"


def _difference(ex: Exercise, got, expected) -> str:
    said = []
    for name, a, b in zip(ex.parts, got, expected):
        if not _same(a, b, ex.exact):
            said.append(_where(name, a, b, ex.exact))
        elif len(ex.parts) > 1:
            said.append(f"the {name} agrees")
    return "; ".join(said)


def _wrong_parts(ex: Exercise, wrong, case: Case):
    try:
        return _run(ex, wrong, case)[0]
    except Exception:                                        # noqa: BLE001 - this wrong version fails here
        return None


def _named(ex: Exercise, cases, records, i: int, got, expected) -> str | None:
    """The message of the wrong version that gives the student's result at case i (and differs from
    the reference there); of several, the first that also gives the student's results elsewhere."""
    found = []
    for message, wrong in ex.mistakes:
        theirs = _wrong_parts(ex, wrong, cases[i])
        if theirs is not None and not _same_parts(theirs, expected, ex.exact) and _same_parts(got, theirs, ex.exact):
            found.append((message, wrong))
    def everywhere(wrong) -> bool:
        for j, rec in enumerate(records):
            if j == i or "changed" not in rec or rec["changed"].any():
                continue                                     # no result of the student's to compare
            theirs = _wrong_parts(ex, wrong, cases[j])
            if theirs is None or not _same_parts(tuple(rec[p] for p in ex.parts), theirs, ex.exact):
                return False
        return True
    for message, wrong in found:
        if everywhere(wrong):
            return message
    return found[0][0] if found else None


def _raised(ex: Exercise, case: Case, kind: str, message: str) -> Mistake:
    refused = {UNAVAILABLE.format(name=n, key=ex.key) for names in ex.forbidden.values() for n in names}
    refused |= {UNAVAILABLE.format(name=f"{m}.{n}", key=ex.key) for m, names in ex.forbidden.items() for n in names}
    if message in refused:
        return Mistake(message)
    if kind == "NotImplementedError":
        return Mistake(f"{ex.key} {ex.name}: not written yet (it raises NotImplementedError); write it in "
                       f"the exercise cell above and run that cell again")
    return Mistake(f"{ex.key} {ex.name} raised {kind}: {message} (input: {case.what})")


def judge(ex: Exercise, obs: dict, *, hidden: bool = False) -> str:
    """Judge an observation of exercise ``ex`` (from `observe`, through `encode` and `decode`): run
    labkit's reference here on the same cases, compare, raise `Mistake` naming the mistake, or return
    the line that says the check passed (not printed). Reads only plain arrays from ``obs``."""
    cases = ex.hidden if hidden else ex.cases
    records = _records(ex, obs, cases, hidden)
    names = list(inspect.signature(ex.reference).parameters)
    for i, (case, rec) in enumerate(zip(cases, records)):
        if "raised" in rec:
            raise _raised(ex, case, str(rec["raised"][0]), str(rec["raised"][1]))
        if "returned" in rec:
            raise Mistake(f"{ex.key} {ex.name} returned {str(rec['returned'][()])} (input: {case.what})")
        if rec["changed"].any():
            which = ", ".join(names[j] if j < len(names) else f"#{j + 1}" for j in np.flatnonzero(rec["changed"]))
            raise Mistake(f"{ex.key} {ex.name} changed its input {which} in place (input: {case.what}); compute "
                          f"a new tensor or array and return it, leaving the arguments as they were")
        got = tuple(rec[p] for p in ex.parts)
        expected = _run(ex, ex.reference, case)[0]
        if _same_parts(got, expected, ex.exact):
            continue
        message = _named(ex, cases, records, i, got, expected)
        if message is not None:
            raise Mistake(f"{ex.key} {ex.name} {message} (input: {case.what})")
        raise Mistake(f"{ex.key} {ex.name} differs from labkit's reference on {case.what}: "
                      f"{_difference(ex, got, expected)}")
    return f"{ex.key} {ex.name}: passed ({len(cases)} inputs: {'; '.join(c.what for c in cases)})"


# --- in the notebook: both halves, the reference refused ---------------------------------------------

def _functions(obj) -> list:
    """The Python functions an object runs: itself, or a class's own methods."""
    if inspect.isfunction(obj):
        return [obj]
    found = []
    if isinstance(obj, type):
        for v in vars(obj).values():
            if isinstance(v, (staticmethod, classmethod)):
                v = v.__func__
            if isinstance(v, property):
                found += [f for f in (v.fget, v.fset, v.fdel) if inspect.isfunction(f)]
            elif inspect.isfunction(v):
                found.append(v)
    return found


def _refusal(free: int, message: str):
    """Code that raises RuntimeError(message), with ``free`` free variables (a method's __class__
    cell), so that it can replace a function's __code__."""
    names = [f"_f{j}" for j in range(free)]
    src = ("def _outer():\n" + "".join(f"    {n} = None\n" for n in names)
           + "    def _refused(*args, **kwargs):\n"
           + (f"        ({', '.join(names)},)\n" if names else "")
           + f"        raise RuntimeError({message!r})\n    return _refused\n")
    scope: dict = {}
    exec(compile(src, "<labkit.exercises: refused>", "exec"), scope)   # our own text, no student code
    return scope["_outer"]().__code__


@contextlib.contextmanager
def _refusing(ex: Exercise, also=()):
    """While inside: every forbidden function of ``ex`` (and every method of a forbidden class), and
    the functions ``also`` lists as (name, function), raise RuntimeError(UNAVAILABLE) under any name,
    their code swapped; yields the `_Watch` for the copies made before. Everything restored on the way out."""
    swapped, codes = [], {}
    key = ex.key
    found = [(name, f) for module, names in ex.forbidden.items()
             for name in names for f in _functions(getattr(importlib.import_module(module), name))]
    for name, f in found + [(name, f) for name, f in also if inspect.isfunction(f)]:
        if id(f.__code__) not in codes:
            codes[id(f.__code__)] = name
            swapped.append((f, f.__code__))
    try:
        for f, code in swapped:
            f.__code__ = _refusal(len(code.co_freevars), UNAVAILABLE.format(name=codes[id(code)], key=key))
        yield _Watch(codes, key)
    finally:
        for f, code in swapped:
            f.__code__ = code


def check(ex: Exercise, fn, *, hidden: bool = False, also=()) -> None:
    """Check a student's ``fn`` for the exercise ``ex``: `observe` it with the exercise's reference
    refused (``ex.forbidden``, and the (name, function) pairs of ``also``), then `judge`; print the
    passed line (unless ``hidden``: the grader's further inputs stay unseen), or raise `Mistake`
    naming the mistake."""
    if not callable(fn):
        raise Mistake(f"{ex.key}: expected the function {ex.name}, got {type(fn).__name__}")
    with _refusing(ex, also) as watch:
        obs = _observe(ex, fn, hidden, watch)
    line = judge(ex, decode(encode(obs)), hidden=hidden)   # what the grader's judge reads
    if not hidden:
        print(line)
