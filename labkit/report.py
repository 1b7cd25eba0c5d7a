"""Reports: what a run was (its header) and plain-text tables.

Tables are plain text so that they read the same in a notebook, a terminal and
the book, and so that nbval can compare them as printed text.
"""
from __future__ import annotations

import datetime as _dt
import math
import platform
import re
import time
from typing import Any, Sequence

_started: float | None = None


def run_header(data=None, device=None, config=None) -> str:
    """One paragraph saying what this run is: date, device, versions, profile, dataset size and,
    with a :class:`labkit.train.TrainConfig`, the precision and memory format training runs in.

    Call it in a notebook's first code cell and print it; :func:`run_footer`
    then reports the time since this call.
    """
    import torch

    from . import profile

    global _started
    _started = time.perf_counter()
    lines = [
        f"Run of {_now()}, profile '{profile.current().name}'",
        f"device: {_device_name(device)}; torch {torch.__version__}, python {platform.python_version()}",
    ]
    if data is not None:
        lines.append(f"data: CIFAR-10, {len(data.train)} train / {len(data.test)} test images")
    if config is not None:
        from .train import describe

        lines.append(f"training: {describe(config, device or 'cpu')} (precision={config.precision!r}); "
                     f"evaluation: fp32; validation: {config.val_fraction:.0%} of the training images")
    return "\n".join(lines)


def run_footer() -> str:
    """The wall time since :func:`run_header` was called."""
    seconds = _elapsed()
    if seconds is None:
        return "run time: unknown (run_header() was not called)"
    return f"run time: {seconds / 60:.1f} min ({seconds:.0f} s)"


def _now() -> str:
    return f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC"


def _elapsed() -> float | None:
    return None if _started is None else time.perf_counter() - _started


# --- noise -----------------------------------------------------------------------------------------

def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` independent images: sqrt(p (1 - p) / n)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (the number of test images), got {n!r}")
    if not 0 <= p <= 1:
        raise ValueError(f"p must be an accuracy in [0, 1], got {p!r}")
    return math.sqrt(p * (1 - p) / n)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator; NaN for one value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std: no values")
    mean = sum(values) / len(values)
    if len(values) == 1:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def pm(values: Sequence[float], *, percent: bool = True) -> str:
    """``'84.21 ± 0.35 %'``: the mean ± sample standard deviation of accuracies (fractions)."""
    mean, std = mean_std(values)
    scale, unit = (100, " %") if percent else (1, "")
    if math.isnan(std):
        return f"{mean * scale:.2f}{unit}"
    return f"{mean * scale:.2f} ± {std * scale:.2f}{unit}"


def difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """mean(a) - mean(b) and its standard error over seeds, sqrt(s_a^2 / n_a + s_b^2 / n_b)
    (sample standard deviations; needs two values or more on each side)."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    if math.isnan(sa) or math.isnan(sb):
        raise ValueError("difference: need two seeds or more on each side to estimate the noise")
    return ma - mb, math.sqrt(sa ** 2 / len(a) + sb ** 2 / len(b))


def verdict(diff: float, se: float) -> str:
    """'beyond the noise' when |diff| exceeds two standard errors, else 'within the noise'."""
    return "beyond the noise (> 2 standard errors)" if abs(diff) > 2 * se else "within the noise (<= 2 standard errors)"


def seeds_table(runs) -> str:
    """One row per method, {label: [History of each seed]}: mean ± std over the seeds of the test
    accuracy at the validation-selected epoch (what we report), of the best test accuracy of any
    epoch (the course's protocol, optimistic) and of the final test accuracy."""
    rows = []
    for label, histories in runs.items():
        histories = list(histories)
        if not histories:
            raise ValueError(f"seeds_table: no run for {label!r}")
        rows.append([label, len(histories), pm([h.best_acc for h in histories]),
                     pm([h.peak_test_acc for h in histories]), pm([h.final_acc for h in histories])])
    return table(rows, ["run", "seeds", "validation-selected", "course protocol (best test)", "final"])


# --- results for the book's results page ------------------------------------------------------------

class Results:
    """A lab's headline numbers, saved as JSON for the book's results page (never typed there).

        results = Results("lab2", cifar, device, config)
        results.add("fp", dense_acc, part="(a)", label="pretrained model")
        results.add("finetune_c", mean, std=std, n=3, part="(c)", label="one-shot + fine-tuning")
        results.save()     # labs/results/lab2.json (full profile) or labs/results/ci/lab2.json

    ``unit`` is ``'acc'`` (an accuracy fraction, the default) or any other unit string
    (``'bytes'``, ``'x'``, ``'ms'``); ``std`` is over ``n`` seeds.
    """

    def __init__(self, lab: str, data=None, device=None, config=None, *, seeds=None, title: str | None = None):
        import torch

        from . import profile

        self.lab, self.title, self.entries = lab, title, []
        self.run = {"date": _now(), "profile": profile.current().name, "device": _device_name(device),
                    "torch": torch.__version__}
        if data is not None:
            self.run.update(train_images=len(data.train), test_images=len(data.test))
        if config is not None:
            from .train import describe

            self.run.update(precision=describe(config, device or "cpu"), val_fraction=config.val_fraction)
        if seeds is not None:
            self.run["seeds"] = [int(s) for s in seeds]
        self._started = time.perf_counter()

    def add(self, key: str, value: float, *, std: float | None = None, n: int = 1,
            part: str = "", label: str = "", unit: str = "acc") -> None:
        if any(e["key"] == key for e in self.entries):
            raise ValueError(f"Results.add: key {key!r} was added already")
        value = float(value)
        std = None if std is None or math.isnan(float(std)) else float(std)
        self.entries.append({"key": key, "part": part, "label": label or key, "value": value,
                             "std": std, "n": int(n), "unit": unit})

    def path(self, folder=None) -> "Path":
        from pathlib import Path

        from . import profile

        folder = Path(folder) if folder is not None else Path("results")
        if profile.current().name != "full":
            folder = folder / profile.current().name
        return folder / f"{self.lab}.json"

    def save(self, folder=None) -> "Path":
        """Write ``<folder>/<lab>.json`` (``folder`` default: ``results`` beside the notebook); a CI
        profile run writes into a subfolder named after the profile, never over the reference run's."""
        import json

        path = self.path(folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        run = dict(self.run, minutes=round((time.perf_counter() - self._started) / 60, 1))
        doc = {"lab": self.lab, "title": self.title or self.lab, "run": run, "entries": self.entries}
        path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        return path


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
