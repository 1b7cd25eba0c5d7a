"""Latency, measured (Lab 4 (b)): what runs faster, and by how much, with its spread.

The harness. `interleaved` calls every candidate once per round, in a fresh random order each
round, so that a slow spell of the machine (other processes, heat) falls on all candidates alike
instead of on whichever ran during it. `measure` and the benchmarks (``benchmarks/bench_*.py``)
time with it.

Latency of models. `measure` times ``net(x)`` in eval mode under ``torch.inference_mode`` with
``torch.utils.benchmark.Timer`` (which synchronises CUDA around every timing): one warm-up call
per setting, then `rounds` interleaved rounds over all settings, each round timing blocks of
calls for about `min_run_time` seconds. A setting's blocks of all rounds are merged
(``Measurement.merge``) and summarised by their median and interquartile range (IQR = q3 - q1),
torch.utils.benchmark's own statistics. Settings: batch sizes (1 and 256 by default), and on the
CPU the thread counts 1, 2, 4, ... up to the number torch uses (``Timer(num_threads=...)``); on
CUDA the thread count does not apply.

Reading them. `speedup` (a ratio of medians and the range the quartiles allow), `crossover` (the
sparsity from which a kind of model beats the baseline), `latency_table`, `plot_latency`.
"""
from __future__ import annotations

import contextlib
import os
import random
import time
from dataclasses import dataclass
from typing import Callable, Hashable

import torch
from torch import nn
from torch.utils import benchmark

from . import settings
from .checks import integer, number
from .devices import model_device
from .layers import evaluating
from .progress import bar as progress_bar
from .tables import table

__all__ = ["interleaved", "Latency", "thread_settings", "machine_load", "machine_busy", "BUSY_CPUS", "measure", "Speedup", "speedup",
           "crossover", "latency_table", "plot_latency", "plot_models"]


def interleaved(candidates: dict[Hashable, Callable[[], float]], rounds: int, *, seed: int = 0,
                warmup: int = 1) -> dict[Hashable, list[float]]:
    """Seconds of every candidate in each of `rounds` rounds, the candidates interleaved.

    candidates: {name: fn}; ``fn()`` runs the candidate once and returns the seconds it measured
    (its own clock, so that it can synchronise a GPU and time only the part that counts).
    Each candidate is first called `warmup` times, not recorded. Then every round calls each
    candidate once, in an order shuffled afresh each round (``random.Random(seed)``): a drift in
    the machine's speed falls on all candidates alike, and none always runs after the same one.
    Returns {name: [seconds in round 1, ..., round `rounds`]}, in the order of `candidates`.
    """
    if not isinstance(candidates, dict) or not candidates or not all(map(callable, candidates.values())):
        raise ValueError(f"candidates must be a non-empty dict {{name: function}}, got {candidates!r}")
    rounds = integer("rounds", rounds, minimum=1)
    warmup = integer("warmup", warmup, minimum=0)
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    rng = random.Random(seed)
    times = {name: [] for name in candidates}
    for _ in range(rounds):
        order = list(candidates)
        rng.shuffle(order)
        for name in order:
            t = candidates[name]()
            times[name].append(number(f"the seconds candidate {name!r} returned", t, minimum=0))
    return times


@dataclass(frozen=True)
class Latency:
    """Latency of one model at one setting; times in seconds per forward pass (one batch)."""

    model: object            # the key the model was given in `measure`
    batch_size: int
    threads: int | None      # None on CUDA
    device: str
    measurement: benchmark.Measurement   # all blocks of all rounds, merged
    quiet: bool | None = None            # the machine was quiet before and after (None: unknown); `measure`

    @property
    def median(self) -> float:
        return self.measurement.median

    @property
    def iqr(self) -> float:
        return self.measurement.iqr

    @property
    def times(self) -> list[float]:
        """Seconds per call of every measured block."""
        return list(self.measurement.times)

    @property
    def quartiles(self) -> tuple[float, float]:
        """(q1, q3) of `times` (linear interpolation): the IQR's ends."""
        q = torch.tensor(self.times, dtype=torch.float64).quantile(torch.tensor([0.25, 0.75], dtype=torch.float64))
        return float(q[0]), float(q[1])


