"""Reports: what a run was (its header and footer), seeds tables, and the results for the book.

A notebook's first cell starts a :class:`Clock` and prints the header; its last cell prints the
footer with that clock; the results of the run go to a :class:`Results` file::

    clock = report.Clock()
    print(report.run_header(cifar, device, config))
    ...
    print(report.run_footer(clock))

The run profile is read once (``settings.profile()``) when a header or a Results is made, unless
it is given as ``profile=``.
"""
from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import platform
import time
from pathlib import Path

from . import settings
from .devices import describe, device_name
from .files import write_bytes
from .stats import pm
from .tables import table

__all__ = ["Clock", "run_header", "run_footer", "seeds_table", "results_path", "Results", "load_correct"]


class Clock:
    """Wall time since it was made: ``clock = Clock()``, later ``clock.seconds``."""

    def __init__(self):
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


def run_header(data=None, device=None, config=None, *, profile: settings.Profile | None = None) -> str:
    """One paragraph saying what this run is: date, device, versions, profile, dataset size and the
    protocol of its training runs (which images choose the epoch, which report it:
    :meth:`labkit.data.CIFAR10.protocol`) and, with a :class:`labkit.train.TrainConfig`, the
    precision and memory format training runs in.
    ``profile``: a :class:`labkit.settings.Profile` (None: ``$LABKIT_PROFILE``, read here).
    Formats only: the run's time is a :class:`Clock`'s (see :func:`run_footer`)."""
    import torch

    profile = settings.profile() if profile is None else profile
    lines = [
        f"Run of {_now()}, profile '{profile.name}'",
        f"device: {device_name(device)}; torch {torch.__version__}, python {platform.python_version()}",
    ]
    if data is not None:
        lines.append(f"data: CIFAR-10, {_counts(data)}")
        lines.append(f"selection: {data.protocol()}")
    if config is not None:
        lines.append(f"training: {describe(config, device or 'cpu')} (precision={config.precision!r}); "
                     f"evaluation: fp32")
    return "\n".join(lines)


def run_footer(clock: Clock | None) -> str:
    """The wall time of ``clock`` (the :class:`Clock` started with the run)."""
    if clock is None:
        return "run time: unknown (no Clock was started)"
    seconds = clock.seconds
    return f"run time: {seconds / 60:.1f} min ({seconds:.0f} s)"


def _counts(data) -> str:
    val = "" if data.val is None else f" / {len(data.val)} validation"
    return f"{len(data.train)} train{val} / {len(data.test)} test images"


def _now() -> str:
    return f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC"


CHOSEN_BY = {"val_acc": "validation-selected epoch", "last": "last epoch (no selection)"}


def seeds_table(runs) -> str:
    """One row per method, {label: [History of each seed]}: mean ± std over the seeds of the test
    accuracy of the reported epoch (:attr:`History.best_acc`: the validation-selected epoch, or the last
    one when the runs had no validation images; the header says which), of the best test accuracy of
    any epoch (the course's protocol, optimistic: the test images choose) and of the final test accuracy.
    Runs reported in different ways get a column saying how, per row."""
    rows, ways = [], []
    for label, histories in runs.items():
        histories = list(histories)
        if not histories:
            raise ValueError(f"seeds_table: no run for {label!r}")
        way = " / ".join(sorted({CHOSEN_BY[h.selected_on] for h in histories}))
        ways.append(way)
        rows.append([label, len(histories), way, pm([h.best_acc for h in histories]),
                     pm([h.peak_test_acc for h in histories]), pm([h.final_acc for h in histories])])
    course = "course protocol (best test epoch, optimistic)"
    if len(set(ways)) == 1:
        return table([row[:2] + row[3:] for row in rows], ["run", "seeds", ways[0], course, "final"])
    return table(rows, ["run", "seeds", "reported epoch", "test accuracy", course, "final"])


# --- results for the book's results page ------------------------------------------------------------

def results_path(lab: str, profile: settings.Profile, folder=None, edition: str = "course") -> Path:
    """``<folder>/<lab>.json`` (``folder`` default: ``results`` beside the notebook) for the reference
    run (profile ``full``, the course's edition); any other run writes into a subfolder named after its
    profile and edition (``ci``, ``ci-2024``, ``full-2024``; :meth:`labkit.course.Course.folder`),
    never over the reference run's."""
    sub = settings.run_name(profile, edition)
    folder = Path(folder) if folder is not None else Path("results")
    if sub != "full":
        folder = folder / sub
    return folder / f"{lab}.json"


def _value(v: float, unit: str) -> str:
    return f"{v:.2%}" if unit == "acc" else f"{v:.4g} {unit}"


