"""Plot helpers shared by the labs (matplotlib). Every function returns its Figure.

In a notebook, assign the result (``fig = plot_runs(...)``): the inline backend shows the figure
once at the end of the cell; a bare Figure as the last expression would be shown a second time.

Lab 1 (optimisation trajectories), one run = ``(losses, weights)``: losses (T,) and weights
(T, d), entry t being the state after step t + 1.
  plot_runs     small multiples: one row per run, log L on the left, each w_j on the right
  plot_overlay  several runs on the same two panels (one line style per run), and a zoom on the
                weights near 0 where a subgradient run oscillates by a few hundredths

Lab 2: plot_sparsity  per-layer sparsity as grouped bars, several models side by side
       plot_accuracy_vs_sparsity  test accuracy of one-shot pruned models against the fraction pruned
       plot_histories  accuracy per epoch of training runs (labkit.train.History), one run or
                       several seeds of it (mean and spread), the selected epochs starred

Lab 3: plot_quantized_weights  histograms of one layer's weights, float and quantized, levels marked
       plot_accuracy_vs_bits  test accuracy against the bit width, one line per method

A plot draws only what ran: a marker at every measured point and nowhere else, a line only
between measured neighbours (no segment across a bit width that was not measured), a reference
line only for an accuracy that was given, with its name.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from .checks import integer, one_of
from .stats import pm

__all__ = ["plot_runs", "plot_overlay", "plot_sparsity", "plot_accuracy_vs_sparsity", "plot_histories",
           "plot_quantized_weights", "plot_accuracy_vs_bits"]

LINESTYLES = ("-", "--", ":", "-.")


def _trajectory(run, steps):
    """Unpack and check one run; keep its first `steps` steps (all if None)."""
    losses, weights = (np.asarray(a, dtype=float) for a in run)
    if losses.ndim != 1 or weights.ndim != 2 or len(losses) != len(weights):
        raise ValueError("a run must be (losses, weights) with shapes (T,) and (T, d); got "
                         f"{losses.shape} and {weights.shape}")
    if steps is not None:
        integer("steps (None: all steps)", steps, minimum=1)
        losses, weights = losses[:steps], weights[:steps]
    return np.arange(1, len(losses) + 1), losses, weights


def _check_runs(runs):
    if not isinstance(runs, dict) or not runs:
        raise ValueError("runs must be a non-empty dict {label: (losses, weights)}")


def _draw_loss(ax, x, losses, **line):
    ax.plot(x, losses, **line)
    ax.set_yscale("log", nonpositive="mask")  # an exact 0 loss is left out, not drawn at -inf
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("$L(W)$ (log scale)")
    ax.grid(True, which="major", alpha=0.3)


def _draw_target(ax, target):
    for v in np.unique(target):
        ax.axhline(v, color="0.6", lw=0.8, ls=":", zorder=0)


def _draw_weights(ax, x, weights, *, ls="-", labels=True):
    for j in range(weights.shape[1]):
        ax.plot(x, weights[:, j], ls=ls, color=f"C{j % 10}",
                label=f"$w_{{{j + 1}}}$" if labels else None)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("weight value")
    ax.grid(True, alpha=0.3)


def plot_runs(runs, *, steps=None, target=None, title=None):
    """Small multiples: one row per run with log L vs step (left) and every element of W vs
    step (right); the axes are shared, so rows compare directly.

    runs:   {label: (losses (T,), weights (T, d))}, e.g. the output of
            `labkit.sparse_linear.optimize` for several methods or lambdas.
    steps:  draw only the first `steps` steps (None: all).
    target: optional (d,) weights drawn as dotted grey horizontal lines (e.g. W*).
    """
    _check_runs(runs)
    n = len(runs)
    fig, axes = plt.subplots(n, 2, figsize=(10, 2.6 * n + 0.4), sharex=True, sharey="col",
                             squeeze=False, layout="constrained")
    for (label, run), (ax_l, ax_w) in zip(runs.items(), axes):
        x, losses, weights = _trajectory(run, steps)
        _draw_loss(ax_l, x, losses, color="k")
        ax_l.set_title(f"{label}: loss", fontsize="medium")
        if target is not None:
            _draw_target(ax_w, target)
        _draw_weights(ax_w, x, weights)
        ax_w.set_title(f"{label}: weights", fontsize="medium")
    for ax in axes[:-1].ravel():
        ax.set_xlabel("")
    axes[0, 1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


ZOOM_MARGIN = 1.2   # "auto" zoom: y-limits at 1.2 x the largest |w| shown, a little air around it
ZOOM_MIN_GAIN = 10  # "auto" zoom: drawn only when it magnifies the weights panel at least 10x


def plot_overlay(runs, *, steps=None, target=None, title=None, zoom="auto"):
    """Several runs on the same two panels: log L vs step (one colour per run) and every
    element of W vs step (colour = element, line style = run). Best for 2-4 runs.

    Arguments as in `plot_runs`, and
    zoom: a third panel, below, with the weights of the second half of the steps
          (steps floor(T/2) + 1 .. T) in y-limits [-h, h]: an oscillation of a few hundredths
          around 0 (a subgradient run's +-mu*lambda steps) is invisible at the scale of the
          weights panel, where its region is outlined.
          "auto" (default): with ``target``, h = 1.2 max |w_j| over those steps, all runs, for the
          elements j whose target is 0; the panel is drawn when 2h is at most a tenth of the
          span of the weights panel (max - min of all weights and the target) and h > 0, else
          left out. Without ``target``: no panel.
          A number h > 0: that h, always drawn. None: no panel.
    """
    _check_runs(runs)
    if len(runs) > len(LINESTYLES):
        raise ValueError(f"plot_overlay draws at most {len(LINESTYLES)} runs (one line style "
                         f"each); got {len(runs)}: use plot_runs for more")
    if not (zoom is None or zoom == "auto" or _positive(zoom)):
        raise ValueError(f"zoom must be 'auto', None or a half-height > 0 (e.g. 0.1); got {zoom!r}")
    drawn = [_trajectory(run, steps) for run in runs.values()]
    T = max(len(x) for x, _, _ in drawn)
    start = T // 2 + 1                            # first step of the zoomed window
    h = _zoom_height(zoom, drawn, start, target)
    if h is not None:
        fig, axd = plt.subplot_mosaic([["loss", "weights"], ["zoom", "zoom"]], figsize=(11, 6.8),
                                      height_ratios=(1.2, 1), layout="constrained")
        ax_l, ax_w, ax_z = axd["loss"], axd["weights"], axd["zoom"]
    else:
        fig, (ax_l, ax_w) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    if target is not None:
        _draw_target(ax_w, target)
    for i, (label, (x, losses, weights)) in enumerate(zip(runs, drawn)):
        _draw_loss(ax_l, x, losses, color=f"C{i}", ls=LINESTYLES[i], label=label)
        _draw_weights(ax_w, x, weights, ls=LINESTYLES[i], labels=(i == 0))
        ax_w.plot([], [], color="k", ls=LINESTYLES[i], label=label)  # legend entry: style = run
    ax_l.legend(fontsize="small")
    ax_l.set_title("loss", fontsize="medium")
    ax_w.set_title("weights", fontsize="medium")
    ax_w.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    if h is not None:
        _draw_zoom(ax_z, ax_w, drawn, start, T, h)
    if title:
        fig.suptitle(title)
    return fig


def _positive(v) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _zoom_height(zoom, drawn, start, target) -> float | None:
    """The zoom panel's half-height h, or None for no panel (see `plot_overlay`)."""
    if zoom is None:
        return None
    if zoom != "auto":
        return float(zoom)
    if target is None:
        return None
    zero = np.asarray(target, dtype=float) == 0                       # (d,)
    if not zero.any():
        return None
    tails = [np.abs(w[start - 1:, zero]) for _, _, w in drawn]        # (T - start + 1, #zeros) each
    h = ZOOM_MARGIN * max(float(t.max()) if t.size else 0.0 for t in tails)
    shown = np.concatenate([w.ravel() for _, _, w in drawn] + [np.asarray(target, dtype=float)])
    return h if 0 < 2 * h * ZOOM_MIN_GAIN <= np.ptp(shown) else None


def _draw_zoom(ax_z, ax_w, drawn, start, T, h):
    ax_z.axhline(0, color="0.6", lw=0.8, ls=":", zorder=0)
    for i, (x, _, weights) in enumerate(drawn):
        keep = x >= start
        _draw_weights(ax_z, x[keep], weights[keep], ls=LINESTYLES[i], labels=False)
    ax_z.set_xlim(start, T)
    ax_z.set_ylim(-h, h)
    ax_z.set_title(f"weights near 0, steps {start}-{T}: the dashed box of the weights panel, "
                   f"magnified", fontsize="medium")
    ax_w.add_patch(Rectangle((start, -h), T - start, 2 * h, fill=False, ec="0.3", ls="--", lw=0.8))


def plot_sparsity(results, *, ax=None, title=None):
    """Per-layer sparsity as grouped bars, one colour per model, layers in model order.

    results: {label: labkit.prune.Sparsity} (e.g. {"layer-wise": s1, "global": s2}) or one Sparsity;
             every result must have the same layers. The legend gives each model's total sparsity.
    ax:      draw into this Axes (default: a new figure).
    """
    if hasattr(results, "layers"):
        results = {"sparsity": results}
    if not isinstance(results, dict) or not results:
        raise ValueError("results must be a non-empty dict {label: Sparsity} (or one Sparsity)")
    names = list(next(iter(results.values())).layers)
    for label, s in results.items():
        if list(s.layers) != names:
            raise ValueError(f"result {label!r} has other layers than the first: compare models "
                             f"of the same architecture")
    fig, ax = _figure(ax, (max(6.0, 0.4 * len(names) + 1.5), 3.8))
    x = np.arange(len(names))
    width = 0.8 / len(results)
    for i, (label, s) in enumerate(results.items()):
        ax.bar(x + (i - (len(results) - 1) / 2) * width, list(s.layers.values()), width,
               color=f"C{i % 10}", label=f"{label} (total {s.total:.1%})")
    ax.set_xticks(x, names, rotation=90, fontsize="small")
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_ylabel("sparsity (fraction of zero weights)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def plot_accuracy_vs_sparsity(accuracy, *, dense=None, ax=None, title=None):
    """Test accuracy against the fraction of weights pruned: ``accuracy`` = {q: accuracy in [0, 1]};
    ``dense`` (optional) draws the unpruned model's accuracy as a dashed line."""
    if not isinstance(accuracy, dict) or not accuracy:
        raise ValueError("accuracy must be a non-empty dict {fraction pruned: test accuracy}")
    fig, ax = _figure(ax, (5, 3.5))
    qs = sorted(accuracy)
    ax.plot([100 * q for q in qs], [100 * accuracy[q] for q in qs], "o-", label="pruned, no fine-tuning")
    if dense is not None:
        ax.axhline(100 * dense, color="gray", ls="--", lw=1, label=f"dense ({dense:.2%})")
    ax.set(xlabel="weights pruned per layer (%)", ylabel="test accuracy (%)",
           title=title or "One-shot magnitude pruning")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


METRICS = {"test_acc": "test accuracy", "val_acc": "validation accuracy", "train_acc": "training accuracy"}
BANDS = {"range": "min-max over seeds", "std": "mean ± 1 std over seeds"}


def plot_histories(histories, *, metric="test_acc", band="range", dense=None, references=None, ax=None,
                   title=None):
    """Accuracy per epoch (in %) of training runs; the epoch each run selected is starred.

    histories: {label: History} for single runs, or {label: [History, ...]} for one setup trained
               with several seeds (the two may be mixed). Every History's ``best_epoch`` is the
               epoch it selected (the best validation accuracy among its eligible epochs): that
               is what is starred, never recomputed here.
    metric:    the record key drawn: "test_acc" (default), "val_acc" or "train_acc".
    band:      for several seeds: "range" shades min..max over the seeds at each epoch, "std"
               mean +- the sample standard deviation (n - 1, as ``labkit.stats.mean_std``).
    dense:     an accuracy (fraction) drawn as a dashed line labelled "dense", the unpruned model's.
    references: {label: accuracy (fraction)}, each a dashed horizontal line with its label, for a
               run that starts from another model, e.g. {"sparse float (Lab 2)": 0.8240} for a
               quantized fine-tuning of Lab 2's sparse model.

    One run: its curve, with filled markers at the epochs eligible for selection
    (``History.eligible_epochs``), hollow markers at the others (e.g. before the target
    sparsity), a star at ``best_epoch``. Several seeds: the mean over the seeds with the same
    markers (an epoch is eligible when it is in every seed), the band, and a star at each seed's
    own selected epoch and value. The legend gives each run's test accuracy at its selected
    epoch (mean +- std over seeds) and explains the markers.
    """
    if not isinstance(histories, dict) or not histories:
        raise ValueError("histories must be a non-empty dict {label: History or [History, ...] (seeds)}")
    one_of("metric", metric, METRICS)
    one_of("band", band, BANDS)
    runs = {label: _seeds(label, h) for label, h in histories.items()}
    fig, ax = _figure(ax, (9, 4))
    handles = []
    for i, (label, seeds) in enumerate(runs.items()):
        color = f"C{i % 10}"
        epochs = np.array(seeds[0].column("epoch"))                       # (E,)
        values = 100 * np.array([_values(label, h, metric) for h in seeds])  # (S, E)
        mean = values.mean(axis=0)                                         # (E,)
        eligible = np.isin(epochs, sorted(set.intersection(*(set(h.eligible_epochs) for h in seeds))))
        (line,) = ax.plot(epochs, mean, "-", color=color)
        ax.plot(epochs[eligible], mean[eligible], "o", color=color, ms=4)
        ax.plot(epochs[~eligible], mean[~eligible], "o", color=color, ms=4, mfc="none")
        if len(seeds) > 1:
            lo, hi = ((values.min(axis=0), values.max(axis=0)) if band == "range" else
                      (mean - values.std(axis=0, ddof=1), mean + values.std(axis=0, ddof=1)))
            ax.fill_between(epochs, lo, hi, color=color, alpha=0.2, lw=0)
        for h, v in zip(seeds, values):
            if h.best_epoch is not None:
                ax.plot(h.best_epoch, v[list(epochs).index(h.best_epoch)], "*", color=color, ms=12,
                        mec="k", mew=0.5)
        selected = [h.best_acc for h in seeds if h.best_epoch is not None]
        if not selected:
            summary = "no eligible epoch"
        elif len(seeds) == 1:
            summary = f"test {selected[0]:.2%} at selected epoch {seeds[0].best_epoch}"
        else:
            summary = f"test {pm(selected)} at the selected epochs, {len(seeds)} seeds"
        line.set_label(f"{label} ({summary})")
        handles.append(line)
    handles += _reference_lines(ax, dense, references)
    handles += _marker_key(runs, band)
    name = METRICS[metric]
    ax.set(xlabel="epoch", ylabel=f"{name} (%)", title=title or f"{name.capitalize()} per epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize="small")
    return fig


def _reference_lines(ax, dense, references) -> list:
    """Dashed horizontal lines: the dense model's accuracy and each named reference (fractions)."""
    given = {} if dense is None else {"dense": dense}
    if references is not None:
        if not isinstance(references, dict) or not all(_fraction(v) for v in references.values()):
            raise ValueError("references must be a dict {label: accuracy (a fraction in [0, 1])}")
        given |= references
    styles = ("--", ":", "-.")
    return [ax.axhline(100 * acc, color="gray" if i == 0 else f"0.{3 + i % 5}", ls=styles[i % len(styles)],
                       lw=1, label=f"{label} ({acc:.2%})") for i, (label, acc) in enumerate(given.items())]


def _fraction(v) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and 0 <= v <= 1


def _seeds(label, value) -> list:
    """One History or a non-empty list of them (seeds of one setup, the same epochs) -> a list."""
    seeds = list(value) if isinstance(value, Sequence) else [value]
    if not seeds or not all(hasattr(h, "records") and hasattr(h, "best_epoch") for h in seeds):
        raise ValueError(f"histories[{label!r}] must be a labkit.train.History or a non-empty list of "
                         f"them (one per seed); got {type(value).__name__}")
    if any(not h.records for h in seeds):
        raise ValueError(f"histories[{label!r}]: a run has no epoch to draw")
    if any(h.column("epoch") != seeds[0].column("epoch") for h in seeds):
        raise ValueError(f"histories[{label!r}]: the seeds ran different epochs; a mean over seeds "
                         f"needs the same epochs in every run")
    return seeds


def _values(label, h, metric) -> list[float]:
    values = h.column(metric)
    if any(v is None for v in values):
        raise ValueError(f"histories[{label!r}] has no {metric!r} in every epoch (a run without a "
                         f"validation split has no 'val_acc'); choose another metric")
    return values


def _marker_key(runs, band) -> list:
    """Grey legend entries for the markers that were drawn."""
    seeds = [h for hs in runs.values() for h in hs]
    on = {h.selected_on for h in seeds}
    rule = ("best validation accuracy" if on == {"val_acc"} else
            "no selection: the last epoch" if on == {"last"} else
            "best test accuracy" if on == {"test_acc"} else "History.best_epoch")
    key = [Line2D([], [], ls="", marker="o", ms=4, color="0.4", label="epoch eligible for selection")]
    if any(set(h.column("epoch")) - set(h.eligible_epochs) for h in seeds):
        key.append(Line2D([], [], ls="", marker="o", ms=4, mfc="none", color="0.4",
                          label="not eligible (e.g. before the target sparsity)"))
    several = any(len(hs) > 1 for hs in runs.values())
    key.append(Line2D([], [], ls="", marker="*", ms=10, color="0.4", mec="k", mew=0.5,
                      label=f"{'reported' if on == {'last'} else 'selected'} epoch ({rule})"
                            + ("; one per seed" if several else "")))
    if several:
        key.append(Patch(color="0.4", alpha=0.2, label=f"band: {BANDS[band]}; line: mean"))
    return key


def _figure(ax, size):
    """A new (Figure, Axes) of ``size`` inches, or the Figure of the given Axes."""
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    return fig, ax


# --- Lab 3: quantization ---------------------------------------------------------------------------

def plot_quantized_weights(weights, quantized, *, bins=80, log=False, title=None):
    """Histograms of one layer's weights: the float weights, then one panel per quantized version.

    weights:   the float weights (a tensor or array, any shape).
    quantized: {label: (quantized weights, codebook)}, e.g. ``{"4 bits": (quant.quantize(w, 4),
               quant.encode(w, 4)[1])}``. A panel draws how many weights take each value (stems),
               marks every level of the codebook below the axis (a level no weight takes is hollow)
               and gives the count of levels used in its title; the float histogram is drawn behind
               in grey, on the same bins as the first panel.
    log:       logarithmic counts, e.g. for a pruned layer whose zeros dwarf everything else.
    """
    if not isinstance(quantized, dict) or not quantized:
        raise ValueError("quantized must be a non-empty dict {label: (quantized weights, codebook)}")
    w = _flat(weights)
    fig, axes = plt.subplots(1, len(quantized) + 1, figsize=(3.6 * (len(quantized) + 1), 3.2),
                             sharex=True, sharey=True, squeeze=False, layout="constrained")
    axes = axes[0]
    edges = np.histogram_bin_edges(w, bins=bins)
    for ax in axes:
        ax.hist(w, bins=edges, color="0.75", label="float")
        ax.set_xlabel("weight value")
        ax.grid(alpha=0.3)
        if log:
            ax.set_yscale("log")
    axes[0].set_ylabel("number of weights")
    axes[0].set_title(f"float\n{w.size} weights", fontsize="medium")
    for i, (ax, (label, pair)) in enumerate(zip(axes[1:], quantized.items())):
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise ValueError(f"quantized[{label!r}] must be a pair (quantized weights, codebook)")
        w_q, levels = _flat(pair[0]), np.unique(_flat(pair[1]))
        values, counts = np.unique(w_q, return_counts=True)
        color = f"C{i % 10}"
        ax.vlines(values, 0 if not log else 0.8, counts, color=color, lw=2, label="quantized")
        used = np.isin(levels, values)
        for which, fill in ((used, color), (~used, "none")):
            if which.any():   # an empty unclipped line would break the figure's layout
                ax.plot(levels[which], np.zeros(which.sum()), "^", color=color, mfc=fill, ms=6,
                        clip_on=False, transform=ax.get_xaxis_transform())
        ax.set_title(f"{label}\n{used.sum()} of {levels.size} levels used", fontsize="medium")
    axes[-1].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_accuracy_vs_bits(curves, *, dense=None, ax=None, title=None):
    """Test accuracy (in %) against the bit width, one line per method.

    curves: {label: {bits (int): accuracy (fraction)}}, e.g. {"PTQ, asymmetric": {6: 0.91, ...}};
    dense:  the float model's accuracy, drawn as a dashed line.

    Only what was measured is drawn: a marker at each given point, and the line joins two points
    only when their widths are neighbours (b and b + 1); across a width without a point the line
    is broken (a NaN in the line's data), so a method measured at 4 and 2 bits shows two markers
    and no segment through 3 bits. The legend's title says so when a line is broken.
    """
    if not isinstance(curves, dict) or not curves or not all(isinstance(c, dict) and c for c in curves.values()):
        raise ValueError("curves must be a non-empty dict {label: {bits: accuracy}}, each non-empty")
    for label, points in curves.items():
        if not all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in points):
            raise ValueError(f"curves[{label!r}]: the bit widths must be ints, got {sorted(map(repr, points))}")
    fig, ax = _figure(ax, (6.5, 4))
    markers = "osD^v"
    broken = False
    for i, (label, points) in enumerate(curves.items()):
        x, y = _broken_line(points)
        broken |= bool(np.isnan(x).any())
        ax.plot(x, y, marker=markers[i % len(markers)], ls=LINESTYLES[i % len(LINESTYLES)], label=label)
    if dense is not None:
        ax.axhline(100 * dense, color="gray", ls="--", lw=1, label=f"float ({dense:.2%})")
    ax.set(xlabel="bits per weight (residual stages)", ylabel="test accuracy (%)",
           title=title or "Accuracy against precision")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", title="lines join measured neighbouring widths only" if broken else None,
              title_fontsize="small")
    return fig


def _broken_line(points: dict) -> tuple[np.ndarray, np.ndarray]:
    """x (bits) and y (accuracy in %) of the measured points in increasing bits, with a NaN
    between two points whose widths are not neighbours: matplotlib breaks the line there."""
    x, y = [], []
    for b in sorted(points):
        if x and b - x[-1] > 1:
            x.append(np.nan)
            y.append(np.nan)
        x.append(float(b))
        y.append(100 * points[b])
    return np.array(x), np.array(y)


def _flat(x) -> np.ndarray:
    """A tensor or array as a flat float64 numpy array (detached, on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64).ravel()
