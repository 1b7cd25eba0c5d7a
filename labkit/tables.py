"""Plain-text tables: they read the same in a notebook, a terminal and the book, and nbval compares
them as printed text. Every table of labkit is made by :func:`table`."""
from __future__ import annotations

import re
from typing import Any, Sequence

__all__ = ["table"]

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?%?")


def _numeric(v) -> bool:
    """Numbers, numbers already formatted as text (``'91.64%'``) and blanks align right."""
    if isinstance(v, str):
        return v == "" or _NUMBER.fullmatch(v) is not None
    return isinstance(v, (int, float))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str], *, floatfmt: str = ".4f") -> str:
    """Format rows as an aligned text table; floats use ``floatfmt``, strings align left.

    >>> print(table([["conv1", 0.5]], ["layer", "sparsity"], floatfmt=".1%"))
    layer  sparsity
    -----  --------
    conv1     50.0%
    """
    def fmt(v):
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    for row in cells:
        if len(row) != len(headers):
            raise ValueError(f"table: a row has {len(row)} cells but there are {len(headers)} headers")
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(_numeric(r[i]) for r in rows) for i in range(len(headers))]

    def line(values):
        out = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])