def thread_settings(device) -> tuple[int | None, ...]:
    """The thread counts to measure: on the CPU 1, ..., torch.get_num_threads() (at most 1, 2, 4,
    ... and the maximum); on a GPU (None,): host threads do not set its speed."""
    if torch.device(device).type != "cpu":
        return (None,)
    top = torch.get_num_threads()
    counts = {top}
    n = 1
    while n < top:
        counts.add(n)
        n *= 2
    return tuple(sorted(counts))


def _busy_jiffies(stat_text: str) -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs from the ``cpu`` line of ``/proc/stat``'s text (idle
    and iowait are not busy; guest time is already inside user time, so it is not added)."""
    for line in stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(v) for v in fields[1:9]]     # user nice system idle iowait irq softirq steal
            idle = ticks[3] + ticks[4]
            return sum(ticks) - idle, sum(ticks)
    raise ValueError("no 'cpu' line in /proc/stat")


def _read_proc_stat() -> str:
    with open("/proc/stat") as f:
        return f.read()


def _own_clock() -> tuple[float, float]:
    """(this process's CPU seconds, all its threads; wall seconds)."""
    return time.process_time(), time.perf_counter()


def _load(seconds: float, _read, _clock) -> tuple[float | None, str]:
    """(CPUs other processes kept busy, or None where unknown; the line `machine_load` prints)."""
    seconds = number("seconds", seconds, positive=True)
    cpus = os.cpu_count() or 1
    try:
        busy0, total0 = _busy_jiffies(_read())
        own0, wall0 = _clock()
        time.sleep(seconds)
        busy1, total1 = _busy_jiffies(_read())
        own1, wall1 = _clock()
    except (OSError, ValueError):
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            return None, ""
        verdict = "busy: other processes compete for the CPUs" if load > cpus - 0.5 else "mostly idle"
        return max(load - (cpus - 1), 0.0) if load > cpus - 0.5 else 0.0, f"load average {load:.1f} on {cpus} CPUs ({verdict})"
    share = (busy1 - busy0) / max(total1 - total0, 1)                    # of all CPUs, this process included
    others = max(share * cpus - (own1 - own0) / max(wall1 - wall0, 1e-9), 0.0)   # CPUs other processes kept busy
    verdict = "busy: other processes compete for the CPUs" if others > BUSY_CPUS else "mostly idle"
    return others, f"other processes kept {others:.1f} of {cpus} CPUs busy over {seconds:g} s ({verdict})"


BUSY_CPUS = 0.5     # other processes keeping more than half a CPU busy: the machine is busy


def machine_load(seconds: float = 0.5, *, _read=_read_proc_stat, _clock=_own_clock) -> str:
    """One line on how busy the machine is *now*: the CPUs that other processes kept busy over the
    next ``seconds`` (sampled from ``/proc/stat``, this process's own CPU time taken out), against
    the number of CPUs. "Busy" from more than half a CPU on (`BUSY_CPUS`): other processes then
    compete for the cores, and timings with several threads suffer most (their threads wait for
    each other). The kernel counts CPU time in ticks of 10 ms, so over the default half second the
    figure is good to about 0.02 CPU times the number of CPUs. Where ``/proc/stat`` is missing
    (macOS, Windows): the 1-minute load average, which still counts a run that just ended (the
    notebook's own training, for one); empty where neither is reported. (``_read`` and ``_clock``
    are for the tests.)"""
    return _load(seconds, _read, _clock)[1]


def machine_busy(seconds: float = 0.5, *, _read=_read_proc_stat, _clock=_own_clock) -> bool | None:
    """True when other processes kept more than `BUSY_CPUS` busy over the next ``seconds`` (as
    `machine_load` measures it), False when not, None where the load cannot be read."""
    others, _ = _load(seconds, _read, _clock)
    return None if others is None else others > BUSY_CPUS


def measure(models: dict, *, batch_sizes=(1, 256), threads=None, rounds: int = 3,
            min_run_time: float = 0.3, image_shape=(3, 32, 32), progress=None, attempts: int = 3,
            pause: float = 10.0, _busy=machine_busy) -> dict:
    """Latency of every model at every batch size and thread count, interleaved.

    Args:
        models: {key: nn.Module}, all on the same device; keys are labels, e.g. ("CSR", 0.8).
        batch_sizes: images per forward pass.
        threads: CPU thread counts; default `thread_settings(device)`.
        rounds: passes over all settings (`interleaved`); each times every setting again.
        min_run_time: seconds of calls per setting and round (at least one call).
        image_shape: one input without the batch dimension.
        progress: the bar's mode, ``'auto'``, ``'text'`` or ``'off'``; None (or True): read from
            ``$LABKIT_PROGRESS`` once, here (``settings.progress()``); False: no bar.
        attempts, pause: the quiet-machine rule. Before timing, and again after, `machine_busy`
            samples the load; while other processes keep the machine busy the measurement waits
            ``pause`` seconds and starts again, at most ``attempts`` times in all. Every Latency
            records whether its measurement was quiet (``quiet``: True, False when it stayed busy,
            None where the load cannot be read), and `Speedup` judges only quiet ones.
    Returns {(key, batch_size, threads): Latency}. Models are put in eval mode and restored.
    The input is uniform random images (the time does not depend on the values).
    """
    if not isinstance(models, dict) or not models or not all(isinstance(m, nn.Module) for m in models.values()):
        raise ValueError("models must be a non-empty dict {label: nn.Module}")
    rounds = integer("rounds", rounds, minimum=1)
    attempts = integer("attempts", attempts, minimum=1)
    pause = number("pause", pause, positive=True)
    min_run_time = number("min_run_time", min_run_time, positive=True)
    batch_sizes = [integer("batch_sizes", b, minimum=1) for b in batch_sizes]
    mode = settings.progress() if progress is None or progress is True else progress
    mode = "off" if progress is False else mode               # checked by progress_bar
    devices = {model_device(m) for m in models.values()}
    if len(devices) != 1:
        raise ValueError(f"all models must be on one device, got {sorted(map(str, devices))}")
    device = devices.pop()
    threads = tuple(thread_settings(device) if threads is None else threads)
    if device.type == "cpu":
        threads = tuple(integer("threads", t, minimum=1) for t in threads)
    runs = [(key, b, t) for b in batch_sizes for t in threads for key in models]
    inputs = {b: torch.rand((b, *image_shape), generator=torch.Generator().manual_seed(0)).to(device)
              for b in batch_sizes}
    for attempt in range(attempts):
        before = _busy()
        if before and attempt + 1 < attempts:
            time.sleep(pause)                  # busy before we start: wait, and look again
            continue
        blocks = {s: [] for s in runs}
        with contextlib.ExitStack() as stack:
            bar = stack.enter_context(progress_bar(rounds * len(runs), "latency", mode=mode, unit="setting"))
            for m in models.values():
                stack.enter_context(evaluating(m))
            candidates = {s: _blocks(models[s[0]], inputs[s[1]], s[2], s[0], min_run_time, blocks[s], bar)
                          for s in runs}        # each calibrated by a warm-up call
            interleaved(candidates, rounds, warmup=0)
        after = _busy()
        quiet = None if before is None or after is None else not (before or after)
        if quiet is not False or attempt + 1 == attempts:
            break
        time.sleep(pause)                      # it got busy while timing: wait, and time it all again
    out = {}
    for s, ms in blocks.items():
        key, b, t = s
        merged = benchmark.Measurement.merge(ms)[0]
        out[s] = Latency(key, b, t if device.type == "cpu" else None, str(device), merged, quiet)
    return out


def _blocks(net, x, threads, key, min_run_time, blocks, bar):
    """A candidate for `interleaved`: times blocks of calls of ``net(x)`` for about `min_run_time`
    seconds, appends their Measurements to `blocks` and returns the seconds spent in the calls.
    A first call, not in the results, warms up and sets how many calls fill a block (~3 a round)."""
    def run():
        with torch.inference_mode():
            return net(x)

    timer = benchmark.Timer("run()", globals={"run": run}, num_threads=threads or 1,
                            label="forward", description=str(key))
    first = timer.timeit(1).median                              # warm-up
    calls = max(1, int(min_run_time / 3 / max(first, 1e-9)))

    def candidate() -> float:
        spent = 0.0
        while spent < min_run_time:        # blocks of `calls` calls, ~min_run_time in all
            m = timer.timeit(calls)
            blocks.append(m)
            spent += m.median * calls
        bar.update(1)
        return spent

    return candidate


# --- reading results ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Speedup:
    """median(baseline) / median(model), and the range the quartiles allow:
    low = q1(baseline) / q3(model), high = q3(baseline) / q1(model)."""

    median: float
    low: float
    high: float
    quiet: bool | None = None   # both timed on a quiet machine (None: unknown, judged; False: not judged)

    def __str__(self) -> str:
        if self.quiet is False:
            return "not judged: the machine was busy while timing"
        return f"{self.median:.2f}x (quartiles allow {self.low:.2f}x to {self.high:.2f}x)"

    @property
    def faster(self) -> bool | None:
        """True: faster beyond the spread (the model's interquartile range lies wholly below the
        baseline's, low > 1); False: slower beyond it (high < 1); None: the ranges overlap, or the
        machine was busy while either was timed (not judged)."""
        if self.quiet is False:
            return None
        return True if self.low > 1 else False if self.high < 1 else None

    def sentence(self, model: str, baseline: str) -> str:
        """The verdict in words: "faster" or "slower" only when the interquartile ranges do not overlap
        and the machine was quiet."""
        if self.quiet is False:
            return (f"{model} against {baseline}: not judged: the machine was busy while timing (other processes "
                    f"kept CPUs busy through every attempt), so no ratio is given; time again on a quiet machine.")
        if self.faster:
            return (f"{model} is faster than {baseline}: {self.median:.2f}x, at least {self.low:.2f}x within "
                    f"the quartiles (the interquartile ranges do not overlap).")
        if self.faster is False:
            return (f"{model} is slower than {baseline}: {self.median:.2f}x, at most {self.high:.2f}x within "
                    f"the quartiles (the interquartile ranges do not overlap).")
        return (f"{model} and {baseline} are not told apart by this run: {self.median:.2f}x, but the "
                f"quartiles allow {self.low:.2f}x to {self.high:.2f}x (the interquartile ranges overlap).")


def speedup(results: dict, model, baseline, batch_size: int, threads=None) -> Speedup:
    """How much faster `model` ran than `baseline` at one setting of `measure`'s results."""
    try:
        m, base = results[(model, batch_size, threads)], results[(baseline, batch_size, threads)]
    except KeyError as e:
        raise ValueError(f"no measurement {e.args[0]!r}; measured: {sorted(map(str, results))}") from None
    (mq1, mq3), (bq1, bq3) = m.quartiles, base.quartiles
    quiet = False if False in (m.quiet, base.quiet) else None if None in (m.quiet, base.quiet) else True
    return Speedup(base.median / m.median, bq1 / mq3, bq3 / mq1, quiet)


def crossover(results: dict, kind: str, baseline, *, beyond_spread: bool = False) -> dict:
    """{(batch_size, threads): the lowest sparsity s such that every model (kind, s') with
    s' >= s ran faster than `baseline` (median), or None if the fastest-sparsity one did not}.
    ``beyond_spread=True``: faster only when the interquartile ranges do not overlap
    (:attr:`Speedup.faster`). Model keys are (kind, sparsity) tuples."""
    out = {}
    for b, t in dict.fromkeys((b, t) for _, b, t in results):
        base = results[(baseline, b, t)]
        found = None
        if base.quiet is False:               # not judged: nothing is called faster
            out[(b, t)] = None
            continue
        points = sorted((k[1], lat) for (k, bb, tt), lat in results.items()
                        if isinstance(k, tuple) and k[0] == kind and (bb, tt) == (b, t))
        for s, lat in reversed(points):       # from the sparsest down, while faster than baseline
            slower = lat.quartiles[1] >= base.quartiles[0] if beyond_spread else lat.median >= base.median
            if slower:
                break
            found = s
        out[(b, t)] = found
    return out


# --- showing results ----------------------------------------------------------------------------

def _fmt_key(key) -> str:
    if isinstance(key, tuple):
        return " ".join(f"{v:.0%}" if isinstance(v, float) else str(v) for v in key)
    return str(key)


def latency_table(results: dict, *, baseline=None) -> str:
    """Text table: one row per model, batch size and thread count: median and IQR in ms, ms per
    image, and (with `baseline`, a model key) the speed-up median(baseline) / median(model)."""
    rows = []
    for (key, b, t), lat in results.items():
        row = [_fmt_key(key), b, "-" if t is None else t, f"{lat.median * 1e3:.3g}",
               f"{lat.iqr * 1e3:.2g}", f"{lat.median * 1e3 / b:.3g}"]
        if baseline is not None:
            base = results[(baseline, b, t)]
            row.append(f"{base.median / lat.median:.2f}x")
        rows.append(row)
    headers = ["model", "batch", "threads", "median ms", "IQR ms", "ms/image"]
    return table(rows, headers + (["speed-up"] if baseline is not None else []))


def plot_latency(results: dict, *, baseline=None, title=None):
    """Latency (median, quartiles as error bars, log scale) against sparsity: one row of panels per
    batch size, one column per thread count. Model keys must be (kind, sparsity): one line per
    kind, e.g. ("dense", 0.0), ("CSR", 0.8), ("channels", 0.5); `baseline` (a model key) is drawn
    as a horizontal line with its interquartile band. Returns the Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for key in {k for k, _, _ in results}:
        if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], (int, float))):
            raise ValueError(f"plot_latency needs model keys (kind, sparsity), got {key!r}")
    batches = sorted({b for _, b, _ in results})
    threads = sorted({t for _, _, t in results}, key=lambda t: t or 0)
    fig, axes = plt.subplots(len(batches), len(threads), figsize=(4.6 * len(threads), 3.3 * len(batches)),
                             squeeze=False)
    kinds = [k for k in dict.fromkeys(k[0] for k, _, _ in results) if baseline is None or k != baseline[0]]
    markers = "os^Dv<>p"
    ms = FuncFormatter(lambda v, _: f"{v:g}")
    for row, b in enumerate(batches):
        for col, t in enumerate(threads):
            ax = axes[row][col]
            if baseline is not None and (baseline, b, t) in results:
                base = results[(baseline, b, t)]
                ax.axhline(base.median * 1e3, color="0.3", ls="--", lw=1, label=baseline[0])
                ax.axhspan(base.quartiles[0] * 1e3, base.quartiles[1] * 1e3, color="0.3", alpha=0.12, lw=0)
            for i, kind in enumerate(kinds):
                pts = sorted((k[1], lat) for (k, bb, tt), lat in results.items()
                             if k[0] == kind and bb == b and tt == t)
                y = [lat.median * 1e3 for _, lat in pts]
                yerr = [[(lat.median - lat.quartiles[0]) * 1e3 for _, lat in pts],
                        [(lat.quartiles[1] - lat.median) * 1e3 for _, lat in pts]]
                ax.errorbar([x for x, _ in pts], y, yerr=yerr, marker=markers[i % len(markers)], capsize=3,
                            color=f"C{i}", ls="-" if len(pts) > 1 else "none", label=kind)
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ms)
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("fraction of weights removed")
            ax.set_ylabel("ms per batch")
            ax.set_title(f"batch {b}" + ("" if t is None else f", {t} thread{'s' if t > 1 else ''}"))
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_models(results: dict, *, baseline=None, title=None):
    """Latency of named models (any keys, e.g. "torch fp32", "ORT int8") as horizontal bars: the
    median, the quartiles as error bars, one panel per batch size and thread count, the speed-up
    against ``baseline`` (a key) beside each bar. Returns the Figure."""
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("plot_models: no measurement to show")
    keys = list(dict.fromkeys(k for k, _, _ in results))
    batches = sorted({b for _, b, _ in results})
    threads = sorted({t for _, _, t in results}, key=lambda t: t or 0)
    fig, axes = plt.subplots(len(batches), len(threads), figsize=(4.8 * len(threads), 0.45 * len(keys) * len(batches) + 1.4),
                             squeeze=False)
    for row, b in enumerate(batches):
        for col, t in enumerate(threads):
            ax = axes[row][col]
            shown = [k for k in keys if (k, b, t) in results]
            lat = [results[(k, b, t)] for k in shown]
            y = range(len(shown))
            med = [m.median * 1e3 for m in lat]
            err = [[(m.median - m.quartiles[0]) * 1e3 for m in lat], [(m.quartiles[1] - m.median) * 1e3 for m in lat]]
            ax.barh(list(y), med, xerr=err, color=[f"C{keys.index(k) % 10}" for k in shown], capsize=3)
            ax.set_yticks(list(y))
            ax.set_yticklabels([_fmt_key(k) for k in shown], fontsize=8)
            ax.invert_yaxis()
            if baseline is not None and (baseline, b, t) in results:
                for i, k in enumerate(shown):
                    s = speedup(results, k, baseline, b, t)
                    ax.text(med[i], i, f"  {s.median:.2f}x", va="center", fontsize=7)
            ax.set_xlabel("ms per batch (median, quartiles)")
            ax.set_title(f"batch {b}" + ("" if t is None else f", {t} thread{'s' if t > 1 else ''}"), fontsize=9)
            ax.margins(x=0.25)
            ax.grid(True, axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
