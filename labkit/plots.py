"""Plot helpers shared by the labs (matplotlib). Every function returns its Figure.

In a notebook, assign the result (``fig = plot_runs(...)``): the inline backend shows the figure
once at the end of the cell; a bare Figure as the last expression would be shown a second time.

Lab 1 (optimisation trajectories), one run = ``(losses, weights)``: losses (T,) and weights
(T, d), entry t being the state after step t + 1.
  plot_runs     small multiples: one row per run, log L on the left, each w_j on the right
  plot_overlay  several runs on the same two panels (one line style per run)

Lab 2: plot_sparsity  per-layer sparsity as grouped bars, several models side by side
       plot_accuracy_vs_sparsity  test accuracy of one-shot pruned models against the fraction pruned
       plot_histories  test accuracy per epoch of several training runs (labkit.train.History)
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_runs", "plot_overlay", "plot_sparsity", "plot_accuracy_vs_sparsity", "plot_histories"]

LINESTYLES = ("-", "--", ":", "-.")


def _trajectory(run, steps):
    """Unpack and check one run; keep its first `steps` steps (all if None)."""
    losses, weights = (np.asarray(a, dtype=float) for a in run)
    if losses.ndim != 1 or weights.ndim != 2 or len(losses) != len(weights):
        raise ValueError("a run must be (losses, weights) with shapes (T,) and (T, d); got "
                         f"{losses.shape} and {weights.shape}")
    if steps is not None:
        if not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1 or None (all steps); got {steps!r}")
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


def plot_overlay(runs, *, steps=None, target=None, title=None):
    """Several runs on the same two panels: log L vs step (one colour per run) and every
    element of W vs step (colour = element, line style = run). Best for 2-4 runs.

    Arguments as in `plot_runs`.
    """
    _check_runs(runs)
    if len(runs) > len(LINESTYLES):
        raise ValueError(f"plot_overlay draws at most {len(LINESTYLES)} runs (one line style "
                         f"each); got {len(runs)}: use plot_runs for more")
    fig, (ax_l, ax_w) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    if target is not None:
        _draw_target(ax_w, target)
    for i, (label, run) in enumerate(runs.items()):
        x, losses, weights = _trajectory(run, steps)
        _draw_loss(ax_l, x, losses, color=f"C{i}", ls=LINESTYLES[i], label=label)
        _draw_weights(ax_w, x, weights, ls=LINESTYLES[i], labels=(i == 0))
        ax_w.plot([], [], color="k", ls=LINESTYLES[i], label=label)  # legend entry: style = run
    ax_l.legend(fontsize="small")
    ax_l.set_title("loss", fontsize="medium")
    ax_w.set_title("weights", fontsize="medium")
    ax_w.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


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


def plot_histories(histories, *, dense=None, ax=None, title=None):
    """Test accuracy per epoch of several runs, ``histories`` = {label: labkit.train.History}.

    Epochs that do not count for the best accuracy (``eligible`` False: before the final sparsity)
    are drawn with hollow markers; each run's best eligible epoch is starred."""
    if not isinstance(histories, dict) or not histories:
        raise ValueError("histories must be a non-empty dict {label: History}")
    fig, ax = _figure(ax, (7, 4))
    for label, h in histories.items():
        epochs = h.column("epoch")
        acc = [100 * a for a in h.column("test_acc")]
        eligible = [r.get("eligible", True) for r in h.records]
        (line,) = ax.plot(epochs, acc, "-", label=f"{label} (best {h.best_acc:.2%})")
        ax.plot([e for e, ok in zip(epochs, eligible) if ok], [a for a, ok in zip(acc, eligible) if ok],
                "o", color=line.get_color(), ms=4)
        ax.plot([e for e, ok in zip(epochs, eligible) if not ok], [a for a, ok in zip(acc, eligible) if not ok],
                "o", color=line.get_color(), ms=4, mfc="none")
        if h.best_epoch is not None:
            ax.plot(h.best_epoch, 100 * h.best_acc, "*", color=line.get_color(), ms=12)
    if dense is not None:
        ax.axhline(100 * dense, color="gray", ls="--", lw=1, label=f"dense ({dense:.2%})")
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=title or "Test accuracy per epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _figure(ax, size):
    """A new (Figure, Axes) of ``size`` inches, or the Figure of the given Axes."""
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    return fig, ax
