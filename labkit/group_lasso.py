"""Lab 5 (a), (b): L1 and Group Lasso training of ResNet-20, by the subgradient and by the proximal step.

(a) L1. The penalty lam ||W||_1 on the prunable weights (every Conv2d and Linear weight, Lab 2's
268 336), trained two ways, as Lab 1 (d) and (e) did on a linear model:

    subgradient   g <- g + lam sign(W)                     before every optimizer step (sign(0) = 0)
    proximal      W <- S_{lr lam}(W) = sign(W) max(|W| - lr lam, 0)    after every optimizer step

The proximal step gives exact zeros (every |w| <= lr lam lands on 0); the subgradient only makes
weights oscillate around 0, so a final magnitude threshold is still needed (concept 4). `near_zero`
counts both: exact zeros and weights below small magnitudes, per layer.

(b) Group Lasso (Yuan & Lin 2006; Wen et al. 2016) on the inner channels of every residual block:
group k of a block is the one channel between its two convs,

    w_g = ( conv1.weight[k],        the filter that computes channel k     (C_in * 3 * 3 weights)
            bn1.weight[k], bn1.bias[k],   its BatchNorm scale and shift    (2)
            conv2.weight[:, k] )    every filter's input slice reading it  (C_out * 3 * 3 weights)

so |g| = 9 C_in + 2 + 9 C_out: 290 in stage 1, 434 / 578 in stage 2, 866 / 1154 in stage 3. All
three parts count: a zero group is a channel that contributes exactly nothing (bn1's output is
gamma (x - mu) / sigma + beta = 0 when gamma = beta = 0, whatever x), so it can be removed
(``labkit.structured.remove_zero_channels``); with only the convs in the group, bn1's shift would
stay and the channel would feed a constant relu(beta) into conv2. The batch-norm running statistics
are buffers, not weights: they are neither penalised nor counted. The option-A shortcuts carry no
weights, so the blocks' outputs keep their widths.

    penalty        R(W) = lam sum_g sqrt(|g|) ||w_g||_2
    subgradient    g_g <- g_g + lam sqrt(|g|) w_g / ||w_g||_2     (0 for a zero group)
    proximal       w_g <- max(0, 1 - lr lam sqrt(|g|) / ||w_g||_2) w_g    (block soft thresholding)

The proximal step is the exact minimiser of 1/2 ||v - w_g||^2 + t ||v||_2 with t = lr lam sqrt(|g|):
the whole group becomes exactly zero when ||w_g||_2 <= t, else it shrinks towards 0 by t along its
own direction. The sqrt(|g|) weighs groups of different sizes fairly (a group of n weights of size
s has norm s sqrt(n)). Why: the minimiser lies along w_g's direction (any other component adds to
the distance and not to the penalty), so the problem is one-dimensional in r = ||v||: minimise
1/2 (r - ||w_g||)^2 + t r over r >= 0, whose solution is max(0, ||w_g|| - t).

With SGD's momentum (the course's 0.875) the proximal step after each optimizer step is proximal SGD
as Distiller and most implementations run it, not the exact proximal gradient method: the momentum
buffer may move a zeroed group off zero at the next step, and the next proximal step zeroes it again
if it is still small. The weights the step acts on are the stored Parameters (``layers.original``):
a pruning mask on a layer is kept (masked entries stay zero).

Callbacks for ``labkit.train.train``: the proximal steps run in ``on_step_end`` with the learning rate
the optimizer used for that step (read from its param group, so a learning-rate schedule is
followed); the subgradients are added by a step pre-hook on the optimizer (registered in
``on_train_begin``, removed in ``on_train_end``), so they are added to the unscaled gradients (after
an fp16 gradient scaler's unscale) right before the update, and weight decay comes on top as usual.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from . import checks
from .layers import original, parametrizations, select
from .structured import blocks
from .tables import table
from .train import Callback

__all__ = ["block_soft_threshold", "BlockGroups", "groups", "group_norms", "penalty", "prox_step", "subgradient", "zero_groups",
           "ProximalGroupLasso", "GroupLassoSubgradient",
           "l1_prox_step", "l1_subgradient", "L1Proximal", "L1Subgradient", "near_zero", "near_zero_table"]


def _lam(lam) -> float:
    return checks.number("lam", lam, minimum=0)


def _lr(lr) -> float:
    return checks.number("lr", lr, minimum=0)


# --- (b) the groups ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlockGroups:
    """The inner-channel groups of one residual block: group k is ``conv1[k]``, ``bn_weight[k]``,
    ``bn_bias[k]`` and ``conv2[:, k]``. The tensors are the stored Parameters (``layers.original``:
    the same objects an optimizer updates, before any mask or quantizer)."""

    name: str                 # the block, e.g. 'stage2.0'
    conv1: torch.Tensor       # (inner, C_in, 3, 3): group k owns row k
    bn_weight: torch.Tensor   # (inner,)
    bn_bias: torch.Tensor     # (inner,)
    conv2: torch.Tensor       # (C_out, inner, 3, 3): group k owns column k

    @property
    def count(self) -> int:
        """Groups in the block: its inner channels."""
        return self.conv1.shape[0]

    @property
    def size(self) -> int:
        """|g|, the weights of one group: 9 C_in + 2 + 9 C_out (the same for every group of the block)."""
        return self.conv1[0].numel() + 2 + self.conv2[:, 0].numel()

    @property
    def sqrt_size(self) -> float:
        """sqrt(|g|), the weight of each group's norm in the penalty."""
        return math.sqrt(self.size)

    def vectors(self) -> torch.Tensor:
        """(inner, |g|): row k is group k's weights, conv1[k], bn_weight[k], bn_bias[k], conv2[:, k]."""
        return torch.cat([self.conv1.flatten(1), self.bn_weight[:, None], self.bn_bias[:, None],
                          self.conv2.transpose(0, 1).flatten(1)], dim=1)

    def norms(self) -> torch.Tensor:
        """(inner,) ||w_g||_2 of every group (differentiable; the gradient at a zero group is 0, the
        subgradient of minimal norm, not sqrt's NaN)."""
        return torch.linalg.vector_norm(self.vectors(), dim=1)

    def scale_(self, factor: torch.Tensor) -> None:
        """In place, no grad: w_g <- factor[g] * w_g for every group (factor of shape (inner,))."""
        with torch.no_grad():
            self.conv1.mul_(factor.view(-1, 1, 1, 1))
            self.bn_weight.mul_(factor)
            self.bn_bias.mul_(factor)
            self.conv2.mul_(factor.view(1, -1, 1, 1))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.conv1, self.bn_weight, self.bn_bias, self.conv2


