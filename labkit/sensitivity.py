"""Per-layer sensitivity and the allocations built on it: sparsity per layer at a total (Lab 2 (f)),
bits per layer at a byte budget (Lab 3 (g)).

A scan changes one layer at a time, every other layer as it was, and records the accuracy without
any fine-tuning (Li et al., ICLR 2017, scan pruning this way; for quantization, Wu et al. 2020 quantize
one layer at a time). Scans choose something, so they run on validation images, never on the
images a result is reported on.

Sparsity (`allocate_sparsity`), the least summed drop: a layer's drop d(s) = base - accuracy at
sparsity s, made non-decreasing in s (a later point never counts as less harmful than an earlier
one) and linear between the scanned points, with d(0) = 0. A scanned point within the noise of the
unchanged model (``noise``, default one binomial standard error of its accuracy on the scan's
images, `Scan.noise`) counts as no drop, on either side of it: a few images gained or lost by chance
must not make one layer look free and another costly. The allocation minimises the sum of the
layers' drops with the pruned weights adding up to the total exactly: a weight is pruned where the
scan says it costs least, so a large layer, where one unit of sparsity removes many weights, gives
more than a small one of the same curve. Both allocations minimise a summed drop under a budget
(weights here, bytes for the bits); the sum assumes that the layers' drops add up.

Bits (`allocate_bits`): every layer has a measured drop at each candidate width and a size in the
bytes of Lab 4's file format (`layer_bytes`: codes, codebooks and the rest of the layer's record,
as `labkit.compress.size_report` counts them); the allocation minimises the sum of the drops with
the sizes adding up to at most the budget. It is exact (a Pareto frontier of (bytes, drop) over
the layers, sizes in whole bits), so the total is never a bit above the budget. Drops come from
`Scan.bit_drops`: non-increasing in the width, as the sparsity curves are non-decreasing.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import checks, compress, prune, quant, settings
from .data import Split
from .layers import original, select
from .progress import bar as progress_bar
from .stats import binomial_se
from .tables import table
from .train import evaluate

__all__ = ["Scan", "prune_scan", "quant_scan", "allocate_sparsity", "predicted_drop", "Additivity", "additivity",
           "layer_bytes", "allocate_bits", "plot_scan"]


@dataclass(frozen=True)
class Scan:
    """A scan's result: ``accuracy[layer][i]`` at ``points[i]`` (a sparsity, or a bit width) with
    only that layer changed; ``base`` the unchanged model's accuracy on the same ``images``;
    ``sizes`` each layer's number of weights; ``kind`` "sparsity" or "bits"."""

    kind: str
    points: tuple
    accuracy: dict
    base: float
    sizes: dict
    images: int

    @property
    def noise(self) -> float:
        """One binomial standard error of the unchanged model's accuracy on the scan's images: the
        noise floor `allocate_sparsity` and `predicted_drop` use by default."""
        return binomial_se(self.base, self.images)

    def within_noise(self, noise: float | None = None) -> dict[str, list]:
        """{layer: [the scanned points whose accuracy lies within ``noise`` of the unchanged model's]}."""
        noise = self.noise if noise is None else noise
        return {name: [p for p, d in zip(self.points, self.drop(name)) if abs(d) <= noise] for name in self.accuracy}

    def drop(self, layer: str) -> np.ndarray:
        """base - accuracy at each point (positive: the change costs accuracy)."""
        return self.base - np.asarray(self.accuracy[layer], dtype=float)

    def table(self) -> str:
        """One row per layer, one column per point, and a line with the noise of one accuracy."""
        head = ["layer", "weights"] + [f"{p:g}" if self.kind == "sparsity" else f"{p} bits" for p in self.points]
        rows = [[name, self.sizes[name]] + list(acc) for name, acc in self.accuracy.items()]
        return (table(rows, head, floatfmt=".2%") + f"\nunchanged model {self.base:.2%}; one image = "
                f"{1 / self.images:.2%}, one standard error near it {binomial_se(self.base, self.images):.2%}")

    def bit_drops(self) -> dict[str, dict[int, float]]:
        """{layer: {width: drop}} of a bits scan, made non-increasing in the width (a noisy point never
        makes fewer bits look less harmful than more), for `allocate_bits`."""
        if self.kind != "bits":
            raise ValueError(f"bit_drops needs a bits scan (kind 'bits'), got kind {self.kind!r}")
        _check_scan(self, "bit_drops")
        out = {}
        for name in self.accuracy:
            d = self.drop(name)[::-1]                           # widest first
            out[name] = dict(zip(self.points[::-1], np.maximum.accumulate(d).tolist()))
        return {name: dict(sorted(v.items())) for name, v in out.items()}


