"""Magnitude pruning of the Conv2d and Linear weights of a model (Lab 2), with masks that live
with the layers.

The rule (Lab 2 (b), book/lab2_theory.md): for a fraction q in [0, 1], the threshold is the q-quantile of |w|
with linear interpolation, exactly as ``numpy.quantile(|w|, q)`` (= ``numpy.percentile(|w|, 100 q)``)
and ``torch.quantile``: with the n values sorted, v_0 <= ... <= v_{n-1}, and p = q (n - 1),

    threshold = v_floor(p) + (p - floor(p)) (v_ceil(p) - v_floor(p)),

and every weight with |w| <= threshold is pruned (set to zero). The rule is taken literally:
ties at the threshold are all pruned, q = 0 prunes the weight(s) of the smallest |w| (the threshold
is min |w|), q = 1 prunes every weight. `prune_by_percentage` computes one threshold per layer,
`global_prune_by_percentage` one threshold from all prunable weights together.

Masks. With ``hold=True`` (the default) a pruned layer gets a `Mask` parametrization
(``torch.nn.utils.parametrize``): the layer's ``weight`` becomes ``original * mask``, where
``original`` is the very Parameter the layer had (an optimizer built before pruning still updates
it) and ``mask`` a bool buffer (True = kept). So pruned weights stay exactly zero through any
training by construction, and the gradient of ``original`` is zero where the mask is False.
Pruning also zeroes ``original`` there, so that `make_permanent` or reading ``original`` gives
zeros. With ``hold=False`` the pruned weights are zeroed in place and nothing holds them: the
next optimizer steps may make them non-zero again (iterative pruning before its last step).

Other parametrizations (Lab 3's quantizer) may be stacked on the same weight: the mask is always
kept first in the layer's list, so they see the masked float weight ``original * mask``, and
which weights to prune is always decided on that masked float weight, never on a quantized one.

Masks are in ``net.state_dict()`` (keys ``<layer>.parametrizations.weight.0.mask``, beside
``<layer>.parametrizations.weight.original``); ``labkit.checkpoints.load`` re-creates them (and
the quantizers) on a fresh model.

A student's own functions (the exercises of Lab 2, checked by ``labkit.exercises``): each pruning
function takes the piece the assignment asks for and uses the reference below when it is not given:
``rule(w, q)`` (the keep mask of one layer, `keep_mask`), ``threshold(weights, q)`` (the global
threshold, `global_threshold`), ``mask_fn(w, mask)`` (how a held mask applies, `apply_mask`), and
`IterativePruning`'s ``schedule(e, steps, target)`` (`linear_schedule`); `total_sparsity` is the
reference of the sparsity evaluation.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from . import checks
from .data import Split, batches
from .layers import add, find, hand_schedule_mask, original, remove, select
from .tables import table
from .train import Callback

__all__ = [
    "Mask", "magnitude_threshold", "keep_mask", "global_threshold", "apply_mask", "linear_schedule",
    "total_sparsity", "prune_by_percentage", "global_prune_by_percentage", "pruned_count", "prune_by_counts",
    "set_mask", "masks", "make_permanent", "Sparsity", "sparsity", "sparsity_table",
    "RecordSparsity", "IterativePruning", "zero_gradient_weights",
]


class Mask(nn.Module):
    """Parametrization W -> W * mask, with ``mask`` a bool buffer of W's shape (True = kept).

    The gradient with respect to W is ``grad * mask``: zero at pruned positions. ``fn(W, mask)``,
    when given, computes it instead (a student's `apply_mask`; not saved, a loaded model uses W * mask).
    """

    def __init__(self, mask: torch.Tensor, fn=None):
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))
        self.fn = _callable("mask_fn", fn)

    def forward(self, W: torch.Tensor) -> torch.Tensor:
        return W * self.mask if self.fn is None else self.fn(W, self.mask)

    def extra_repr(self) -> str:
        kept = int(self.mask.sum())
        return f"kept={kept}/{self.mask.numel()}"


# --- the threshold rule --------------------------------------------------------------------------

def _callable(name: str, fn):
    if fn is not None and not callable(fn):
        raise ValueError(f"{name} must be a function (or None for labkit's own), got {type(fn).__name__}")
    return fn

def _check_q(q) -> float:
    return checks.fraction("q", q, hint="; for a percentage p pass q = p / 100 (0.8 prunes 80 % of "
                                        "the weights)")


def _work_dtype(device: torch.device) -> torch.dtype:
    # float64 makes the interpolation match numpy's to the last bit; Apple MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def magnitude_threshold(values: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile of |values| (all elements), linear interpolation, as a 0-d tensor.

    Equal to ``numpy.quantile(abs(values), q)`` and to ``torch.quantile``, computed with
    ``torch.sort`` so that it has no size limit (``torch.quantile`` refuses inputs of more than
    2**24 elements) and in float64 (float32 on MPS). The interpolation is written as numpy's:
    a + t (b - a) for t < 1/2, b - (1 - t)(b - a) otherwise, so that t = 1 gives b exactly.
    Stays on the device of ``values``: no host sync.
    """
    q = _check_q(q)
    a = values.detach().flatten().abs().to(_work_dtype(values.device))  # (n,)
    n = a.numel()
    if n == 0:
        raise ValueError("magnitude_threshold: no values to take a quantile of")
    v = torch.sort(a).values
    p = q * (n - 1)  # the virtual index
    lo = math.floor(p)
    hi = min(lo + 1, n - 1)
    t = p - lo
    d = v[hi] - v[lo]
    return v[lo] + t * d if t < 0.5 else v[hi] - (1.0 - t) * d


# --- the layers and their weights ----------------------------------------------------------------

def keep_mask(w: torch.Tensor, q: float) -> torch.Tensor:
    """The keep mask of one layer (Lab 2 (b)): True where |w| > the q-quantile of |w| (`magnitude_threshold`);
    every weight with |w| <= the threshold, ties included, is pruned."""
    threshold = magnitude_threshold(w, q)
    return w.detach().abs().to(threshold.dtype) > threshold


def global_threshold(weights, q: float) -> torch.Tensor:
    """One threshold for all layers together (Lab 2 (e)): the q-quantile of |w| over every weight of
    ``weights`` (a list of tensors), as a 0-d tensor."""
    weights = list(weights)
    if not weights:
        raise ValueError("global_threshold: no weights")
    device = weights[0].device
    return magnitude_threshold(torch.cat([w.detach().flatten().to(device) for w in weights]), q)


def apply_mask(w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The weight a held mask lets through (Lab 2 (c)): w * mask, so the gradient reaching w is zero
    at pruned positions."""
    return w * mask


def linear_schedule(e: int, steps: int, target: float) -> float:
    """The fraction pruned at step e = 1..steps of the iterative schedule (Lab 2 (d)): target * e / steps."""
    return target * e / steps


def total_sparsity(weights) -> float:
    """The fraction of exact zeros over all of ``weights`` (a list of tensors) together: each layer
    weighs by its size (Lab 2 (c)); as ``sparsity(net).total`` for the prunable weights of a model."""
    weights = list(weights)
    n = sum(w.numel() for w in weights)
    if n == 0:
        raise ValueError("total_sparsity: no weights")
    return sum(int((w == 0).sum()) for w in weights) / n


def _one_number(value, what: str) -> float:
    """A student's one-number result (a float, a 0-d or one-element tensor or array) as a float."""
    if (isinstance(value, torch.Tensor) and value.numel() == 1) or \
            (isinstance(value, (np.ndarray, np.generic)) and value.size == 1):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must return one number (a float or a 0-d tensor), got {value!r:.80}")
    return float(value)


def _student_keep(rule, W: torch.Tensor, q: float, name: str) -> torch.Tensor:
    """The keep mask of a student's ``rule(w, q)``, checked: a bool tensor of the weight's shape."""
    keep = rule(W.clone(), q)
    if isinstance(keep, np.ndarray) and keep.dtype == bool:
        keep = torch.from_numpy(keep)                   # a numpy mask is a mask too
    if not isinstance(keep, torch.Tensor) or keep.dtype != torch.bool or tuple(keep.shape) != tuple(W.shape):
        got = (f"{keep.dtype} of shape {tuple(keep.shape)}" if isinstance(keep, torch.Tensor)
               else type(keep).__name__)
        raise ValueError(f"rule(w, q) must return a bool tensor of the weight's shape {tuple(W.shape)} "
                         f"(True = kept), got {got} for layer {name!r}")
    return keep.to(W.device)


def _mask_of(module: nn.Module) -> Mask | None:
    """The layer's Mask parametrization, or None."""
    return find(module, Mask)


def _float_weight(module: nn.Module) -> torch.Tensor:
    """original * mask: what pruning ranks; other parametrizations (a quantizer) are left out."""
    W = original(module).detach()
    m = _mask_of(module)
    return W if m is None else W * m.mask


def _check_finite(pairs, weights) -> None:
    """ValueError naming every layer whose (masked float) weight holds NaN; one host sync."""
    device = weights[0].device
    bad = torch.stack([torch.isnan(w).any().to(device) for w in weights]).tolist()
    nan_layers = [name for (name, _), b in zip(pairs, bad) if b]
    if nan_layers:
        raise ValueError(f"NaN weights in layer(s) {nan_layers}: a quantile of them is undefined. "
                         f"Nothing was pruned; check the training run that produced these weights "
                         f"(learning rate, loss) or reload a good checkpoint.")


# --- pruning ---------------------------------------------------------------------------------------

def _apply(module: nn.Module, keep: torch.Tensor, hold: bool, optimizer, mask_fn=None) -> torch.Tensor:
    """Zero the pruned entries of the stored weight; with hold, (re)set the layer's mask.

    Returns the layer's kept mask (bool, True = kept). An existing mask is never loosened:
    keep is and-ed with it, and it is tightened even with hold=False.
    """
    stored = original(module)
    existing = _mask_of(module)
    with torch.no_grad():
        if existing is not None:
            keep = keep & existing.mask
        stored.masked_fill_(~keep, 0.0)
        if existing is not None or hold:
            set_mask(module, keep, fn=mask_fn)
        if optimizer is not None:
            _clear_state(optimizer, stored, keep)
    return keep


def set_mask(module: nn.Module, keep: torch.Tensor, fn=None) -> Mask:
    """Give the layer the mask ``keep`` (bool of the weight's shape, True = kept): its `Mask` is
    overwritten, or a new one is put first among the weight's parametrizations, so that another
    one (a quantizer) sees original * mask and the mask's state-dict key is always
    ``<layer>.parametrizations.weight.0.mask``. The stored weight is not changed (pruning zeroes
    it; a checkpoint being loaded brings its own). ``fn``: a student's `apply_mask` for the Mask
    (None: keep the existing Mask's, or W * mask). Returns the Mask."""
    fn = _callable("mask_fn", fn)
    W = original(module)
    if not isinstance(keep, torch.Tensor) or tuple(keep.shape) != tuple(W.shape):
        got = tuple(keep.shape) if isinstance(keep, torch.Tensor) else type(keep).__name__
        raise ValueError(f"a mask must have the weight's shape {tuple(W.shape)}, got {got}")
    keep = keep.to(device=W.device, dtype=torch.bool)
    existing = _mask_of(module)
    with torch.no_grad():
        if existing is not None:
            existing.mask.copy_(keep)
            if fn is not None:
                existing.fn = fn
            return existing
    mask = Mask(keep.clone(), fn)
    add(module, mask, first=True)
    return mask


def _clear_state(optimizer: torch.optim.Optimizer, param: torch.Tensor, keep: torch.Tensor) -> None:
    """Zero the optimizer's per-element state (momentum, Adam moments) at pruned positions.

    Without this a momentum buffer built up before pruning keeps moving `original` at masked
    positions for a while (harmless for the forward pass, which multiplies by the mask, but
    then `original` is no longer zero there).
    """
    for value in optimizer.state.get(param, {}).values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            value.masked_fill_(~keep, 0)


def prune_by_percentage(net: nn.Module, q: float, *, hold: bool = True, optimizer=None,
                        layers=None, rule=None, mask_fn=None) -> dict[str, torch.Tensor]:
    """Per-layer magnitude pruning: in each prunable layer, prune every weight with
    |w| <= the q-quantile of that layer's |w| (see the module docstring for the formula).
    The name is the assignment's; ``q`` is a fraction (0.8 prunes 80 %), not a percentage.

    Args:
        q: fraction in [0, 1]. q = 0 prunes the weights equal to the layer's smallest |w|;
           q = 1 prunes all. A layer already masked is ranked on original * mask (its pruned
           weights count as zeros), and its mask is tightened, never loosened.
        hold: True: a `Mask` parametrization holds the pruned weights at zero from now on.
              False: zero them in place only; training may regrow them.
        optimizer: if given, its per-element state (momentum, ...) is zeroed at pruned positions.
        layers: the layers to prune, as names or (name, module) pairs (one name alone: that
                layer); default ``labkit.layers.prunable_layers(net)`` (every Conv2d and Linear,
                model order).
        rule: a student's ``rule(w, q)`` returning a layer's bool keep mask (default `keep_mask`).
        mask_fn: a student's ``mask_fn(w, mask)`` for the held masks (default `apply_mask`).

    Returns {layer name: bool mask (True = kept)} of what was applied, in model order.
    Raises ValueError, before changing anything, for q outside [0, 1] or NaN, NaN weights,
    or a model without a prunable layer.
    """
    q = _check_q(q)
    rule, mask_fn = _callable("rule", rule), _callable("mask_fn", mask_fn)
    pairs = select(net, layers, what="prune")
    weights = [_float_weight(m) for _, m in pairs]
    _check_finite(pairs, weights)
    keeps = [keep_mask(W, q) if rule is None else _student_keep(rule, W, q, name)
             for (name, _), W in zip(pairs, weights)]            # every layer's, before any is changed
    return {name: _apply(module, keep, hold, optimizer, mask_fn) for (name, module), keep in zip(pairs, keeps)}


def global_prune_by_percentage(net: nn.Module, q: float, *, hold: bool = True, optimizer=None,
                               layers=None, threshold=None, mask_fn=None) -> dict[str, torch.Tensor]:
    """Global magnitude pruning: ONE threshold, the q-quantile of |w| over all prunable weights
    together; every weight with |w| <= threshold is pruned, whatever its layer.

    Arguments, return value and errors as `prune_by_percentage`; ``threshold``: a student's
    ``threshold(weights, q)`` (default `global_threshold`). Layers whose weights are small
    compared with the others' end up sparser than q, layers with large weights denser.
    """
    q = _check_q(q)
    fn, mask_fn = _callable("threshold", threshold) or global_threshold, _callable("mask_fn", mask_fn)
    pairs = select(net, layers, what="prune")
    weights = [_float_weight(m) for _, m in pairs]
    _check_finite(pairs, weights)
    t = _one_number(fn([W.clone() for W in weights], q), "threshold(weights, q)")
    t = torch.as_tensor(t, dtype=torch.float64 if weights[0].device.type != "mps" else torch.float32)
    applied = {}
    for (name, module), W in zip(pairs, weights):
        keep = W.abs().to(t.dtype) > t.reshape(()).to(W.device)
        applied[name] = _apply(module, keep, hold, optimizer, mask_fn)
    return applied


def pruned_count(n: int, q: float) -> int:
    """How many of n weights the quantile rule prunes at fraction q when no two |w| tie:
    floor(q (n - 1)) + 1, the weights at or below the interpolated threshold (q = 1: all n)."""
    q = _check_q(q)
    n = checks.integer("n", n, minimum=1)
    return n if q == 1.0 else math.floor(q * (n - 1)) + 1


def prune_by_counts(net: nn.Module, counts: dict, *, hold: bool = True, optimizer=None) -> dict[str, torch.Tensor]:
    """Prune exactly ``counts[name]`` weights of each named layer: the ones of smallest |w|, ties
    broken by position (the earlier one goes first), so the total is exactly the sum whatever the
    weights. Lab 2 (f) prunes a per-layer allocation this way (`labkit.sensitivity.allocate_sparsity`).

    counts: {layer name: int in 0..numel}; a layer already masked is ranked on original * mask and
    its mask is tightened, never loosened (its pruned weights count among the smallest, so a count
    below what it has pruned already changes nothing there). hold, optimizer: as `prune_by_percentage`.
    Returns {layer name: bool mask (True = kept)} in the order of ``counts``.
    Raises ValueError, before changing anything, for unknown layers, counts out of range, NaN weights.
    """
    if not isinstance(counts, dict) or not counts:
        raise ValueError(f"counts must be a non-empty dict {{layer name: weights to prune}}, got {counts!r:.80}")
    pairs = select(net, list(counts), what="prune")
    weights = [_float_weight(m) for _, m in pairs]
    _check_finite(pairs, weights)
    keeps = []
    for (name, _), W in zip(pairs, weights):
        k = checks.integer(f"counts[{name!r}]", counts[name], minimum=0, maximum=W.numel())
        order = torch.sort(W.abs().flatten(), stable=True).indices      # smallest first, ties by position
        keep = torch.ones(W.numel(), dtype=torch.bool, device=W.device)
        keep[order[:k]] = False
        keeps.append(keep.reshape(W.shape))
    return {name: _apply(module, keep, hold, optimizer) for (name, module), keep in zip(pairs, keeps)}


def masks(net: nn.Module) -> dict[str, torch.Tensor]:
    """{layer name: bool mask (True = kept)} of the layers that hold a mask, in model order."""
    return {name: m.mask for name, module in net.named_modules() if (m := _mask_of(module)) is not None}


def make_permanent(net: nn.Module) -> nn.Module:
    """Bake the masks in: every masked layer's weight becomes a plain Parameter again, holding
    zeros at pruned positions (``labkit.layers.remove(module, bake=True)``).

    The Parameter object is the same one the layer had (an optimizer keeps working), but nothing
    holds the zeros any more. Any other parametrization of that weight (a quantizer) is baked in
    too. A deep copy of ``net`` is not affected. Returns ``net``.
    """
    for _, module in list(net.named_modules()):
        if _mask_of(module) is not None:
            remove(module, bake=True)
    return net


# --- sparsity ---------------------------------------------------------------------------------------

@dataclass
class Sparsity:
    """Fraction of zero weights per prunable layer (model order) and in total.

    zeros, sizes: {layer: count}; layers: {layer: zeros / size}; total = sum(zeros) / sum(sizes),
    i.e. the layers' fractions weighted by their sizes.
    """

    zeros: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def layers(self) -> dict[str, float]:
        return {name: self.zeros[name] / self.sizes[name] for name in self.sizes}

    @property
    def total(self) -> float:
        return sum(self.zeros.values()) / sum(self.sizes.values())

    def __getitem__(self, name: str) -> float:
        return self.zeros[name] / self.sizes[name]

    def table(self) -> str:
        return sparsity_table(self)


def sparsity(net: nn.Module, *, layers=None) -> Sparsity:
    """Zeros of the effective weight (``module.weight``: what forward uses, after the mask and any
    other parametrization) in every prunable layer. One host sync for all layers."""
    pairs = select(net, layers, what="measure the sparsity of")
    with torch.no_grad():
        device = pairs[0][1].weight.device
        counts = torch.stack([(m.weight == 0).sum().to(device) for _, m in pairs]).tolist()
    return Sparsity(zeros={name: z for (name, _), z in zip(pairs, counts)},
                    sizes={name: m.weight.numel() for name, m in pairs})


def sparsity_table(results) -> str:
    """Text table: one row per layer (size, then sparsity for each result) and a 'total' row.

    results: one `Sparsity`, or {label: Sparsity} to compare models side by side (same layers).
    """
    if isinstance(results, Sparsity):
        results = {"sparsity": results}
    if not results:
        raise ValueError("sparsity_table: no result to show")
    first = next(iter(results.values()))
    for label, s in results.items():
        if list(s.sizes) != list(first.sizes) or s.sizes != first.sizes:
            raise ValueError(f"sparsity_table: result {label!r} has other layers than the first; "
                             f"compare models of the same architecture")
    rows = [[name, size] + [s[name] for s in results.values()] for name, size in first.sizes.items()]
    rows.append(["total", sum(first.sizes.values())] + [s.total for s in results.values()])
    return table(rows, ["layer", "weights"] + list(results), floatfmt=".2%")


# --- callbacks for labkit.train.train ---------------------------------------------------------------

class RecordSparsity(Callback):
    """Records ``record[key]`` (default ``'sparsity'``), the total sparsity of the prunable layers
    (``layers``, default all) at the end of every epoch: ``sparsity(net).total``, one host sync per
    epoch. Another ``key`` records beside a schedule's own ``'sparsity'``, e.g. the sparsity of the
    quantized layers alone in Lab 3 (e) (``layers=[n for n, _ in quant.quantizable_layers(net)]``).

    For fine-tuning a pruned model (Lab 2 (c)): the masks hold the zeros on their own (they are
    parametrizations); this callback shows that they did. With ``require_masks=True`` (default)
    it raises at the start of training when the model holds no mask, i.e. when the pruning step
    was forgotten or done with ``hold=False`` and nothing would keep the zeros zero.
    """

    def __init__(self, *, layers=None, require_masks: bool = True, key: str = "sparsity"):
        if not isinstance(key, str) or not key:
            raise ValueError(f"key must be a non-empty str (the record's key), got {key!r}")
        self.layers, self.require_masks, self.key = layers, checks.flag("require_masks", require_masks), key

    def measure(self, net) -> float:
        """The one place sparsity is measured for the records."""
        return sparsity(net, layers=self.layers).total

    def on_train_begin(self, net, optimizer):
        if self.require_masks and not masks(net):
            raise ValueError(f"{type(self).__name__}: the model holds no pruning mask, so its zeros "
                             f"would not stay zero; prune it first with prune_by_percentage(net, q) "
                             f"(hold=True), or pass require_masks=False to record the sparsity anyway")

    def on_epoch_end(self, epoch, net, record):
        record[self.key] = self.measure(net)


class IterativePruning(RecordSparsity):
    """Prune on a schedule (Lab 2 (d), (e)): before epoch e = 1..steps (``epoch`` = e - 1 counts
    from 0) prune to q_e = target * e / steps, per layer (scope='layer') or with one global
    threshold (scope='global').

    Steps e < steps zero the pruned weights but hold nothing: the optimizer may regrow them.
    Step e = steps reaches the target and holds the mask from then on (the optimizer's momentum
    at the pruned positions is cleared, so the stored weights stay zero too).

    Records per epoch: ``sparsity_start`` (total sparsity right after this epoch's pruning step,
    or at its start when there is none), ``sparsity`` (at the end of the epoch: below q_e before
    the last step, as weights regrow), and ``eligible`` = False until the target is reached, so
    that the best accuracy counts only epochs at the final sparsity.

    The schedule's masks: after each step, ``keep`` is {layer: bool keep mask (True = kept)} that
    the step decided (also for the steps that hold nothing), and each pruned layer's parametrizations
    that follow a schedule get it (``labkit.layers.hand_schedule_mask``): a quantizer with
    ``zero="schedule"`` (``labkit.quant``) then quantizes the pruned positions to exactly 0 until
    the next step, however the float weights regrow there. ``keep`` is empty before the first step
    (and in a run resumed after the steps: the quantizers' own copies come with the checkpoint).
    """

    def __init__(self, target: float = 0.8, steps: int = 10, scope: str = "layer", layers=None, *,
                 schedule=None, rule=None, threshold=None, mask_fn=None):
        self.target = _check_q(target)
        steps = checks.integer("steps", steps, minimum=1)
        checks.one_of("scope", scope, ("layer", "global"))
        super().__init__(layers=layers, require_masks=False)  # the masks come with the last step
        self.steps, self.scope = steps, scope
        self.schedule = _callable("schedule", schedule)
        self.student = {"mask_fn": _callable("mask_fn", mask_fn)}   # a student's functions, or labkit's
        if scope == "layer":
            self.student["rule"] = _callable("rule", rule)
        else:
            self.student["threshold"] = _callable("threshold", threshold)
        self._start = None
        self.keep: dict[str, torch.Tensor] = {}

    def q(self, epoch: int) -> float | None:
        """The fraction pruned before `epoch` (from 0), or None when there is no step then:
        ``schedule(epoch + 1, steps, target)``, default `linear_schedule`."""
        if epoch >= self.steps:
            return None
        if self.schedule is None:
            return linear_schedule(epoch + 1, self.steps, self.target)
        q = _one_number(self.schedule(epoch + 1, self.steps, self.target), "schedule(e, steps, target)")
        return checks.fraction(f"schedule({epoch + 1}, {self.steps}, {self.target:g})", q,
                               hint=" (a fraction of the weights, 0.8 prunes 80 %)")

    def on_epoch_begin(self, epoch, net, optimizer):
        q = self.q(epoch)
        if q is not None:
            hold = epoch + 1 == self.steps
            prune = prune_by_percentage if self.scope == "layer" else global_prune_by_percentage
            pairs = select(net, self.layers, what="prune")
            applied = prune(net, q, hold=hold, optimizer=optimizer if hold else None, layers=pairs, **self.student)
            self.keep = applied
            for name, module in pairs:
                hand_schedule_mask(module, applied[name])
        self._start = self.measure(net)

    def on_epoch_end(self, epoch, net, record):
        super().on_epoch_end(epoch, net, record)
        record["sparsity_start"] = self._start
        reached = epoch + 1 >= self.steps
        record["eligible"] = record.get("eligible", True) and reached


def zero_gradient_weights(net: nn.Module, split: Split, *, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """{layer name: bool tensor of its weight's shape}: True where the weight's gradient of the
    cross-entropy is exactly zero on every batch of ``split`` (training mode, no augmentation).

    Such weights read an input channel that is always zero (after its ReLU) or feed an output that
    no gradient reaches. Once zeroed they stay zero under SGD, unless momentum built up earlier
    (weight decay on their old value) moves them: this is what Lab 2 (d)'s early pruning steps
    leave exactly zero. Computed on a copy of ``net``, which is not changed (batch-norm statistics
    included)."""
    if not isinstance(split, Split) or len(split) == 0:
        raise ValueError("zero_gradient_weights needs a non-empty labkit.data.Split (e.g. data.train)")
    probe = copy.deepcopy(net).train()
    device = next(probe.parameters()).device
    pairs = select(probe)
    seen = {name: torch.zeros_like(original(m), dtype=torch.bool) for name, m in pairs}   # a gradient was non-zero
    for X, y in batches(split.to(device), batch_size):
        probe.zero_grad(set_to_none=False)
        nn.functional.cross_entropy(probe(X), y).backward()
        for name, m in pairs:
            seen[name] |= original(m).grad != 0
    return {name: ~s for name, s in seen.items()}
