"""Reports: what a run was (its header) and plain-text tables.

Tables are plain text so that they read the same in a notebook, a terminal and
the book, and so that nbval can compare them as printed text.
"""
from __future__ import annotations

import datetime as _dt
import platform
import re
import time
from typing import Any, Sequence

_started: float | None = None


def run_header(data=None, device=None) -> str:
    """One paragraph saying what this run is: date, device, versions, profile, dataset size.

    Call it in a notebook's first code cell and print it; :func:`run_footer`
    then reports the time since this call.
    """
    import torch

    from . import profile

    global _started
    _started = time.perf_counter()
    lines = [
        f"Run of {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC, profile '{profile.current().name}'",
        f"device: {_device_name(device)}; torch {torch.__version__}, python {platform.python_version()}",
    ]
    if data is not None:
        lines.append(f"data: CIFAR-10, {len(data.train)} train / {len(data.test)} test images")
    return "\n".join(lines)


def run_footer() -> str:
    """The wall time since :func:`run_header` was called."""
    if _started is None:
        return "run time: unknown (run_header() was not called)"
    seconds = time.perf_counter() - _started
    return f"run time: {seconds / 60:.1f} min ({seconds:.0f} s)"


def _device_name(device) -> str:
    import torch

    if device is None:
        return f"numpy on the CPU ({platform.processor() or platform.machine()})"
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    return device.type


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