def _points(name, values, check) -> tuple:
    values = tuple(values)
    if not values:
        raise ValueError(f"{name}: give at least one value")
    values = tuple(check(v) for v in values)
    if list(values) != sorted(set(values)):
        raise ValueError(f"{name} must be increasing without repeats, got {values}")
    return values


def _scan(net, split, points, pairs, apply, kind, desc, progress) -> Scan:
    if not isinstance(split, Split):
        raise ValueError(f"a scan needs a labkit.data.Split (validation images), got {type(split).__name__}")
    mode = settings.progress() if progress is None or progress is True else progress
    mode = "off" if progress is False else mode
    base = evaluate(net, split)
    accuracy = {}
    with progress_bar(len(pairs) * len(points), desc, mode=mode, unit="model") as bar:
        for name, module in pairs:
            accuracy[name] = []
            for p in points:
                accuracy[name].append(apply(name, module, p))
                bar.update(1)
    sizes = {name: original(module).numel() for name, module in pairs}
    return Scan(kind, tuple(points), accuracy, base, sizes, len(split))


def prune_scan(net: nn.Module, split: Split, sparsities, *, layers=None, progress=None) -> Scan:
    """Accuracy on ``split`` with one layer at a time pruned to each of ``sparsities`` (the per-layer
    rule of `labkit.prune.prune_by_percentage`), every other layer untouched, no fine-tuning.
    layers: default every prunable layer. ``net`` is not changed (the scan prunes a copy).
    Returns a `Scan` of kind "sparsity"."""
    points = _points("sparsities", sparsities, lambda q: checks.fraction("sparsity", q))
    if not isinstance(split, Split):
        raise ValueError(f"a scan needs a labkit.data.Split (validation images), got {type(split).__name__}")
    work = copy.deepcopy(net)
    pairs = select(work, None if layers is None else [n for n, _ in select(net, layers)], what="scan")

    def apply(name, module, q):
        stored = original(module)
        saved = stored.detach().clone()
        masks = prune.masks(work).get(name)
        saved_mask = None if masks is None else masks.clone()
        prune.prune_by_percentage(work, q, layers=[(name, module)], hold=saved_mask is not None)
        try:
            return evaluate(work, split)
        finally:
            with torch.no_grad():
                stored.copy_(saved)
                if saved_mask is not None:
                    prune.set_mask(module, saved_mask)
    return _scan(work, split, points, pairs, apply, "sparsity", "sensitivity (pruning)", progress)


def quant_scan(net: nn.Module, split: Split, bits, *, layers=None, progress=None, **scheme) -> Scan:
    """Accuracy on ``split`` with one layer at a time quantized to each width of ``bits``
    (`labkit.quant.bits`, ``scheme``: its symmetric / mask_aware / zero options), every other layer
    as it is. layers: default `labkit.quant.quantizable_layers`. ``net`` is left as it was.
    Returns a `Scan` of kind "bits"."""
    points = _points("bits", bits, lambda b: checks.integer("bits", b, minimum=1, maximum=16))
    pairs = quant.selected_layers(net, layers)

    def apply(name, module, b):
        with quant.bits(net, b, layers=[(name, module)], **scheme):
            return evaluate(net, split)
    return _scan(net, split, points, pairs, apply, "bits", "sensitivity (bits)", progress)


# --- sparsity per layer ------------------------------------------------------------------------

def _check_scan(scan, what: str) -> None:
    """A Scan that the allocations can trust: ValueError naming what is wrong (a hand-made or edited
    Scan: points not increasing, an accuracy NaN or outside [0, 1], lengths that differ, sizes that
    are not positive counts) instead of negative counts or an allocation computed from NaN."""
    if not isinstance(scan, Scan):
        raise ValueError(f"{what} needs a sensitivity.Scan (prune_scan or quant_scan), got {type(scan).__name__}")
    points = list(scan.points)
    if scan.kind == "sparsity":
        good = all(isinstance(p, (int, float)) and not isinstance(p, bool) and 0 < p <= 1 for p in points)
    else:
        good = all(isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 16 for p in points)
    if not points or not good or points != sorted(set(points)):
        raise ValueError(f"{what}: the scan's points must be increasing {'sparsities in (0, 1]' if scan.kind == 'sparsity' else 'bit widths in 1..16'}"
                         f", at least one; got {scan.points!r}")
    def fraction(v):
        return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) and 0 <= v <= 1
    if not fraction(scan.base):
        raise ValueError(f"{what}: the scan's base accuracy must be a fraction in [0, 1], got {scan.base!r}")
    if not scan.accuracy or set(scan.accuracy) != set(scan.sizes):
        raise ValueError(f"{what}: the scan's accuracy and sizes must name the same layers, at least one; got "
                         f"{sorted(scan.accuracy)} and {sorted(scan.sizes)}")
    for name, acc in scan.accuracy.items():
        acc = list(acc)
        if len(acc) != len(points) or not all(fraction(a) for a in acc):
            raise ValueError(f"{what}: layer {name!r} must have one accuracy in [0, 1] per point ({len(points)}), "
                             f"got {acc!r}")
        size = scan.sizes[name]
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
            raise ValueError(f"{what}: layer {name!r} must have a positive number of weights, got {size!r}")