def groups(net) -> list[BlockGroups]:
    """The Group Lasso groups of a ``labkit.models.ResNet``, one `BlockGroups` per residual block in
    model order (9 blocks, 16 + 16 + 16 + 32 + ... + 64 = 336 groups for ResNet-20)."""
    return [BlockGroups(name, original(b.conv1), b.bn1.weight, b.bn1.bias, original(b.conv2))
            for name, b in blocks(net)]


def group_norms(net) -> dict[str, torch.Tensor]:
    """{block name: (inner,) tensor of the groups' L2 norms ||w_g||_2}, detached."""
    with torch.no_grad():
        return {g.name: g.norms() for g in groups(net)}


def penalty(net, lam: float) -> torch.Tensor:
    """The Group Lasso penalty lam * sum_g sqrt(|g|) ||w_g||_2 over every block's inner channels, a
    differentiable scalar tensor: added to the loss, autograd gives the subgradient of `subgradient`
    (0 at a zero group)."""
    lam = _lam(lam)
    return lam * sum(g.sqrt_size * g.norms().sum() for g in groups(net))


def _block_factor(norms: torch.Tensor, t: float) -> torch.Tensor:
    """max(0, 1 - t / ||w_g||) per group, exactly 0 where ||w_g|| <= t; never divides by zero."""
    safe = norms.clamp_min(torch.finfo(norms.dtype).tiny)
    return torch.where(norms > t, 1.0 - t / safe, torch.zeros_like(norms))


def block_soft_threshold(v: torch.Tensor, t: float) -> torch.Tensor:
    """The proximal operator of t ||.||_2 on one group: argmin_x 1/2 ||x - v||^2 + t ||x||_2, t >= 0,

        prox(v) = max(0, 1 - t / ||v||_2) v      (0 when ||v||_2 <= t; no division by a zero norm).

    The whole vector shrinks along its own direction by t, or becomes exactly zero; unlike the
    element-wise soft threshold, a small entry of a large group is not zeroed."""
    t = checks.number("t", t, minimum=0)
    v = torch.as_tensor(v)
    return _block_factor(v.norm(), t) * v


