"""Argument checks shared by every module: each returns the value (normalised) or raises a
ValueError that names the argument, what it must be and what it got.

>>> integer("epochs", 3, minimum=0)
3
>>> fraction("q", 1.5)
Traceback (most recent call last):
...
ValueError: q must be a fraction in [0, 1], got 1.5
"""
from __future__ import annotations

import math
from numbers import Integral, Real

__all__ = ["integer", "number", "fraction", "flag", "one_of"]


def integer(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An int (not a bool) in [minimum, maximum]."""
    ok = not isinstance(value, bool) and isinstance(value, Integral)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        bounds = _bounds(minimum, maximum)
        raise ValueError(f"{name} must be an int{bounds}, got {value!r}")
    return int(value)


def number(name: str, value, *, minimum: float | None = None, positive: bool = False) -> float:
    """A finite real number (not a bool), >= minimum, and > 0 with ``positive``. NaN and infinity
    are refused: they pass ``v >= 0`` comparisons the wrong way or poison every later step."""
    ok = not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)
    ok = ok and (minimum is None or value >= minimum) and (not positive or value > 0)
    if not ok:
        bounds = " > 0" if positive else _bounds(minimum, None)
        raise ValueError(f"{name} must be a finite number{bounds}, got {value!r}")
    return float(value)


def fraction(name: str, value, *, closed: bool = True, hint: str = "") -> float:
    """A real number in [0, 1] (``closed=False``: [0, 1))."""
    ok = not isinstance(value, bool) and isinstance(value, Real) and not math.isnan(value)
    ok = ok and 0 <= value and (value <= 1 if closed else value < 1)
    if not ok:
        raise ValueError(f"{name} must be a fraction in [0, {'1]' if closed else '1)'}, got {value!r}{hint}")
    return float(value)


def flag(name: str, value) -> bool:
    """True or False, nothing else (``0``, ``'yes'`` and None are refused)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def one_of(name: str, value, choices) -> object:
    """One of ``choices``."""
    if value not in tuple(choices):
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _bounds(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f" in {minimum}..{maximum}"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""