def _noise(scan: Scan, noise) -> float:
    if noise is None:
        return scan.noise
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < 1:
        raise ValueError(f"noise must be an accuracy difference in [0, 1) (e.g. 0.01 for one point) or None "
                         f"(one standard error, Scan.noise), got {noise!r}")
    return float(noise)


def _drop_curves(scan: Scan, noise=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{layer: (sparsities with 0 first, non-decreasing drops with 0 first)}; a drop within ``noise``
    of zero, either way, counts as zero."""
    _check_scan(scan, "allocate_sparsity")
    if scan.kind != "sparsity":
        raise ValueError(f"allocate_sparsity needs a pruning scan (kind 'sparsity'), got kind {scan.kind!r}")
    floor = _noise(scan, noise)
    curves = {}
    for name in scan.accuracy:
        s, d = np.asarray(scan.points, float), scan.drop(name)
        d = np.where(np.abs(d) <= floor, 0.0, d)
        if s[0] > 0:
            s, d = np.concatenate([[0.0], s]), np.concatenate([[0.0], d])
        curves[name] = (s, np.maximum.accumulate(np.maximum(d, 0.0)))
    return curves


def _lower_hull(s: np.ndarray, d: np.ndarray) -> list[tuple[float, float]]:
    """The lower convex hull of the points (s, d), s increasing: the convex curve below them."""
    hull = []
    for p in zip(s.tolist(), d.tolist()):
        while len(hull) >= 2 and (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0]) >= \
                (p[1] - hull[-2][1]) * (hull[-1][0] - hull[-2][0]):
            hull.pop()                                  # the middle point lies on or above the chord
        hull.append(p)
    return hull


def allocate_sparsity(scan: Scan, pruned: int, *, noise: float | None = None) -> dict[str, int]:
    """Per-layer counts of weights to prune, adding up to exactly ``pruned``, with the least summed
    drop that the scan predicts (module docstring); prune them with `labkit.prune.prune_by_counts`.

    Each layer's drop curve (non-decreasing, linear between the scanned sparsities, 0 at 0) is
    replaced by its lower convex hull; its segments cost (drop) / (weights they prune), and the
    cheapest segments of all layers are taken first until the total is reached, the last one in
    part. For convex curves that is the exact minimum of the summed drop. The counts are rounded
    by largest remainder so that they add up exactly.

    pruned: the total number of weights to prune over the scan's layers, e.g.
    ``prune.pruned_count(total weights, target)``, what one global threshold prunes. noise: drops
    within it of zero count as zero (default None: one standard error, `Scan.noise`; 0: every point
    as measured).
    Raises ValueError when the total is more than the layers can prune within the scanned range (no
    layer is pruned past the largest scanned sparsity: floor(s_max n) weights at most), or for a Scan
    that is not whole (points not increasing, an accuracy NaN or outside [0, 1], lengths or layers that
    differ, sizes that are not positive counts).
    """
    curves = _drop_curves(scan, noise)
    n = {name: scan.sizes[name] for name in curves}
    pruned = checks.integer("pruned", pruned, minimum=0, maximum=sum(n.values()))
    segments = []                                       # (drop per weight, layer order, layer, weights)
    for order, (name, (s, d)) in enumerate(curves.items()):
        hull = _lower_hull(s, d)
        for (s0, d0), (s1, d1) in zip(hull, hull[1:]):
            weights = (s1 - s0) * n[name]
            segments.append(((d1 - d0) / weights, order, name, weights))
    # never past the largest scanned sparsity, where the scan says nothing
    most_of = {name: min(n[name], math.floor(s[-1] * n[name] + 1e-9)) for name, (s, _) in curves.items()}
    if pruned > sum(most_of.values()):
        raise ValueError(f"pruning {pruned} weights needs more than the scanned sparsities allow "
                         f"({sum(most_of.values())} at most); scan up to a higher sparsity")
    real, left = dict.fromkeys(curves, 0.0), float(pruned)
    for _, _, name, weights in sorted(segments):        # cheapest first; ties: model order
        take = min(weights, left)
        real[name] += take
        left -= take
        if left <= 0:
            break
    counts = {name: min(most_of[name], math.floor(x + 1e-9)) for name, x in real.items()}
    while sum(counts.values()) < pruned:                # largest remainders first, within the scanned range
        name = min((m for m in curves if counts[m] < most_of[m]), key=lambda m: (-(real[m] - counts[m]), m))
        counts[name] += 1

    while sum(counts.values()) > pruned:                # rounding error the other way
        name = max((m for m in counts if counts[m] > 0), key=lambda m: counts[m] - real[m])
        counts[name] -= 1
    return counts


def predicted_drop(scan: Scan, counts: dict, *, noise: float | None = None) -> float:
    """The summed drop the scan predicts for per-layer ``counts`` (its non-decreasing, linear-between-
    points curves, not their hull, with the same ``noise`` floor): what `allocate_sparsity`
    minimises, for comparing allocations."""
    curves = _drop_curves(scan, noise)
    if set(counts) != set(curves):
        raise ValueError(f"counts must name the scan's layers, {sorted(curves)}; got {sorted(counts)}")
    for name in curves:      # NaN, negative or more than the layer holds: np.interp would clamp it without a word
        checks.integer(f"predicted_drop: counts[{name!r}] (weights pruned in the layer)", counts[name], minimum=0,
                       maximum=int(scan.sizes[name]))
    return float(sum(np.interp(counts[name] / scan.sizes[name], s, d) for name, (s, d) in curves.items()))


@dataclass(frozen=True)
class Additivity:
    """What the scan's summed drops predicted for a model pruned in several layers at once, against the
    drop measured on the scan's images. ``se``: the noise of their difference, each layer's scanned
    accuracy and the measured one counted as independent binomial measurements (paired ones vary
    less, so this is an upper bound). ``str()`` is the verdict."""
    label: str
    predicted: float
    measured: float
    se: float

    def __str__(self) -> str:
        left = f"{self.label}: the scan predicts a drop of {self.predicted:.2%}, the model pruned in every layer at once " \
               f"drops {self.measured:.2%}"
        gap, margin = self.measured - self.predicted, 2 * self.se
        if abs(gap) <= margin:
            return f"{left}: the summed drops predict it within the noise (2 standard errors, {margin:.2%})."
        how = "more" if gap > 0 else "less"
        times = f" ({self.measured / self.predicted:.1f} times the sum)" if self.predicted > 0 else ""
        return (f"{left}{times}: the drops do not add up; pruned together, the layers cost {how} than the sum "
                f"of each pruned alone, by {abs(gap):.2%} (beyond 2 standard errors, {margin:.2%}).")


def additivity(scan: Scan, counts: dict, accuracy: float, *, label: str, noise: float | None = None) -> Additivity:
    """Test the assumption `allocate_sparsity` rests on: ``accuracy`` is the measured accuracy, on the
    scan's images, of the model with every layer pruned by ``counts`` at once; the prediction is
    `predicted_drop` (with the same ``noise`` floor)."""
    accuracy = float(accuracy)
    if not 0 <= accuracy <= 1:
        raise ValueError(f"additivity: accuracy is a fraction in [0, 1] measured on the scan's images, got {accuracy!r}")
    predicted = predicted_drop(scan, counts, noise=noise)
    curves = _drop_curves(scan, noise)
    var = binomial_se(accuracy, scan.images) ** 2
    for name, (s, d) in curves.items():
        drop = float(np.interp(counts[name] / scan.sizes[name], s, d))
        if drop > 0:                     # a layer the scan says is free adds no measured term
            var += binomial_se(min(max(scan.base - drop, 0.0), 1.0), scan.images) ** 2
    return Additivity(label, predicted, scan.base - accuracy, math.sqrt(var))


# --- bits per layer ----------------------------------------------------------------------------

def layer_bytes(net: nn.Module, bits, *, layers=None, index_bits: int = 4, huffman: bool = False,
                **scheme) -> dict[str, dict[int, float]]:
    """{layer: {width: bytes of its weight in `labkit.compress`'s format}} for each width of
    ``bits`` (the layer's whole record as `compress.size_report` counts it: codes and codebook,
    indices where stored as CSR; with ``huffman``, Huffman-coded where smaller). The default counts
    fixed-width codes plus codebooks, so that a layer's size depends on its width and the levels
    its weights use, not on how often each occurs. A layer's size depends on its own width only, so
    a mixed allocation's size is the sum over the layers. ``scheme``: `labkit.quant.set_bits`'s
    options (a student's ``fn`` included). ``net`` is not changed."""
    points = _points("bits", bits, lambda b: checks.integer("bits", b, minimum=1, maximum=16))
    names = [name for name, _ in quant.selected_layers(net, layers)]
    out = {name: {} for name in names}
    for b in points:
        report = compress.size_report(quant.quantized(net, b, layers=names, **scheme).float(),
                                      index_bits=index_bits, huffman=huffman)
        sizes = {layer.name: layer.total for layer in report.layers}
        for name in names:
            out[name][b] = sizes[name] / 8
    return out


def allocate_bits(drops: dict, sizes: dict, budget: float) -> dict[str, int]:
    """Bits per layer minimising the summed drop with the summed size at most ``budget``.

    drops: {layer: {width: accuracy drop}} (from a `quant_scan`: ``scan.drop(layer)``);
    sizes: {layer: {width: bytes}} (`layer_bytes`) over the same layers and widths; budget: bytes.
    Exact: the Pareto frontier of (size, drop) over the layers in order; sizes are counted in bits, so
    the total is at most the budget, never a bit above it. Ties: the smaller size,
    then the wider bits in the earlier layers. Raises ValueError when even the smallest widths
    exceed the budget, or the tables do not match.
    """
    if not drops or set(drops) != set(sizes):
        raise ValueError("drops and sizes must name the same layers")
    for name in drops:
        if set(drops[name]) != set(sizes[name]) or not drops[name]:
            raise ValueError(f"layer {name!r}: drops and sizes must have the same widths")
        for b in drops[name]:
            d, size = drops[name][b], sizes[name][b]
            if not (isinstance(d, (int, float, np.floating)) and math.isfinite(d)):
                raise ValueError(f"layer {name!r}, {b} bits: the drop must be a finite number, got {d!r}")
            if not (isinstance(size, (int, float, np.floating, np.integer)) and math.isfinite(size) and size > 0):
                raise ValueError(f"layer {name!r}, {b} bits: the size must be a positive number of bytes, got {size!r}")
    budget = checks.number("budget", budget)
    scale = 8                                                   # sizes in bits: exact integers
    front = [(0, 0.0, ())]                                      # (size, drop, widths)
    cap = math.floor(budget * scale + 1e-9)                     # never above the budget
    for name in drops:
        options = sorted(drops[name], reverse=True)
        grown = [(s + round(sizes[name][b] * scale), d + float(drops[name][b]), w + (b,))
                 for s, d, w in front for b in options]
        grown = [g for g in grown if g[0] <= cap]
        if not grown:
            smallest = sum(min(v.values()) for v in sizes.values())
            raise ValueError(f"the budget of {budget:,.1f} bytes is below the smallest allocation "
                             f"({smallest:,.1f} bytes)")
        grown.sort(key=lambda g: (g[0], g[1]))
        front, best = [], math.inf
        for g in grown:                                         # keep what no cheaper choice beats
            if g[1] < best - 1e-12:
                front.append(g)
                best = g[1]
    size, drop, widths = min(front, key=lambda g: (g[1], g[0]))
    return dict(zip(drops, widths))


def plot_scan(scan: Scan, *, title=None):
    """One curve per layer: accuracy against the scanned sparsity or width, the layer's weight count
    in the legend, the unchanged model as a dashed line. Returns the Figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.6, 4.6))
    for i, (name, acc) in enumerate(scan.accuracy.items()):
        ax.plot(scan.points, np.asarray(acc) * 100, marker="o", ms=3, lw=1.2, color=plt.cm.viridis(i / max(1, len(scan.accuracy) - 1)),
                label=f"{name} ({scan.sizes[name]:,})")
    ax.axhline(scan.base * 100, ls="--", color="k", lw=1, label=f"unchanged ({scan.base:.2%})")
    ax.set_xlabel("sparsity of the one layer pruned" if scan.kind == "sparsity" else "bits of the one layer quantized")
    ax.set_ylabel(f"accuracy (%) on {scan.images} validation images")
    ax.legend(fontsize=6.5, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="layer (weights)",
              title_fontsize=7)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    fig.subplots_adjust(left=0.08, right=0.62, bottom=0.12, top=0.92 if title else 0.97)
    return fig