def prox_step(net, lr: float, lam: float) -> None:
    """In place: block soft thresholding of every group, the proximal operator of lr * R,

        w_g <- max(0, 1 - lr lam sqrt(|g|) / ||w_g||_2) w_g,

    i.e. argmin_v 1/2 ||v - w_g||^2 + lr lam sqrt(|g|) ||v||_2. A group with ||w_g||_2 <= lr lam
    sqrt(|g|) (a zero group included) becomes exactly zero; no norm is divided by when zero."""
    lr, lam = _lr(lr), _lam(lam)
    for g in groups(net):
        with torch.no_grad():
            g.scale_(_block_factor(g.norms(), lr * lam * g.sqrt_size))


def subgradient(net, lam: float) -> None:
    """In place: add lam sqrt(|g|) w_g / ||w_g||_2 to the gradients (``.grad``, created as zeros where
    None) of every group's tensors; a zero group gets 0 (the subgradient of minimal norm, which sits
    still at 0: it is never what makes a group exactly zero)."""
    lam = _lam(lam)
    with torch.no_grad():
        for g in groups(net):
            norms = g.norms()
            coef = torch.where(norms > 0, lam * g.sqrt_size / norms.clamp_min(torch.finfo(norms.dtype).tiny),
                               torch.zeros_like(norms))                   # (inner,)
            shapes = ((-1, 1, 1, 1), (-1,), (-1,), (1, -1, 1, 1))
            for t, shape in zip(g.tensors(), shapes):
                if t.grad is None:
                    t.grad = torch.zeros_like(t)
                t.grad.add_(coef.view(shape) * t)


def zero_groups(net) -> dict[str, int]:
    """{block name: how many of its groups are exactly zero (every weight of conv1[k], bn1's scale
    and shift, conv2[:, k] equal to 0)}. One host sync."""
    gs = groups(net)
    with torch.no_grad():
        counts = torch.stack([(g.norms() == 0).sum() for g in gs]).tolist()
    return {g.name: int(c) for g, c in zip(gs, counts)}


# --- callbacks --------------------------------------------------------------------------------------