class Results:
    """A lab's headline numbers, saved as JSON for the book's results page (never typed there).

        results = Results("lab2", cifar, device, config, clock=clock)
        results.add("fp", dense_acc, part="(a)", label="pretrained model")
        results.add("finetune_c", mean, std=std, n=3, part="(c)", label="one-shot + fine-tuning")
        results.save()     # labs/results/lab2.json (full profile) or labs/results/ci/lab2.json

    ``data``: the data the lab's training runs use (e.g. ``data.validation_from_test(cifar)``): its image
    counts and its protocol (:meth:`labkit.data.CIFAR10.protocol`) are saved as ``run['selection']``.
    ``profile``: the run's :class:`labkit.settings.Profile`, fixed here (None: ``$LABKIT_PROFILE``,
    read once, now), and ``edition``, the name of its course edition (``course.current().name``): they
    decide where :meth:`save` writes. ``clock``: the run's :class:`Clock`
    (None: one started now); its minutes are saved. ``unit`` is ``'acc'`` (an accuracy fraction,
    the default) or any other unit string (``'bytes'``, ``'x'``, ``'ms'``); ``std`` is over ``n`` seeds.
    """

    def __init__(self, lab: str, data=None, device=None, config=None, *, seeds=None, title: str | None = None,
                 profile: settings.Profile | None = None, clock: Clock | None = None, edition: str = "course"):
        import torch

        self.profile = settings.profile() if profile is None else profile
        if not isinstance(self.profile, settings.Profile):
            raise ValueError(f"profile must be a labkit.settings.Profile (settings.profile()), got {profile!r}")
        self.clock = Clock() if clock is None else clock
        results_path(lab, self.profile, edition=edition)    # checks the edition's name
        self.lab, self.title, self.entries, self.edition = lab, title, [], edition
        self.correct = {}
        self.run = {"date": _now(), "profile": self.profile.name, "edition": edition,
                    "device": device_name(device), "torch": torch.__version__}
        if data is not None:
            self.run.update(train_images=len(data.train), test_images=len(data.test))
            if data.val is not None:
                self.run["val_images"] = len(data.val)
            self.run["selection"] = data.protocol()
        if config is not None:
            self.run["precision"] = describe(config, device or "cpu")
        if seeds is not None:
            self.run["seeds"] = [int(s) for s in seeds]

    def add(self, key: str, value: float, *, std: float | None = None, n: int = 1,
            part: str = "", label: str = "", unit: str = "acc") -> None:
        if any(e["key"] == key for e in self.entries):
            raise ValueError(f"Results.add: key {key!r} was added already")
        value = float(value)
        std = None if std is None or math.isnan(float(std)) else float(std)
        self.entries.append({"key": key, "part": part, "label": label or key, "value": value,
                             "std": std, "n": int(n), "unit": unit})

    def add_correct(self, key: str, correct) -> None:
        """Which reported images a result got right, for a later lab's paired comparison (Lab 3 (e)
        against Lab 2 (e)): bool of shape (images,) for one model or (seeds, images), saved packed
        under ``correct`` in the file; :func:`load_correct` reads it back."""
        import numpy as np

        if key in self.correct:
            raise ValueError(f"Results.add_correct: key {key!r} was added already")
        arr = np.atleast_2d(np.asarray(correct))
        if arr.dtype != bool or arr.ndim != 2 or arr.size == 0:
            raise ValueError(f"Results.add_correct: per-image correctness is bool of shape (images,) or (seeds, "
                             f"images), got dtype {arr.dtype}, shape {np.shape(correct)}")
        self.correct[key] = {"shape": list(arr.shape),
                             "packed": base64.b64encode(np.packbits(arr, axis=None).tobytes()).decode("ascii")}

    def path(self, folder=None) -> Path:
        """Where :meth:`save` writes: :func:`results_path` of this lab and profile."""
        return results_path(self.lab, self.profile, folder, self.edition)

    def table(self, part: str | None = None) -> str:
        """The entries recorded so far (of one ``part``, e.g. ``"(d)"``, or all), one row each:
        part, label, value (accuracies in %, other units with their unit) and the spread over seeds."""
        rows = [[e["part"], e["label"], _value(e["value"], e["unit"]),
                 f"± {_value(e['std'], e['unit'])} ({e['n']} seeds)" if e["std"] is not None else ""]
                for e in self.entries if part is None or e["part"] == part]
        if not rows:
            raise ValueError(f"Results.table: no entry of part {part!r}; parts: "
                             f"{sorted({e['part'] for e in self.entries})}")
        return table(rows, ["part", "result", "value", "spread"])

    def save(self, folder=None) -> Path:
        """Write ``<folder>/<lab>.json`` atomically (``folder`` default: ``results`` beside the
        notebook); any run but the reference one writes into a subfolder named after its profile and
        edition (:func:`results_path`), never over the reference run's."""
        path = self.path(folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        run = dict(self.run, minutes=round(self.clock.seconds / 60, 1))
        doc = {"lab": self.lab, "title": self.title or self.lab, "run": run, "entries": self.entries}
        if self.correct:
            doc["correct"] = self.correct
        return write_bytes(path, (json.dumps(doc, indent=1) + "\n").encode("utf-8"))


def load_correct(lab: str, key: str, profile: settings.Profile, *, edition: str = "course", folder=None,
                 reference: bool = True):
    """The per-image correctness a lab saved with :meth:`Results.add_correct`: bool (seeds, images),
    and the run it came from (``(array, run)``). Reads this run's results file (:func:`results_path`)
    and, when ``reference`` and that file is missing, the reference run's. FileNotFoundError names
    the lab to run; ValueError for a file without that key or damaged."""
    import numpy as np

    paths = [results_path(lab, profile, folder, edition)]
    if reference:
        paths.append(results_path(lab, settings.PROFILES["full"], folder, edition))
    path = next((p for p in paths if p.is_file()), None)
    if path is None:
        raise FileNotFoundError(f"no results of {lab} at {' or '.join(map(str, paths))}: run {lab} first")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        item = doc["correct"][key]
        shape = tuple(int(n) for n in item["shape"])
        bits = np.unpackbits(np.frombuffer(base64.b64decode(item["packed"], validate=True), dtype=np.uint8))
        if len(shape) != 2 or bits.size < shape[0] * shape[1] or bits.size >= shape[0] * shape[1] + 8:
            raise ValueError(f"shape {shape} does not fit {bits.size} bits")
    except KeyError as e:
        raise ValueError(f"{path} holds no per-image correctness {key!r} ({e}); run {lab} again with this labkit") from e
    except (OSError, ValueError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is damaged ({e}); run {lab} again, or restore it from the repository") from e
    return bits[:shape[0] * shape[1]].reshape(shape).astype(bool), doc.get("run", {})