def _param_lr(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> float:
    """The learning rate of the optimizer's param group holding ``param``."""
    for group in optimizer.param_groups:
        if any(p is param for p in group["params"]):
            return float(group["lr"])
    raise ValueError("the optimizer does not update this model's weights (no param group holds them); "
                     "build it from net.parameters()")


class _OnOptimizer(Callback):
    """Holds the optimizer given to on_train_begin (the one ``train`` steps)."""

    optimizer = None

    def on_train_begin(self, net, optimizer):
        self.optimizer = optimizer

    def _lr(self, param) -> float:
        if self.optimizer is None:
            raise ValueError(f"{type(self).__name__} is a callback of labkit.train.train; its on_train_begin "
                             f"was not called, so it has no optimizer to read the learning rate from")
        return _param_lr(self.optimizer, param)


class _PreStepHook(Callback):
    """Runs ``self.before_step(net)`` right before every optimizer step (a step pre-hook)."""

    handle = None

    def on_train_begin(self, net, optimizer):
        if self.handle is not None:
            self.handle.remove()
        self.handle = optimizer.register_step_pre_hook(lambda *_: self.before_step(net))

    def on_train_end(self, net):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def before_step(self, net) -> None: ...


class ProximalGroupLasso(_OnOptimizer):
    """Proximal Group Lasso training: after every optimizer step, `prox_step` with the step's learning
    rate (conv1's param group) and ``lam``. Records ``record['zero_groups']``, the exactly-zero groups
    of the whole model, at the end of every epoch."""

    def __init__(self, lam: float):
        self.lam = _lam(lam)

    def on_step_end(self, net):
        prox_step(net, self._lr(groups(net)[0].conv1), self.lam)

    def on_epoch_end(self, epoch, net, record):
        record["zero_groups"] = sum(zero_groups(net).values())


class GroupLassoSubgradient(_PreStepHook):
    """Subgradient Group Lasso training: before every optimizer step, `subgradient` adds
    lam sqrt(|g|) w_g / ||w_g||_2 to the gradients. Records ``record['zero_groups']`` (it stays 0
    unless a group started at zero: the contrast with `ProximalGroupLasso`)."""

    def __init__(self, lam: float):
        self.lam = _lam(lam)

    def before_step(self, net):
        subgradient(net, self.lam)

    def on_epoch_end(self, epoch, net, record):
        record["zero_groups"] = sum(zero_groups(net).values())


# --- (a) L1 -----------------------------------------------------------------------------------------

def _mask_of(module) -> torch.Tensor | None:
    """The layer's pruning mask (bool, True = kept), found as the ``mask`` buffer of the first of its
    parametrizations that has one (labkit.prune.Mask, always first), or None."""
    for p in parametrizations(module):
        mask = getattr(p, "mask", None)
        if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
            return mask
    return None


def l1_prox_step(net, lr: float, lam: float, *, layers=None) -> None:
    """In place: soft thresholding of the stored weight of every prunable layer (``layers``, default
    every Conv2d and Linear), W <- sign(W) max(|W| - lr lam, 0), the proximal operator of
    lr lam ||W||_1 (``labkit.sparse_linear.soft_threshold`` in torch); then W <- W * mask where the
    layer holds a pruning mask, so pruned weights stay exactly zero."""
    t = _lr(lr) * _lam(lam)
    with torch.no_grad():
        for _, m in select(net, layers, what="threshold"):
            W = original(m)
            W.copy_(W.sign() * (W.abs() - t).clamp_min(0))
            mask = _mask_of(m)
            if mask is not None:
                W.mul_(mask)


def l1_subgradient(net, lam: float, *, layers=None) -> None:
    """In place: add lam sign(W) (sign(0) = 0, and 0 where a pruning mask removed the weight) to the
    gradient of the stored weight of every prunable layer (``layers``, default every Conv2d and Linear)."""
    lam = _lam(lam)
    with torch.no_grad():
        for _, m in select(net, layers, what="penalise"):
            W = original(m)
            g = lam * W.sign()
            mask = _mask_of(m)
            if mask is not None:
                g.mul_(mask)
            if W.grad is None:
                W.grad = g
            else:
                W.grad.add_(g)


class L1Proximal(_OnOptimizer):
    """Proximal L1 training (Lab 5 (a)): after every optimizer step, `l1_prox_step` by lr * lam, with
    the learning rate of the step (the first prunable layer's param group)."""

    def __init__(self, lam: float, *, layers=None):
        self.lam, self.layers = _lam(lam), layers

    def on_step_end(self, net):
        first = original(select(net, self.layers, what="threshold")[0][1])
        l1_prox_step(net, self._lr(first), self.lam, layers=self.layers)


class L1Subgradient(_PreStepHook):
    """Subgradient L1 training (Lab 5 (a)): before every optimizer step, `l1_subgradient` adds
    lam sign(W) to the gradients of the prunable weights."""

    def __init__(self, lam: float, *, layers=None):
        self.lam, self.layers = _lam(lam), layers

    def before_step(self, net):
        l1_subgradient(net, self.lam, layers=self.layers)


def near_zero(net: nn.Module, thresholds=(1e-4, 1e-3, 1e-2), *, layers=None) -> dict[str, dict]:
    """Per prunable layer (``layers``, default every Conv2d and Linear) and in total (key 'total'):
    {'weights': n, 'zeros': exact zeros, t: count of |w| < t for every t in ``thresholds``}, of the
    effective weights (``module.weight``: what forward uses). Exact zeros are counted in every t's
    count. One host sync."""
    thresholds = tuple(checks.number("thresholds", t, positive=True) for t in thresholds)
    pairs = select(net, layers, what="measure")
    with torch.no_grad():
        device = pairs[0][1].weight.device
        counts = torch.stack([torch.stack([(m.weight == 0).sum()] + [(m.weight.abs() < t).sum() for t in thresholds])
                              .to(device) for _, m in pairs]).tolist()
    out = {}
    for (name, m), row in zip(pairs, counts):
        out[name] = {"weights": m.weight.numel(), "zeros": int(row[0]),
                     **{t: int(c) for t, c in zip(thresholds, row[1:])}}
    out["total"] = {k: sum(r[k] for r in out.values()) for k in out[pairs[0][0]]}
    return out


def near_zero_table(counts: dict[str, dict]) -> str:
    """Text table of `near_zero`'s result: per layer the weights, then the share of exact zeros and of
    |w| below each threshold."""
    keys = [k for k in next(iter(counts.values())) if k not in ("weights",)]
    rows = [[name, r["weights"]] + [r[k] / r["weights"] for k in keys] for name, r in counts.items()]
    return table(rows, ["layer", "weights"] + ["= 0" if k == "zeros" else f"|w| < {k:g}" for k in keys],
                 floatfmt=".2%")
